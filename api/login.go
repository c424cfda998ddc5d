package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// PayerLogin exchanges a WeChat mini program login code (from wx.login) for
// the user's openid: code2Session, which *wechat.Login calls with the app
// secret. A code WeChat refuses wraps wechat.ErrLoginCode.
type PayerLogin interface {
	Code2Session(ctx context.Context, code string) (wechat.Session, error)
}

type loginRequest struct {
	Code string `json:"code"`
}

type loginResponse struct {
	Channel string `json:"channel"`
	OpenID  string `json:"openid"`
}

// wechatLogin records who the caller is on WeChat, for the jsapi method:
// the openid code2Session gives for the caller's login code, kept in MySQL
// per user. The session_key WeChat also returns is never kept, logged or
// answered.
func (s *Server) wechatLogin(ctx *fasthttp.RequestCtx, _ params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	var req loginRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	if req.Code == "" {
		return flashgrab.Invalid("code", "is required: the code wx.login gave the mini program")
	}
	if s.WeChatLogin == nil || s.Payments == nil {
		return fmt.Errorf("wechat login: %w", settle.ErrNoChannel)
	}
	c, cancel := s.reqContext()
	defer cancel()
	sess, err := s.WeChatLogin.Code2Session(c, req.Code)
	if errors.Is(err, wechat.ErrLoginCode) {
		return &apiError{fasthttp.StatusBadRequest, "login_code_invalid", "WeChat refused the login code; call wx.login again"}
	}
	if err != nil {
		return fmt.Errorf("%w: %v", flashgrab.ErrUnavailable, err)
	}
	if err := s.Books.SetPayerID(c, p.UserID, pay.ChannelWeChat, sess.OpenID); err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, loginResponse{Channel: pay.ChannelWeChat, OpenID: sess.OpenID})
}
