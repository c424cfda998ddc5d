package sandbox

import (
	"encoding/json"
	"net/http"
	"time"
)

// The mini program server API's access_token and subscribe messages, as the
// WeChat half of the sandbox serves them:
//
//	POST /cgi-bin/stable_token                           {grant_type, appid, secret}: the app's token
//	POST /cgi-bin/message/subscribe/send?access_token=…  send a subscribe message (recorded, see Messages)

// tokenTTL is how long an access_token lives, as WeChat's (7,200 s).
const tokenTTL = 2 * time.Hour

// DevPaidTemplateID is the subscribe message template the sandbox knows for
// "your order is paid"; a real one comes from the mini program's console.
const DevPaidTemplateID = "sandbox-order-paid-template"

// SentMessage is a subscribe message the sandbox accepted.
type SentMessage struct {
	ToUser, TemplateID, Page string
	Data                     map[string]string
}

// accessToken is the app's current token and its expiry; guarded by mu.
type accessToken struct {
	value  string
	expiry time.Time
	issued int // tokens issued so far
}

// Subscribe records that the user openID accepted one message of the
// template, as wx.requestSubscribeMessage does when the user taps "allow":
// each acceptance allows one message.
func (s *WeChat) Subscribe(openID, templateID string) {
	s.mu.Lock()
	s.subscriptions[openID+"\x00"+templateID]++
	s.mu.Unlock()
}

// Messages returns the subscribe messages accepted so far, in order.
func (s *WeChat) Messages() []SentMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SentMessage(nil), s.messages...)
}

// ExpireAccessToken ends the current access_token now, as WeChat may before
// its stated expiry: the next send with it is answered 42001.
func (s *WeChat) ExpireAccessToken() {
	s.mu.Lock()
	s.token.expiry = s.now()
	s.mu.Unlock()
}

// TokensIssued says how many access_tokens stable_token has issued.
func (s *WeChat) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token.issued
}

func writeSNS(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// serveStableToken answers /cgi-bin/stable_token: the current token while
// it is valid (every caller gets the same one), a new one once it ended.
func (s *WeChat) serveStableToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		GrantType string `json:"grant_type"`
		AppID     string `json:"appid"`
		Secret    string `json:"secret"`
	}
	switch {
	case r.Method != http.MethodPost:
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	case json.NewDecoder(r.Body).Decode(&req) != nil:
		writeSNS(w, wxSNSError{47001, "data format error"})
		return
	case req.GrantType != "client_credential":
		writeSNS(w, wxSNSError{40002, "invalid grant_type"})
		return
	case req.AppID != s.cfg.AppID:
		writeSNS(w, wxSNSError{40013, "invalid appid"})
		return
	case s.cfg.AppSecret == "" || req.Secret != s.cfg.AppSecret:
		writeSNS(w, wxSNSError{40125, "invalid appsecret"})
		return
	}
	s.mu.Lock()
	now := s.now()
	if s.token.value == "" || !now.Before(s.token.expiry) {
		s.token.value, s.token.expiry = randomString(64), now.Add(tokenTTL)
		s.token.issued++
	}
	tok, left := s.token.value, s.token.expiry.Sub(now)
	s.mu.Unlock()
	writeSNS(w, struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}{tok, int64(left / time.Second)})
}

// serveSubscribeSend answers /cgi-bin/message/subscribe/send: the token
// must be the current one (40001 unknown, 42001 expired), and the user must
// have accepted the template (43101), which one message uses up.
func (s *WeChat) serveSubscribeSend(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ToUser     string `json:"touser"`
		TemplateID string `json:"template_id"`
		Page       string `json:"page"`
		Data       map[string]struct {
			Value string `json:"value"`
		} `json:"data"`
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if json.NewDecoder(r.Body).Decode(&req) != nil || req.ToUser == "" || req.TemplateID == "" {
		writeSNS(w, wxSNSError{47003, "argument invalid: touser and template_id are required"})
		return
	}
	tok := r.URL.Query().Get("access_token")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case tok == "" || tok != s.token.value:
		writeSNS(w, wxSNSError{40001, "invalid credential, access_token is invalid or not latest"})
		return
	case !s.now().Before(s.token.expiry):
		writeSNS(w, wxSNSError{42001, "access_token expired"})
		return
	}
	key := req.ToUser + "\x00" + req.TemplateID
	if s.subscriptions[key] == 0 {
		writeSNS(w, wxSNSError{43101, "user refuse to accept the msg"})
		return
	}
	s.subscriptions[key]--
	m := SentMessage{ToUser: req.ToUser, TemplateID: req.TemplateID, Page: req.Page, Data: map[string]string{}}
	for k, v := range req.Data {
		m.Data[k] = v.Value
	}
	s.messages = append(s.messages, m)
	writeSNS(w, wxSNSError{0, "ok"})
}
