package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ErrNotSubscribed is a subscribe message WeChat refused because the user
// has not accepted (or has used up) the template (errcode 43101): the mini
// program must ask again with wx.requestSubscribeMessage. It is the user's
// choice, not a failure.
var ErrNotSubscribed = errors.New("wechat: user has not subscribed to the template")

// tokenMargin is how long before its stated expiry a cached access_token is
// replaced, so that a token is never used in its last minutes.
const tokenMargin = 5 * time.Minute

// Messenger sends mini program subscribe messages
// (POST /cgi-bin/message/subscribe/send) with an access_token it caches.
//
// The token comes from /cgi-bin/stable_token, not /cgi-bin/token: every
// /cgi-bin/token call issues a new token and ends the previous one five
// minutes later, so instances each caching their own would keep ending each
// other's. stable_token answers every caller the same token while it is
// valid, so a cache per process is safe without a shared lock. A send that
// WeChat answers "token invalid or expired" (40001, 42001) drops the token
// and is retried once with a fresh one. Safe for concurrent use; concurrent
// callers share one fetch.
type Messenger struct {
	cfg  MiniProgramConfig
	host string
	hc   *http.Client
	now  func() time.Time

	mu      sync.Mutex // held across a fetch: concurrent callers wait for it
	token   string
	expires time.Time
}

// NewMessenger validates cfg and returns a Messenger.
func NewMessenger(cfg MiniProgramConfig) (*Messenger, error) {
	l, err := NewLogin(cfg) // the same checks, host default and client
	if err != nil {
		return nil, fmt.Errorf("wechat messenger: %w", err)
	}
	return &Messenger{cfg: cfg, host: l.host, hc: l.hc, now: time.Now}, nil
}

// SubscribeMessage is one subscribe message: to whom (openid), which
// template, the page it opens, and the template's fields (e.g. "thing1",
// "amount2") with their values.
type SubscribeMessage struct {
	ToUser     string
	TemplateID string
	Page       string
	Data       map[string]string
}

// Send sends a subscribe message. ErrNotSubscribed is the user's choice;
// other errors are WeChat's or the network's. No error carries a URL: the
// token and the secret travel in queries and bodies.
func (m *Messenger) Send(ctx context.Context, msg SubscribeMessage) error {
	type value struct {
		Value string `json:"value"`
	}
	data := make(map[string]value, len(msg.Data))
	for k, v := range msg.Data {
		data[k] = value{v}
	}
	body, err := json.Marshal(struct {
		ToUser     string           `json:"touser"`
		TemplateID string           `json:"template_id"`
		Page       string           `json:"page,omitempty"`
		Data       map[string]value `json:"data"`
	}{msg.ToUser, msg.TemplateID, msg.Page, data})
	if err != nil {
		return fmt.Errorf("wechat subscribe message: encode: %w", err)
	}
	for attempt := 0; ; attempt++ {
		tok, err := m.accessToken(ctx)
		if err != nil {
			return err
		}
		code, msgText, err := m.post(ctx, "/cgi-bin/message/subscribe/send?access_token="+url.QueryEscape(tok), body)
		if err != nil {
			return fmt.Errorf("wechat subscribe message: %w", err)
		}
		switch code {
		case 0:
			return nil
		case 40001, 42001: // the token is invalid or expired: fetch another, once
			m.drop(tok)
			if attempt == 0 {
				continue
			}
		case 43101:
			return fmt.Errorf("%w: %s", ErrNotSubscribed, msg.TemplateID)
		}
		return fmt.Errorf("wechat subscribe message: errcode %d %s", code, msgText)
	}
}

// accessToken returns the cached token, fetching one when there is none or
// it is within tokenMargin of its expiry.
func (m *Messenger) accessToken(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.token != "" && m.now().Before(m.expires.Add(-tokenMargin)) {
		return m.token, nil
	}
	body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": m.cfg.AppID,
		"secret": m.cfg.AppSecret, "force_refresh": false})
	raw, err := m.postRaw(ctx, "/cgi-bin/stable_token", body)
	if err != nil {
		return "", fmt.Errorf("wechat access_token: %w", err)
	}
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		ErrCode     int    `json:"errcode"`
		ErrMsg      string `json:"errmsg"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", fmt.Errorf("wechat access_token: %w: answer is not JSON", ErrMalformed)
	}
	if out.ErrCode != 0 || out.AccessToken == "" || out.ExpiresIn <= 0 {
		return "", fmt.Errorf("wechat access_token: errcode %d %s", out.ErrCode, out.ErrMsg)
	}
	m.token, m.expires = out.AccessToken, m.now().Add(time.Duration(out.ExpiresIn)*time.Second)
	return m.token, nil
}

// drop forgets tok if it is still the cached token (another caller may have
// replaced it already).
func (m *Messenger) drop(tok string) {
	m.mu.Lock()
	if m.token == tok {
		m.token = ""
	}
	m.mu.Unlock()
}

// post sends body and reads WeChat's {"errcode","errmsg"} answer.
func (m *Messenger) post(ctx context.Context, pathQuery string, body []byte) (int, string, error) {
	raw, err := m.postRaw(ctx, pathQuery, body)
	if err != nil {
		return 0, "", err
	}
	var out struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, "", fmt.Errorf("%w: answer is not JSON", ErrMalformed)
	}
	return out.ErrCode, out.ErrMsg, nil
}

// postRaw POSTs JSON and returns a 200 answer's body.
func (m *Messenger) postRaw(ctx context.Context, pathQuery string, body []byte) ([]byte, error) {
	return call(ctx, m.hc, http.MethodPost, m.host, pathQuery, body)
}

// call sends one request to the Mini Program server API and returns a 200
// answer's body, read up to maxResponseBody. Errors never carry the URL:
// its query holds the app secret (code2Session) or the access token.
func call(ctx context.Context, hc *http.Client, method, host, pathQuery string, body []byte) ([]byte, error) {
	path, _, _ := strings.Cut(pathQuery, "?")
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, host+pathQuery, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: cannot build the request", method, path)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		// *url.Error prints the URL, secret included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil || len(raw) > maxResponseBody {
		return nil, fmt.Errorf("%s %s: unreadable answer (HTTP %d)", method, path, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return raw, nil
}
