// Package wechat is a thin WeChat Pay APIv3 client built on the standard
// library's crypto: WECHATPAY2-SHA256-RSA2048 request signing, verification of
// every response and notify over the raw body, and AEAD_AES_256_GCM notify
// decryption.
//
// Signed URL rule: the URL in the request signature is the request-target
// exactly as it goes on the wire, i.e. the path of Config.Host followed by the
// API path and query ("/wechat/v3/pay/transactions/native" when Host is
// "http://127.0.0.1:9000/wechat"). That is what a server behind any path
// prefix receives in its request line.
package wechat

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultHost is the production API host.
const DefaultHost = "https://api.mch.weixin.qq.com"

// Config is what a merchant needs to talk to WeChat Pay.
type Config struct {
	AppID     string // the app the payer pays in (Official Account, Mini Program, app)
	MchID     string // merchant id
	MchSerial string // serial of the merchant API certificate, sent as serial_no
	MchKey    *rsa.PrivateKey
	APIv3Key  string // exactly 32 ASCII bytes; decrypts notify resources
	// Verifiers are WeChat Pay's keys by Wechatpay-Serial: upper-case hex
	// platform-certificate serials and PUB_KEY_ID_… public-key ids. During a
	// switch both kinds are live; keep all of them.
	Verifiers map[string]*rsa.PublicKey
	// PlatformSerial is sent as Wechatpay-Serial on every request: in
	// public-key mode WeChat Pay signs its answer with the key it names.
	// Empty picks the PUB_KEY_ID_… serial among Verifiers (public-key mode is
	// the supported one: platform certificates are not downloaded from
	// /v3/certificates, so a new one must be added to Verifiers), else the
	// greatest serial.
	PlatformSerial string
	// Host defaults to DefaultHost; it may carry a path prefix, e.g. the
	// sandbox's "http://127.0.0.1:8080/wechat".
	Host       string
	NotifyURL  string // absolute http(s) URL without query, sent as notify_url
	HTTPClient *http.Client
	Now        func() time.Time // clock for signing and skew checks; default time.Now
}

// Client calls WeChat Pay APIv3. It is safe for concurrent use.
type Client struct {
	cfg       Config
	host      string
	serial    string // sent as Wechatpay-Serial
	verifiers map[string]*rsa.PublicKey
	apiV3Key  string
	hc        *http.Client
	now       func() time.Time
}

// New validates cfg and returns a Client. Verifiers is copied.
func New(cfg Config) (*Client, error) {
	var problems []string
	if cfg.AppID == "" {
		problems = append(problems, "AppID is empty")
	}
	if cfg.MchID == "" {
		problems = append(problems, "MchID is empty")
	}
	if cfg.MchSerial == "" {
		problems = append(problems, "MchSerial is empty")
	}
	if cfg.MchKey == nil {
		problems = append(problems, "MchKey is nil")
	} else if cfg.MchKey.N.BitLen() < 2048 {
		problems = append(problems, fmt.Sprintf("MchKey has %d bits, need at least 2048", cfg.MchKey.N.BitLen()))
	}
	if len(cfg.APIv3Key) != 32 {
		problems = append(problems, fmt.Sprintf("APIv3Key is %d bytes, need 32", len(cfg.APIv3Key)))
	}
	if len(cfg.Verifiers) == 0 {
		problems = append(problems, "Verifiers is empty: responses and notifies could not be verified")
	}
	verifiers := make(map[string]*rsa.PublicKey, len(cfg.Verifiers))
	for serial, k := range cfg.Verifiers {
		if serial == "" || k == nil {
			problems = append(problems, fmt.Sprintf("Verifiers[%q] is empty", serial))
			continue
		}
		verifiers[serial] = k
	}
	serial := cfg.PlatformSerial
	if serial == "" {
		for s := range verifiers {
			if (strings.HasPrefix(s, "PUB_KEY_ID_") && !strings.HasPrefix(serial, "PUB_KEY_ID_")) ||
				(strings.HasPrefix(s, "PUB_KEY_ID_") == strings.HasPrefix(serial, "PUB_KEY_ID_") && s > serial) {
				serial = s
			}
		}
	} else if verifiers[serial] == nil {
		problems = append(problems, fmt.Sprintf("PlatformSerial %q is not one of Verifiers", serial))
	}
	host := strings.TrimRight(cfg.Host, "/")
	if host == "" {
		host = DefaultHost
	}
	if u, err := url.Parse(host); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		problems = append(problems, fmt.Sprintf("Host %q is not an http(s) URL without query", cfg.Host))
	}
	if u, err := url.Parse(cfg.NotifyURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		// WeChat Pay does not sign a notify_url's query, so it must carry none.
		problems = append(problems, fmt.Sprintf("NotifyURL %q is not an absolute http(s) URL without query", cfg.NotifyURL))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("wechat: invalid config: %s", strings.Join(problems, "; "))
	}
	c := &Client{cfg: cfg, host: host, serial: serial, verifiers: verifiers, apiV3Key: cfg.APIv3Key, hc: cfg.HTTPClient, now: cfg.Now}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 10 * time.Second}
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.cfg.Verifiers = nil // the copy in c.verifiers is authoritative
	return c, nil
}

// Error is a non-2xx answer from WeChat Pay. Code and Message come from the
// body only when its signature verified; otherwise Code is empty and Message
// says why the body was not trusted.
type Error struct {
	Status  int
	Code    string // e.g. ORDER_NOT_EXIST, ORDERPAID, SIGN_ERROR, PARAM_ERROR
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("wechat: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// maxResponseBody bounds how much of a response is read.
const maxResponseBody = 1 << 20

// do sends one signed request and returns the verified body of a 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, reqBody any) (int, []byte, error) {
	var body []byte
	if reqBody != nil {
		b, err := json.Marshal(reqBody)
		if err != nil {
			return 0, nil, fmt.Errorf("wechat: %s %s: encode: %w", method, path, err)
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, method, c.host+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("wechat: %s %s: %w", method, path, err)
	}
	auth, err := authorization(c.cfg.MchID, c.cfg.MchSerial, c.cfg.MchKey, method, req.URL.RequestURI(), c.now(), body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set(HeaderSerial, c.serial)
	req.Header.Set("User-Agent", "flashgrab-wechatpay/1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("wechat: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("wechat: %s %s: read response: %w", method, path, err)
	}
	if len(raw) > maxResponseBody {
		return resp.StatusCode, nil, fmt.Errorf("wechat: %s %s: response over %d bytes", method, path, maxResponseBody)
	}
	verr := verifySigned(c.verifiers, c.now(), NotifyHeaderFrom(resp.Header.Get), raw)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Status: resp.StatusCode}
		if verr != nil {
			e.Message = "unverified error response: " + verr.Error()
			return e.Status, nil, e
		}
		var wire struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &wire) == nil {
			e.Code, e.Message = wire.Code, wire.Message
		}
		return e.Status, nil, e
	}
	if verr != nil {
		return resp.StatusCode, nil, fmt.Errorf("wechat: %s %s: response: %w", method, path, verr)
	}
	return resp.StatusCode, raw, nil
}

// Kind is the way the payer pays, which selects the prepay endpoint.
type Kind string

// The four prepay kinds.
const (
	Native Kind = "native" // QR code shown to the payer: CodeURL
	JSAPI  Kind = "jsapi"  // inside WeChat (Official Account / Mini Program): PrepayID; needs OpenID
	App    Kind = "app"    // merchant app through the WeChat SDK: PrepayID
	H5     Kind = "h5"     // mobile browser outside WeChat: H5URL; needs PayerIP
)

// PrepayRequest creates a trade. AmountCents is in fen.
type PrepayRequest struct {
	OutTradeNo  string
	Description string
	AmountCents int64
	OpenID      string    // JSAPI: the payer's openid under AppID
	PayerIP     string    // H5: the payer's client IP
	TimeExpire  time.Time // optional: the trade closes by itself after this
	Attach      string    // optional: echoed back by Query, up to 128 bytes
}

// PrepayResult carries the one field that fits the kind.
type PrepayResult struct {
	CodeURL  string // Native
	PrepayID string // JSAPI, App
	H5URL    string // H5
}

// outTradeNo: 6–32 of [0-9A-Za-z_-|*], WeChat Pay's rule; checking locally
// keeps such ids from being sent in a path.
var (
	outTradeNoRe  = regexp.MustCompile(`^[0-9A-Za-z_\-|*]{6,32}$`)
	outRefundNoRe = regexp.MustCompile(`^[0-9A-Za-z_\-|*@]{1,64}$`)
)

// cst is China Standard Time (Asia/Shanghai has had no DST since 1991); a
// fixed zone needs no tzdata on the host. RFC 3339 carries the offset, so
// the instant is exact whatever the zone.
var cst = time.FixedZone("CST", 8*3600)

type wireAmount struct {
	Total    int64  `json:"total"`
	Currency string `json:"currency"`
}

// Prepay creates a trade of the given kind and returns what the payer needs.
func (c *Client) Prepay(ctx context.Context, kind Kind, r PrepayRequest) (*PrepayResult, error) {
	if !outTradeNoRe.MatchString(r.OutTradeNo) {
		return nil, fmt.Errorf("wechat: prepay: out_trade_no %q must be 6-32 of [0-9A-Za-z_-|*]", r.OutTradeNo)
	}
	if r.Description == "" || utf8.RuneCountInString(r.Description) > 127 {
		return nil, fmt.Errorf("wechat: prepay %s: description must be 1-127 characters", r.OutTradeNo)
	}
	if r.AmountCents <= 0 {
		return nil, fmt.Errorf("wechat: prepay %s: amount %d fen must be positive", r.OutTradeNo, r.AmountCents)
	}
	if len(r.Attach) > 128 {
		return nil, fmt.Errorf("wechat: prepay %s: attach is %d bytes, max 128", r.OutTradeNo, len(r.Attach))
	}
	type payer struct {
		OpenID string `json:"openid"`
	}
	type h5Info struct {
		Type string `json:"type"`
	}
	type sceneInfo struct {
		PayerClientIP string  `json:"payer_client_ip"`
		H5Info        *h5Info `json:"h5_info,omitempty"`
	}
	body := struct {
		AppID       string     `json:"appid"`
		MchID       string     `json:"mchid"`
		Description string     `json:"description"`
		OutTradeNo  string     `json:"out_trade_no"`
		TimeExpire  string     `json:"time_expire,omitempty"`
		Attach      string     `json:"attach,omitempty"`
		NotifyURL   string     `json:"notify_url"`
		Amount      wireAmount `json:"amount"`
		Payer       *payer     `json:"payer,omitempty"`
		SceneInfo   *sceneInfo `json:"scene_info,omitempty"`
	}{
		AppID: c.cfg.AppID, MchID: c.cfg.MchID, Description: r.Description, OutTradeNo: r.OutTradeNo,
		Attach: r.Attach, NotifyURL: c.cfg.NotifyURL, Amount: wireAmount{Total: r.AmountCents, Currency: "CNY"},
	}
	if !r.TimeExpire.IsZero() {
		body.TimeExpire = r.TimeExpire.In(cst).Format(time.RFC3339)
	}
	switch kind {
	case Native, App:
	case JSAPI:
		if r.OpenID == "" {
			return nil, fmt.Errorf("wechat: prepay %s: jsapi needs the payer's OpenID", r.OutTradeNo)
		}
		body.Payer = &payer{OpenID: r.OpenID}
	case H5:
		if net.ParseIP(r.PayerIP) == nil {
			return nil, fmt.Errorf("wechat: prepay %s: h5 needs the payer's IP, got %q", r.OutTradeNo, r.PayerIP)
		}
		body.SceneInfo = &sceneInfo{PayerClientIP: r.PayerIP, H5Info: &h5Info{Type: "Wap"}}
	default:
		return nil, fmt.Errorf("wechat: prepay %s: unknown kind %q", r.OutTradeNo, kind)
	}
	_, raw, err := c.do(ctx, http.MethodPost, "/v3/pay/transactions/"+string(kind), body)
	if err != nil {
		return nil, err
	}
	var out struct {
		CodeURL  string `json:"code_url"`
		PrepayID string `json:"prepay_id"`
		H5URL    string `json:"h5_url"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("wechat: prepay %s: %w: %v", r.OutTradeNo, ErrMalformed, err)
	}
	res := &PrepayResult{CodeURL: out.CodeURL, PrepayID: out.PrepayID, H5URL: out.H5URL}
	var got string
	switch kind {
	case Native:
		got = res.CodeURL
	case JSAPI, App:
		got = res.PrepayID
	case H5:
		got = res.H5URL
	}
	if got == "" {
		return nil, fmt.Errorf("wechat: prepay %s: %w: %s answer lacks its result field", r.OutTradeNo, ErrMalformed, kind)
	}
	return res, nil
}

// Query returns the trade's current state. A trade WeChat Pay does not know
// gives an *Error with Code "ORDER_NOT_EXIST" (see IsCode).
func (c *Client) Query(ctx context.Context, outTradeNo string) (*Transaction, error) {
	if !outTradeNoRe.MatchString(outTradeNo) {
		return nil, fmt.Errorf("wechat: query: out_trade_no %q must be 6-32 of [0-9A-Za-z_-|*]", outTradeNo)
	}
	path := "/v3/pay/transactions/out-trade-no/" + url.PathEscape(outTradeNo) + "?mchid=" + url.QueryEscape(c.cfg.MchID)
	_, raw, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	tx, err := parseTransaction(raw)
	if err != nil {
		return nil, fmt.Errorf("wechat: query %s: %w", outTradeNo, err)
	}
	if err := c.checkOurs(tx); err != nil {
		return nil, fmt.Errorf("wechat: query %s: %w", outTradeNo, err)
	}
	if tx.OutTradeNo != outTradeNo {
		return nil, fmt.Errorf("wechat: query %s: %w: answer is about %s", outTradeNo, ErrMalformed, tx.OutTradeNo)
	}
	return tx, nil
}

// Close closes an unpaid trade so it can no longer be paid (WeChat Pay
// answers 204). Closing a paid trade fails with Code "ORDERPAID".
func (c *Client) Close(ctx context.Context, outTradeNo string) error {
	if !outTradeNoRe.MatchString(outTradeNo) {
		return fmt.Errorf("wechat: close: out_trade_no %q must be 6-32 of [0-9A-Za-z_-|*]", outTradeNo)
	}
	path := "/v3/pay/transactions/out-trade-no/" + url.PathEscape(outTradeNo) + "/close"
	_, _, err := c.do(ctx, http.MethodPost, path, struct {
		MchID string `json:"mchid"`
	}{c.cfg.MchID})
	return err
}
