package sandbox

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flashgrab/flashgrab/pay/wechat"
)

// The in-app side of the WeChat Pay simulator: what the WeChat SDK (APP) and
// wx.requestPayment (mini program, JSAPI) send when the payer confirms, and
// the mini program login (wx.login's code, exchanged by code2Session).

// loginCodeTTL is how long a login code is good for, as WeChat's (5 minutes).
const loginCodeTTL = 5 * time.Minute

// loginCode is a code wx.login handed out: whose it is and until when.
type loginCode struct {
	openID string
	until  time.Time
}

// LoginCode issues a fresh mini program login code for the user openID, as
// wx.login does inside the mini program. It is good for one code2Session
// within 5 minutes.
func (s *WeChat) LoginCode(openID string) string {
	code := randomString(32)
	s.mu.Lock()
	s.codes[code] = loginCode{openID: openID, until: s.now().Add(loginCodeTTL)}
	s.mu.Unlock()
	return code
}

// wxSNSError is the Mini Program server API's error body.
type wxSNSError struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// serveCode2Session answers GET /sns/jscode2session as WeChat does: the app
// id and secret must match, and a code works once, within its 5 minutes.
// Errors are 200 with errcode, as WeChat answers them.
func (s *WeChat) serveCode2Session(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	answer := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method != http.MethodGet:
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	case q.Get("appid") != s.cfg.AppID:
		answer(wxSNSError{40013, "invalid appid"})
		return
	case s.cfg.AppSecret == "" || q.Get("secret") != s.cfg.AppSecret:
		answer(wxSNSError{40125, "invalid appsecret"})
		return
	case q.Get("grant_type") != "authorization_code":
		answer(wxSNSError{40002, "invalid grant_type"})
		return
	}
	s.mu.Lock()
	c, ok := s.codes[q.Get("js_code")]
	used := s.usedCodes[q.Get("js_code")]
	if ok {
		delete(s.codes, q.Get("js_code"))
		s.usedCodes[q.Get("js_code")] = true
	}
	s.mu.Unlock()
	switch {
	case used:
		answer(wxSNSError{40163, "code been used"})
	case !ok || s.now().After(c.until):
		answer(wxSNSError{40029, "invalid code"})
	default:
		answer(struct {
			OpenID     string `json:"openid"`
			SessionKey string `json:"session_key"`
		}{c.openID, base64.StdEncoding.EncodeToString([]byte(randomString(16)))})
	}
}

// PayApp pays an APP trade as the WeChat SDK does with the PayReq fields the
// merchant's server signed: appid and partnerid must be this merchant's,
// package Sign=WXPay, the timestamp within 5 minutes, the prepay id an
// unpaid APP trade's, and sign the merchant key's over
// appid\ntimestamp\nnoncestr\nprepayid\n. Then it pays as Pay does (same
// notify path, same options) and returns the trade's out_trade_no.
func (s *WeChat) PayApp(p wechat.AppPayParams, opts ...PayOption) (string, error) {
	switch {
	case p.AppID != s.cfg.AppID || p.PartnerID != s.cfg.MchID:
		return "", fmt.Errorf("sandbox wechat: app pay: %w: appid %q / partnerid %q are not this merchant's", errClientParams, p.AppID, p.PartnerID)
	case p.Package != wechat.PackageSignWXPay:
		return "", fmt.Errorf("sandbox wechat: app pay: %w: package %q, want %s", errClientParams, p.Package, wechat.PackageSignWXPay)
	}
	if err := s.checkClientSign(p.Timestamp, p.NonceStr, p.Sign, p.AppID, p.Timestamp, p.NonceStr, p.PrepayID); err != nil {
		return "", fmt.Errorf("sandbox wechat: app pay: %w: %w", errClientParams, err)
	}
	no, err := s.tradeOfPrepay(p.PrepayID, wechat.App, "")
	if err != nil {
		return "", fmt.Errorf("sandbox wechat: app pay: %w", err)
	}
	return no, s.Pay(no, opts...)
}

// PayJSAPI pays a JSAPI trade as wx.requestPayment does inside the mini
// program of the user openID: appId must be this app, signType RSA, package
// prepay_id=… of an unpaid JSAPI trade opened for this very openid, and
// paySign the merchant key's over appId\ntimeStamp\nnonceStr\npackage\n.
func (s *WeChat) PayJSAPI(openID string, p wechat.JSAPIPayParams, opts ...PayOption) (string, error) {
	prepay, ok := strings.CutPrefix(p.Package, "prepay_id=")
	switch {
	case p.AppID != s.cfg.AppID:
		return "", fmt.Errorf("sandbox wechat: jsapi pay: %w: appId %q is not this app", errClientParams, p.AppID)
	case p.SignType != "RSA":
		return "", fmt.Errorf("sandbox wechat: jsapi pay: %w: signType %q, want RSA", errClientParams, p.SignType)
	case !ok:
		return "", fmt.Errorf("sandbox wechat: jsapi pay: %w: package %q is not prepay_id=…", errClientParams, p.Package)
	}
	if err := s.checkClientSign(p.TimeStamp, p.NonceStr, p.PaySign, p.AppID, p.TimeStamp, p.NonceStr, p.Package); err != nil {
		return "", fmt.Errorf("sandbox wechat: jsapi pay: %w: %w", errClientParams, err)
	}
	no, err := s.tradeOfPrepay(prepay, wechat.JSAPI, openID)
	if err != nil {
		return "", fmt.Errorf("sandbox wechat: jsapi pay: %w", err)
	}
	return no, s.Pay(no, opts...)
}

// checkClientSign verifies a client-side signature: a fresh Unix-seconds
// timestamp, a nonce, and SHA256withRSA by one of the merchant's keys over
// the fields, each followed by a newline.
func (s *WeChat) checkClientSign(timestamp, nonce, sign string, fields ...string) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q is not unix seconds", timestamp)
	}
	if now, limit := s.now().Unix(), int64(wxMaxSkew/time.Second); ts <= now-limit || ts >= now+limit {
		return fmt.Errorf("timestamp %d is %ds away from now, over 5 minutes", ts, now-ts)
	}
	if nonce == "" {
		return errors.New("nonce is empty")
	}
	sig, err := base64.StdEncoding.DecodeString(sign)
	if err != nil {
		return errors.New("signature is not base64")
	}
	sum := sha256.Sum256([]byte(strings.Join(fields, "\n") + "\n"))
	for _, pub := range s.cfg.MerchantKeys {
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil {
			return nil
		}
	}
	return errors.New("signature does not verify with the merchant's key")
}

// tradeOfPrepay finds the out_trade_no of the trade of kind with prepayID;
// a JSAPI trade must also have been opened for openID.
func (s *WeChat) tradeOfPrepay(prepayID string, kind wechat.Kind, openID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for no, tr := range s.trades {
		if tr.prepay.PrepayID != prepayID || prepayID == "" {
			continue
		}
		if tr.kind != kind {
			return "", fmt.Errorf("%w: prepay_id %s is of a %s trade, not %s", errClientParams, prepayID, tr.kind, kind)
		}
		if kind == wechat.JSAPI && tr.openID != openID {
			return "", fmt.Errorf("%w: prepay_id %s was opened for another payer", errClientParams, prepayID)
		}
		return no, nil
	}
	return "", fmt.Errorf("prepay_id %q: %w", prepayID, errNoTrade)
}

// serveSDK answers the client side over HTTP, for the demo and for scripts:
//
//	POST /sdk/login?openid=…   {"code": …}: wx.login for that user
//	POST /sdk/app              PayReq's fields as JSON (wechat.AppPayParams): pays
//	POST /sdk/jsapi?openid=…   wx.requestPayment's fields as JSON (wechat.JSAPIPayParams), by that user: pays
//	POST /sdk/subscribe?openid=…&template_id=…   wx.requestSubscribeMessage accepted by that user: one message allowed
func (s *WeChat) serveSDK(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	openID := r.URL.Query().Get("openid")
	var (
		no  string
		err error
	)
	switch r.URL.Path {
	case "/sdk/login":
		if openID == "" {
			http.Error(w, "openid is required: the user who logs in", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"code": s.LoginCode(openID)})
		return
	case "/sdk/subscribe":
		if openID == "" || r.URL.Query().Get("template_id") == "" {
			http.Error(w, "openid and template_id are required", http.StatusBadRequest)
			return
		}
		s.Subscribe(openID, r.URL.Query().Get("template_id"))
		w.WriteHeader(http.StatusNoContent)
		return
	case "/sdk/app":
		var p wechat.AppPayParams
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, "body is not the PayReq fields as JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		no, err = s.PayApp(p)
	case "/sdk/jsapi":
		var p wechat.JSAPIPayParams
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, "body is not wx.requestPayment's fields as JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		no, err = s.PayJSAPI(openID, p)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		writeSDKError(w, err)
		return
	}
	writePaid(w, no)
}

// errClientParams marks SDK parameters the provider refuses (wrong app,
// bad signature, stale, someone else's trade), as opposed to a trade that
// cannot be paid.
var errClientParams = errors.New("payment parameters refused")

// writeSDKError answers a refused SDK payment: 400 for parameters that do
// not verify, else as the pay endpoint (404 unknown trade, 409 not payable).
func writeSDKError(w http.ResponseWriter, err error) {
	if errors.Is(err, errClientParams) {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writePayError(w, err)
}
