package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultLoginHost is the production host of the Mini Program server API
// (code2Session), which is not WeChat Pay's host.
const DefaultLoginHost = "https://api.weixin.qq.com"

// ErrLoginCode is a code2Session refusal of the code itself (invalid, used,
// expired, or issued for another app): the mini program must call wx.login
// again. Other failures are the service's or the configuration's.
var ErrLoginCode = errors.New("wechat login: code refused")

// MiniProgramConfig is what the Mini Program server API (the login, and the
// subscribe messages of Messenger) needs: the app id the payer's mini program
// runs under (the same one JSAPI trades are opened for) and its app secret.
type MiniProgramConfig struct {
	AppID     string
	AppSecret string // a secret: sent to WeChat in the query, never logged
	// Host defaults to DefaultLoginHost; it may carry a path prefix, e.g.
	// the sandbox's "http://127.0.0.1:8081/wechat".
	Host       string
	HTTPClient *http.Client
}

// Login exchanges mini program login codes for the payer's openid
// (code2Session). It is safe for concurrent use.
type Login struct {
	cfg  MiniProgramConfig
	host string
	hc   *http.Client
}

// NewLogin validates cfg and returns a Login.
func NewLogin(cfg MiniProgramConfig) (*Login, error) {
	if cfg.AppID == "" || cfg.AppSecret == "" {
		return nil, errors.New("wechat login: AppID and AppSecret are required")
	}
	host := strings.TrimRight(cfg.Host, "/")
	if host == "" {
		host = DefaultLoginHost
	}
	if u, err := url.Parse(host); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("wechat login: Host %q is not an http(s) URL without query", cfg.Host)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Login{cfg: cfg, host: host, hc: hc}, nil
}

// Session is who a login code belongs to. The session_key WeChat answers
// with is left out on purpose: flashgrab decrypts no user data with it, and
// a secret that is never kept cannot leak.
type Session struct {
	OpenID  string // the user under this app
	UnionID string // across the developer's apps; often empty
}

// maxCodeLen bounds a login code before it is sent anywhere; real ones are 32
// characters.
const maxCodeLen = 128

// Code2Session exchanges a login code from wx.login for the user's openid:
// GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code.
// A code WeChat refuses wraps ErrLoginCode. No error carries the request URL,
// which holds the app secret.
func (l *Login) Code2Session(ctx context.Context, code string) (Session, error) {
	if code == "" || len(code) > maxCodeLen {
		return Session{}, fmt.Errorf("%w: code must be 1-%d characters", ErrLoginCode, maxCodeLen)
	}
	q := url.Values{"appid": {l.cfg.AppID}, "secret": {l.cfg.AppSecret}, "js_code": {code}, "grant_type": {"authorization_code"}}
	raw, err := call(ctx, l.hc, http.MethodGet, l.host, "/sns/jscode2session?"+q.Encode(), nil)
	if err != nil {
		return Session{}, fmt.Errorf("wechat login: code2Session: %w", err)
	}
	var out struct {
		OpenID  string `json:"openid"`
		UnionID string `json:"unionid"`
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return Session{}, fmt.Errorf("wechat login: code2Session: %w: answer is not JSON", ErrMalformed)
	}
	switch out.ErrCode {
	case 0:
	case 40029, 40163, 40226: // invalid code, code been used, high-risk user
		return Session{}, fmt.Errorf("%w: errcode %d %s", ErrLoginCode, out.ErrCode, out.ErrMsg)
	default:
		return Session{}, fmt.Errorf("wechat login: code2Session: errcode %d %s", out.ErrCode, out.ErrMsg)
	}
	if out.OpenID == "" {
		return Session{}, fmt.Errorf("wechat login: code2Session: %w: answer lacks openid", ErrMalformed)
	}
	return Session{OpenID: out.OpenID, UnionID: out.UnionID}, nil
}
