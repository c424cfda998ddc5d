package sandbox

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/flashgrab/flashgrab/pay/wechat"
)

// Identities the sandbox plays in its WeChat Pay half.
const (
	// DevWeChatAppID and DevWeChatMchID are the app and merchant ids DevWeChat wires up.
	DevWeChatAppID = "wx0123456789abcdef"
	DevWeChatMchID = "1900000109"
	// DevWeChatPubKeyID is the serial of the "WeChat Pay public key" DevWeChat
	// signs with; it also makes a platform-certificate-style hex serial live.
	DevWeChatPubKeyID = "PUB_KEY_ID_0119000001092025010100000000"

	wxNotifyTimeout = 5 * time.Second // WeChat Pay expects an answer within 5 s
	wxMaxSkew       = 5 * time.Minute
	wxStaleBy       = 10 * time.Minute
	wxBuyerOpenID   = "oSandboxBuyer15911111111"
	// wxDevRefundAfter is how long a dev refund stays PROCESSING before the
	// retry scale compresses it: real refunds to change take about a minute.
	wxDevRefundAfter = time.Minute
)

// WeChatConfig configures the simulated WeChat Pay.
type WeChatConfig struct {
	AppID, MchID string
	APIv3Key     string // 32 bytes; encrypts notify resources
	// MerchantKeys verify the merchant's Authorization header, by serial_no.
	MerchantKeys map[string]*rsa.PublicKey
	// SigningKeys are the sandbox's WeChat Pay keys by serial (PUB_KEY_ID_…
	// and/or hex platform-certificate serials); ActiveSerial picks the one
	// that signs responses and notifies. Several may be live at once, as
	// during a certificate → public-key switch; see SetActiveSerial.
	SigningKeys  map[string]*rsa.PrivateKey
	ActiveSerial string
	// Retry is the notify retry schedule; zero means WeChat's real one.
	Retry Schedule
	// HTTPClient delivers notifies; defaults to one with a 5 s timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now.
	Now func() time.Time
	// RefundAfter is how long a refund stays PROCESSING before it settles by
	// itself and its REFUND.* notify goes out (see HoldRefunds, SettleRefund).
	RefundAfter time.Duration
	// AppSecret is the mini program's secret code2Session checks; empty
	// refuses every login.
	AppSecret string
}

// DevWeChat generates fresh keys for both sides and returns a client
// configuration and a sandbox configuration that trust each other. host is
// where the sandbox is reachable as the client sees it (e.g.
// "http://127.0.0.1:8080/wechat" when mounted under /wechat/), notifyURL the
// merchant's notify endpoint. The sandbox signs with DevWeChatPubKeyID and
// also holds a second, certificate-style serial that the client trusts, and
// retries notifies on WeChat's schedule compressed a hundredfold (15 s →
// 150 ms).
func DevWeChat(host, notifyURL string) (wechat.Config, WeChatConfig, error) {
	var keys [3]*rsa.PrivateKey
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return wechat.Config{}, WeChatConfig{}, fmt.Errorf("dev wechat: generate key: %w", err)
		}
		keys[i] = k
	}
	merchantKey, pubKeyKey, certKey := keys[0], keys[1], keys[2]
	mchSerial := strings.ToUpper(randomHex(20))
	certSerial := strings.ToUpper(randomHex(20))
	apiV3Key := randomString(32)
	return wechat.Config{
			AppID: DevWeChatAppID, MchID: DevWeChatMchID, MchSerial: mchSerial, MchKey: merchantKey,
			APIv3Key: apiV3Key,
			Verifiers: map[string]*rsa.PublicKey{
				DevWeChatPubKeyID: &pubKeyKey.PublicKey, certSerial: &certKey.PublicKey,
			},
			Host: host, NotifyURL: notifyURL,
		}, WeChatConfig{
			AppID: DevWeChatAppID, MchID: DevWeChatMchID, APIv3Key: apiV3Key,
			MerchantKeys: map[string]*rsa.PublicKey{mchSerial: &merchantKey.PublicKey},
			SigningKeys:  map[string]*rsa.PrivateKey{DevWeChatPubKeyID: pubKeyKey, certSerial: certKey},
			ActiveSerial: DevWeChatPubKeyID,
			Retry:        Schedule{Delays: WeChatRetries, Scale: 0.01},
			RefundAfter:  wxDevRefundAfter / 100,
			AppSecret:    randomString(32),
		}, nil
}

// WeChat simulates WeChat Pay APIv3. It is an
// http.Handler serving, relative to wherever it is mounted (use
// http.StripPrefix("/wechat", s) to serve it under /wechat/):
//
//	POST /v3/pay/transactions/{native,jsapi,app,h5}        create a trade
//	GET  /v3/pay/transactions/out-trade-no/{no}?mchid=…    query
//	POST /v3/pay/transactions/out-trade-no/{no}/close      close (204)
//	POST /v3/refund/domestic/refunds                        refund (PROCESSING), idempotent by out_refund_no
//	GET  /v3/refund/domestic/refunds/{out_refund_no}        query a refund
//	GET  /pay?out_trade_no=…   a cashier page; POST pays the trade (what code_url and h5_url point to)
//	GET  /sns/jscode2session?appid&secret&js_code&grant_type   the mini program login (code2Session)
//	POST /sdk/login, /sdk/app, /sdk/jsapi, /sdk/subscribe   the payer's client: wx.login, the SDK's PayReq, wx.requestPayment, wx.requestSubscribeMessage (see serveSDK)
//	POST /cgi-bin/stable_token, /cgi-bin/message/subscribe/send   the access_token and subscribe messages (see wechat_message.go)
//
// Every /v3 request must carry a valid Authorization header. Its signature
// is checked over the request-target as received on the wire
// (r.RequestURI, which http.StripPrefix leaves untouched), i.e. the full path
// the client sent including the mount prefix, which is also what the
// client signs. Every /v3 answer, errors included, is signed with the key
// the request's Wechatpay-Serial names (the active serial's when it names
// none), except the answer to a request whose signature failed, which is not
// signed at all. Refunds answer PROCESSING, settle after RefundAfter to
// SUCCESS (or what SetRefundOutcome asked) and send a REFUND.* notify.
// Trades live in memory only.
type WeChat struct {
	simulator[*wxTrade]
	cfg    WeChatConfig
	active string // guarded by mu, as everything below

	refunds map[string]*wxRefund // by out_refund_no
	// refundEnds is what a trade's refunds end in (SUCCESS when absent).
	refundEnds map[string]string
	// holdRefunds keeps new refunds PROCESSING until SettleRefund.
	holdRefunds bool
	// codes are the mini program login codes not yet exchanged (LoginCode);
	// usedCodes the ones that were, which code2Session refuses as used.
	codes     map[string]loginCode
	usedCodes map[string]bool
	// The mini program server API: the app's access_token, the users'
	// accepted subscriptions (openid\x00template → messages allowed) and
	// the messages sent.
	token         accessToken
	subscriptions map[string]int
	messages      []SentMessage
}

// wechatWays returns WeChat Pay's trade states, retry schedule and acknowledgement.
func wechatWays() provider {
	return provider{
		name: "wechat",
		open: wechat.TradeNotPay, paid: wechat.TradeSuccess, closed: wechat.TradeClosed,
		retries:       WeChatRetries,
		notifyTimeout: wxNotifyTimeout,
		// The status decides, whatever the body says.
		acked: func(status int, _ string) bool { return status == http.StatusOK || status == http.StatusNoContent },
	}
}

type wxTrade struct {
	trade
	transactionID       string
	kind                wechat.Kind
	description, attach string
	openID              string
	prepay              wxPrepayResult
}

// NewWeChat returns a simulator moving money between the buyer and seller in
// w. It fails when cfg lacks its identity or keys, or w is nil.
func NewWeChat(cfg WeChatConfig, w *Wallets) (*WeChat, error) {
	switch {
	case cfg.AppID == "" || cfg.MchID == "":
		return nil, errors.New("sandbox wechat: AppID and MchID are required")
	case len(cfg.APIv3Key) != 32:
		return nil, fmt.Errorf("sandbox wechat: APIv3Key must be 32 bytes, not %d", len(cfg.APIv3Key))
	case len(cfg.MerchantKeys) == 0 || len(cfg.SigningKeys) == 0:
		return nil, errors.New("sandbox wechat: MerchantKeys and SigningKeys are required")
	case cfg.SigningKeys[cfg.ActiveSerial] == nil:
		return nil, fmt.Errorf("sandbox wechat: ActiveSerial %q names none of SigningKeys", cfg.ActiveSerial)
	}
	s := &WeChat{cfg: cfg, active: cfg.ActiveSerial, refunds: map[string]*wxRefund{}, refundEnds: map[string]string{},
		codes: map[string]loginCode{}, usedCodes: map[string]bool{}, subscriptions: map[string]int{}}
	if err := s.init(wechatWays(), w, cfg.Retry, cfg.HTTPClient, cfg.Now); err != nil {
		return nil, err
	}
	return s, nil
}

// SetActiveSerial switches the key that signs from now on, to exercise a
// merchant holding two live serials.
func (s *WeChat) SetActiveSerial(serial string) error {
	if s.cfg.SigningKeys[serial] == nil {
		return fmt.Errorf("sandbox wechat: no signing key with serial %q", serial)
	}
	s.mu.Lock()
	s.active = serial
	s.mu.Unlock()
	return nil
}

// ---- paying and notify delivery ----

// Pay pays a trade as the buyer 15911111111 would: it moves the amount from
// the buyer's wallet to the seller's, marks the trade SUCCESS and starts
// delivering an encrypted TRANSACTION.SUCCESS notify to the trade's
// notify_url, retrying on the configured schedule until the merchant answers
// 200 or 204. Options change what is delivered (duplicates, a SIGNTEST probe,
// a stale timestamp, a misstated amount, a forged signature) but the trade is
// paid all the same, as a merchant would find by Query. Paying an unknown,
// closed, expired or already paid trade fails and moves nothing.
func (s *WeChat) Pay(outTradeNo string, opts ...PayOption) error {
	return s.pay(outTradeNo, opts, nil, func(tr *wxTrade, o PayOptions) (func() Delivery, error) {
		tr.transactionID = "4200" + tr.paidAt.In(wxCST).Format("20060102") + fmt.Sprintf("%016d", s.nextSeq())
		claimed := tr.amount
		if o.AmountCents > 0 {
			claimed = o.AmountCents
		}
		signed, err := s.notifyBody(tr, claimed)
		if err != nil {
			return nil, err
		}
		return s.notifyPoster(tr.notifyURL, signed, o), nil
	})
}

// notifyBody is the TRANSACTION.SUCCESS notify of a trade.
func (s *WeChat) notifyBody(tr *wxTrade, claimed int64) ([]byte, error) {
	plain, err := json.Marshal(s.transactionJSON(tr, claimed))
	if err != nil {
		return nil, fmt.Errorf("sandbox wechat: notify %s: %w", tr.outTradeNo, err)
	}
	return s.sealNotify(plain, "TRANSACTION.SUCCESS", "transaction", "支付成功")
}

// sealNotify is a notify envelope with plain sealed by AEAD_AES_256_GCM
// under the APIv3 key, a fresh 12-character nonce and the original type as
// associated data, as WeChat Pay sends them.
func (s *WeChat) sealNotify(plain []byte, eventType, originalType, summary string) ([]byte, error) {
	block, err := aes.NewCipher([]byte(s.cfg.APIv3Key))
	if err != nil {
		return nil, fmt.Errorf("sandbox wechat: notify %s: %w", eventType, err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sandbox wechat: notify %s: %w", eventType, err)
	}
	nonce := randomString(12)
	sealed := gcm.Seal(nil, []byte(nonce), plain, []byte(originalType))
	type resource struct {
		OriginalType   string `json:"original_type"`
		Algorithm      string `json:"algorithm"`
		Ciphertext     string `json:"ciphertext"`
		AssociatedData string `json:"associated_data"`
		Nonce          string `json:"nonce"`
	}
	return json.Marshal(struct {
		ID           string   `json:"id"`
		CreateTime   string   `json:"create_time"`
		ResourceType string   `json:"resource_type"`
		EventType    string   `json:"event_type"`
		Summary      string   `json:"summary"`
		Resource     resource `json:"resource"`
	}{
		ID: randomUUID(), CreateTime: s.now().In(wxCST).Format(time.RFC3339),
		ResourceType: "encrypt-resource", EventType: eventType, Summary: summary,
		Resource: resource{OriginalType: originalType, Algorithm: "AEAD_AES_256_GCM",
			Ciphertext: base64.StdEncoding.EncodeToString(sealed), AssociatedData: originalType, Nonce: nonce},
	})
}

// forgeWxNotify changes a notify after signing, so the signature no longer
// covers the body.
func forgeWxNotify(signed []byte) []byte {
	return bytes.Replace(signed, []byte(`"id":"`), []byte(`"id":"X`), 1)
}

// notifyPoster returns how to post a signed notify to notifyURL: each
// attempt signs it anew, as WeChat Pay does, and the options change what is
// delivered (a forged body, a stale timestamp, a SIGNTEST probe).
func (s *WeChat) notifyPoster(notifyURL string, signed []byte, o PayOptions) func() Delivery {
	sent := signed
	if o.ForgeSignature {
		sent = forgeWxNotify(signed)
	}
	header := func(now time.Time) (http.Header, error) {
		if o.StaleTimestamp {
			now = now.Add(-wxStaleBy)
		}
		hdr, err := s.signHeaders(now, signed, "")
		if err != nil {
			return nil, err
		}
		if o.SignTestProbe {
			hdr.Set(wechat.HeaderSignature, wechat.ProbePrefix+hdr.Get(wechat.HeaderSignature))
		}
		hdr.Set("Content-Type", "application/json")
		hdr.Set("User-Agent", "Mozilla/4.0 (sandbox WeChat Pay notify)")
		return hdr, nil
	}
	return func() Delivery { return s.postNotify(notifyURL, sent, header) }
}

// ---- signing ----

// signHeaders signs timestamp\nnonce\nbody\n with the key of serial, or
// the active serial's when serial is empty.
func (s *WeChat) signHeaders(at time.Time, body []byte, serial string) (http.Header, error) {
	if serial == "" {
		s.mu.Lock()
		serial = s.active
		s.mu.Unlock()
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	nonce := randomHex(16)
	msg := ts + "\n" + nonce + "\n" + string(body) + "\n"
	sum := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.cfg.SigningKeys[serial], crypto.SHA256, sum[:])
	if err != nil {
		return nil, fmt.Errorf("sandbox wechat: sign: %w", err)
	}
	h := http.Header{}
	h.Set(wechat.HeaderTimestamp, ts)
	h.Set(wechat.HeaderNonce, nonce)
	h.Set(wechat.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	h.Set(wechat.HeaderSerial, serial)
	return h, nil
}

// checkAuthorization verifies a merchant request as WeChat Pay does: scheme,
// mchid, a known serial_no, a timestamp within 5 minutes and the signature
// over METHOD\nURL\ntimestamp\nnonce\nbody\n.
func (s *WeChat) checkAuthorization(r *http.Request, body []byte) error {
	rest, ok := strings.CutPrefix(r.Header.Get("Authorization"), wechat.AuthScheme+" ")
	if !ok {
		return errors.New("Authorization is missing or not " + wechat.AuthScheme)
	}
	f := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("Authorization part %q is not key=value", part)
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		f[k] = v
	}
	if f["mchid"] != s.cfg.MchID {
		return fmt.Errorf("mchid %q is not this merchant", f["mchid"])
	}
	pub := s.cfg.MerchantKeys[f["serial_no"]]
	if pub == nil {
		return fmt.Errorf("serial_no %q is not a registered merchant certificate", f["serial_no"])
	}
	ts, err := strconv.ParseInt(f["timestamp"], 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q is not unix seconds", f["timestamp"])
	}
	now, limit := s.now().Unix(), int64(wxMaxSkew/time.Second)
	if ts <= now-limit || ts >= now+limit {
		return fmt.Errorf("timestamp %d is %ds away from now, over 5 minutes", ts, now-ts)
	}
	if f["nonce_str"] == "" {
		return errors.New("nonce_str is empty")
	}
	sig, err := base64.StdEncoding.DecodeString(f["signature"])
	if err != nil {
		return errors.New("signature is not base64")
	}
	msg := r.Method + "\n" + requestTarget(r) + "\n" + f["timestamp"] + "\n" + f["nonce_str"] + "\n" + string(body) + "\n"
	sum := sha256.Sum256([]byte(msg))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return errors.New("signature does not verify; sign the request-target exactly as sent, mount prefix included")
	}
	return nil
}

// ---- HTTP ----

// ServeHTTP routes the APIv3 endpoints and the cashier.
func (s *WeChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, "/v3/"):
		s.serveV3(w, r)
	case p == "/pay":
		s.servePay(w, r)
	case p == "/sns/jscode2session":
		s.serveCode2Session(w, r)
	case p == "/cgi-bin/stable_token":
		s.serveStableToken(w, r)
	case p == "/cgi-bin/message/subscribe/send":
		s.serveSubscribeSend(w, r)
	case strings.HasPrefix(p, "/sdk/"):
		s.serveSDK(w, r)
	default:
		http.NotFound(w, r)
	}
}

// wxError is WeChat Pay's error body.
type wxError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (s *WeChat) serveV3(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.writeV3(w, http.StatusBadRequest, wxError{"PARAM_ERROR", "unreadable body: " + err.Error()}, "")
		return
	}
	if err := s.checkAuthorization(r, body); err != nil {
		// Like WeChat Pay, no signature on the answer to a request whose own
		// signature failed: the merchant cannot trust what it says.
		s.writeV3(w, http.StatusUnauthorized, wxError{"SIGN_ERROR", err.Error()}, "-")
		return
	}
	// In public-key mode WeChat Pay signs with the key the request's
	// Wechatpay-Serial names; without one, with the active key.
	serial := r.Header.Get(wechat.HeaderSerial)
	if serial != "" && s.cfg.SigningKeys[serial] == nil {
		s.writeV3(w, http.StatusBadRequest, wxError{"PARAM_ERROR", "Wechatpay-Serial " + strconv.Quote(serial) + " is not a WeChat Pay key of this merchant"}, "")
		return
	}
	status, payload := s.routeV3(r, body)
	s.writeV3(w, status, payload, serial)
}

func (s *WeChat) routeV3(r *http.Request, body []byte) (int, any) {
	const tx, byNo, refunds = "/v3/pay/transactions/", "/v3/pay/transactions/out-trade-no/", "/v3/refund/domestic/refunds"
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, byNo):
		rest := strings.TrimPrefix(p, byNo)
		if no, ok := strings.CutSuffix(rest, "/close"); ok && r.Method == http.MethodPost && !strings.Contains(no, "/") {
			return s.closeTrade(no, body)
		}
		if r.Method == http.MethodGet && !strings.Contains(rest, "/") {
			return s.query(rest, r.URL.Query().Get("mchid"))
		}
	case strings.HasPrefix(p, tx) && r.Method == http.MethodPost:
		switch k := wechat.Kind(strings.TrimPrefix(p, tx)); k {
		case wechat.Native, wechat.JSAPI, wechat.App, wechat.H5:
			return s.prepay(r, k, body)
		}
	case p == refunds && r.Method == http.MethodPost:
		return s.refund(r, body)
	case strings.HasPrefix(p, refunds+"/") && r.Method == http.MethodGet:
		return s.queryRefund(strings.TrimPrefix(p, refunds+"/"))
	}
	return http.StatusNotFound, wxError{"NOT_FOUND", r.Method + " " + p + " is not an API of this sandbox"}
}

// writeV3 answers with payload as JSON (nil: no body), signed with the key
// of serial ("" the active one, "-" unsigned).
func (s *WeChat) writeV3(w http.ResponseWriter, status int, payload any, serial string) {
	var body []byte
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
			return
		}
		body = b
		w.Header().Set("Content-Type", "application/json")
	}
	if serial != "-" {
		hdr, err := s.signHeaders(s.now(), body, serial)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for k, v := range hdr {
			w.Header()[k] = v
		}
	}
	w.Header().Set("Request-ID", randomUUID())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// ---- trade methods ----

var (
	wxOutTradeNoRe  = regexp.MustCompile(`^[0-9A-Za-z_\-|*]{6,32}$`)
	wxOutRefundNoRe = regexp.MustCompile(`^[0-9A-Za-z_\-|*@]{1,64}$`)
	wxCST           = time.FixedZone("CST", 8*3600)
)

type wxPrepayResult struct {
	CodeURL  string `json:"code_url,omitempty"`
	PrepayID string `json:"prepay_id,omitempty"`
	H5URL    string `json:"h5_url,omitempty"`
}

var wxTradeTypes = map[wechat.Kind]string{wechat.Native: "NATIVE", wechat.JSAPI: "JSAPI", wechat.App: "APP", wechat.H5: "MWEB"}

func wxParamError(format string, args ...any) (int, any) {
	return http.StatusBadRequest, wxError{"PARAM_ERROR", fmt.Sprintf(format, args...)}
}

// prepay creates a trade, or answers the same result again when the
// merchant repeats an unpaid order unchanged.
func (s *WeChat) prepay(r *http.Request, kind wechat.Kind, body []byte) (int, any) {
	var req struct {
		AppID       string `json:"appid"`
		MchID       string `json:"mchid"`
		Description string `json:"description"`
		OutTradeNo  string `json:"out_trade_no"`
		TimeExpire  string `json:"time_expire"`
		Attach      string `json:"attach"`
		NotifyURL   string `json:"notify_url"`
		Amount      *struct {
			Total    int64  `json:"total"`
			Currency string `json:"currency"`
		} `json:"amount"`
		Payer *struct {
			OpenID string `json:"openid"`
		} `json:"payer"`
		SceneInfo *struct {
			PayerClientIP string `json:"payer_client_ip"`
			H5Info        *struct {
				Type string `json:"type"`
			} `json:"h5_info"`
		} `json:"scene_info"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return wxParamError("body is not valid JSON: %v", err)
	}
	if req.AppID != s.cfg.AppID || req.MchID != s.cfg.MchID {
		return http.StatusBadRequest, wxError{"APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配"}
	}
	if !wxOutTradeNoRe.MatchString(req.OutTradeNo) {
		return wxParamError("out_trade_no %q must be 6-32 of [0-9A-Za-z_-|*]", req.OutTradeNo)
	}
	if req.Description == "" {
		return wxParamError("description is required")
	}
	if u, err := url.Parse(req.NotifyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return wxParamError("notify_url %q must be an absolute URL without query", req.NotifyURL)
	}
	if req.Amount == nil || req.Amount.Total <= 0 || (req.Amount.Currency != "" && req.Amount.Currency != "CNY") {
		return wxParamError("amount.total must be a positive number of fen in CNY")
	}
	var openID string
	switch kind {
	case wechat.JSAPI:
		if req.Payer == nil || req.Payer.OpenID == "" {
			return wxParamError("payer.openid is required for jsapi")
		}
		openID = req.Payer.OpenID
	case wechat.H5:
		if req.SceneInfo == nil || net.ParseIP(req.SceneInfo.PayerClientIP) == nil || req.SceneInfo.H5Info == nil {
			return wxParamError("scene_info.payer_client_ip and scene_info.h5_info are required for h5")
		}
	}
	var expire time.Time
	if req.TimeExpire != "" {
		t, err := time.Parse(time.RFC3339, req.TimeExpire)
		if err != nil {
			return wxParamError("time_expire %q is not RFC 3339", req.TimeExpire)
		}
		expire = t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tr := s.trades[req.OutTradeNo]; tr != nil {
		s.expireLocked(tr)
		switch {
		case tr.status == wechat.TradeSuccess || tr.status == wechat.TradeRefund:
			return http.StatusBadRequest, wxError{"ORDERPAID", "该订单已支付"}
		case tr.status == wechat.TradeClosed:
			return http.StatusBadRequest, wxError{"ORDER_CLOSED", "订单已关闭"}
		case tr.kind != kind || tr.amount != req.Amount.Total || tr.description != req.Description:
			return http.StatusBadRequest, wxError{"INVALID_REQUEST", "商户订单号重复，且订单参数不一致"}
		}
		return http.StatusOK, tr.prepay
	}
	now := s.now()
	tr := &wxTrade{
		trade: trade{outTradeNo: req.OutTradeNo, amount: req.Amount.Total, status: wechat.TradeNotPay,
			notifyURL: req.NotifyURL, created: now, expire: expire},
		kind: kind, description: req.Description, attach: req.Attach, openID: openID,
	}
	cashier := externalBase(r) + "/pay?" + url.Values{"out_trade_no": {tr.outTradeNo}}.Encode()
	switch kind {
	case wechat.Native:
		tr.prepay.CodeURL = cashier
	case wechat.H5:
		tr.prepay.H5URL = cashier
	default:
		tr.prepay.PrepayID = "wx" + now.In(wxCST).Format("20060102150405") + randomHex(10)
	}
	s.trades[tr.outTradeNo] = tr
	return http.StatusOK, tr.prepay
}

type wxTransaction struct {
	AppID          string `json:"appid"`
	MchID          string `json:"mchid"`
	OutTradeNo     string `json:"out_trade_no"`
	TransactionID  string `json:"transaction_id,omitempty"`
	TradeType      string `json:"trade_type"`
	TradeState     string `json:"trade_state"`
	TradeStateDesc string `json:"trade_state_desc"`
	BankType       string `json:"bank_type,omitempty"`
	Attach         string `json:"attach"`
	SuccessTime    string `json:"success_time,omitempty"`
	Payer          *struct {
		OpenID string `json:"openid"`
	} `json:"payer,omitempty"`
	Amount struct {
		Total         int64  `json:"total"`
		PayerTotal    int64  `json:"payer_total"`
		Currency      string `json:"currency"`
		PayerCurrency string `json:"payer_currency"`
	} `json:"amount"`
}

var wxStateDesc = map[string]string{
	wechat.TradeSuccess: "支付成功", wechat.TradeRefund: "转入退款", wechat.TradeNotPay: "未支付", wechat.TradeClosed: "已关闭",
}

// transactionJSON is a trade as query answers and notifies carry it;
// claimed is the amount to state (the trade's unless a test misstates it).
func (s *WeChat) transactionJSON(tr *wxTrade, claimed int64) wxTransaction {
	t := wxTransaction{AppID: s.cfg.AppID, MchID: s.cfg.MchID, OutTradeNo: tr.outTradeNo, TradeType: wxTradeTypes[tr.kind],
		TradeState: tr.status, TradeStateDesc: wxStateDesc[tr.status], Attach: tr.attach}
	t.Amount.Total, t.Amount.Currency, t.Amount.PayerCurrency = claimed, "CNY", "CNY"
	if !tr.paidAt.IsZero() {
		t.TransactionID, t.BankType = tr.transactionID, "OTHERS"
		t.SuccessTime = tr.paidAt.In(wxCST).Format(time.RFC3339)
		t.Amount.PayerTotal = claimed
		openID := tr.openID
		if openID == "" {
			openID = wxBuyerOpenID
		}
		t.Payer = &struct {
			OpenID string `json:"openid"`
		}{openID}
	}
	return t
}

// wxOrderNotExist answers a query or close of a trade never created.
var wxOrderNotExist = wxError{"ORDER_NOT_EXIST", "订单不存在"}

// lookupLocked finds a trade, closed if it has expired; nil when unknown.
func (s *WeChat) lookupLocked(outTradeNo string) *wxTrade {
	tr := s.trades[outTradeNo]
	if tr != nil {
		s.expireLocked(tr)
	}
	return tr
}

func (s *WeChat) query(outTradeNo, mchID string) (int, any) {
	if mchID != s.cfg.MchID {
		return wxParamError("mchid %q does not match", mchID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.lookupLocked(outTradeNo)
	if tr == nil {
		return http.StatusNotFound, wxOrderNotExist
	}
	return http.StatusOK, s.transactionJSON(tr, tr.amount)
}

func (s *WeChat) closeTrade(outTradeNo string, body []byte) (int, any) {
	var req struct {
		MchID string `json:"mchid"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.MchID != s.cfg.MchID {
		return wxParamError("body must be {\"mchid\":\"%s\"}", s.cfg.MchID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.lookupLocked(outTradeNo)
	if tr == nil {
		return http.StatusNotFound, wxOrderNotExist
	}
	switch tr.status {
	case wechat.TradeSuccess, wechat.TradeRefund:
		return http.StatusBadRequest, wxError{"ORDERPAID", "订单已支付，不能关闭"}
	case wechat.TradeClosed:
		return http.StatusBadRequest, wxError{"ORDER_CLOSED", "订单已关闭"}
	}
	tr.status = wechat.TradeClosed
	return http.StatusNoContent, nil
}

// ---- cashier and pay endpoint ----

var wxCashierPage = template.Must(template.New("cashier").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sandbox WeChat Pay</title></head>
<body style="font-family:sans-serif;max-width:28em;margin:2em auto">
<h1>Sandbox WeChat Pay</h1>
<p>{{.Description}}</p>
<p style="font-size:2em">{{.Amount}} fen</p>
<p>Order {{.OutTradeNo}} · {{.State}}</p>
<p>Paying from {{.Buyer}} (balance {{.Balance}} fen)</p>
{{if .Payable}}<form method="post" action="pay?out_trade_no={{.OutTradeNo}}"><button type="submit">Pay</button></form>{{end}}
</body></html>
`))

// servePay shows the cashier (GET) or pays the trade (POST
// /pay?out_trade_no=…, handy with curl).
func (s *WeChat) servePay(w http.ResponseWriter, r *http.Request) {
	no := r.URL.Query().Get("out_trade_no")
	if no == "" {
		http.Error(w, "out_trade_no is required", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		tr := s.trades[no]
		if tr == nil {
			s.mu.Unlock()
			http.Error(w, "no such trade "+no, http.StatusNotFound)
			return
		}
		s.expireLocked(tr)
		v := map[string]any{"Description": tr.description, "Amount": tr.amount, "OutTradeNo": tr.outTradeNo,
			"State": tr.status, "Payable": tr.status == wechat.TradeNotPay, "Buyer": BuyerAccount}
		s.mu.Unlock()
		v["Balance"] = s.wallets.Balance(BuyerAccount)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = wxCashierPage.Execute(w, v)
	case http.MethodPost:
		if err := s.Pay(no); err != nil {
			writePayError(w, err)
			return
		}
		writePaid(w, no)
	default:
		http.Error(w, "GET shows the cashier, POST pays", http.StatusMethodNotAllowed)
	}
}
