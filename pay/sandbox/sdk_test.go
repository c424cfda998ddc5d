package sandbox

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/wechat"
)

// TestAlipayAppPayOrderString: the SDK's payment of an order string the real
// client signed. A tampered or foreign string is refused and moves nothing;
// the good one is paid once and notified as any trade; sending it again
// finds the trade paid.
func TestAlipayAppPayOrderString(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	const no = "FGAPP000001_aa"
	e.merchant.expect(no, 1230)
	s, err := e.client.AppPayOrderString(alipay.Trade{OutTradeNo: no, AmountCents: 1230, Subject: "秒杀 app"})
	if err != nil {
		t.Fatal(err)
	}
	before := e.wallets.Balance(BuyerAccount)
	tampered := strings.Replace(s, url.QueryEscape(`"12.30"`), url.QueryEscape(`"0.01"`), 1)
	if tampered == s {
		t.Fatal("the amount was not found in the order string to tamper with")
	}
	foreign := strings.Replace(s, "app_id="+DevAlipayAppID, "app_id=2021000000009999", 1)
	p, _ := url.ParseQuery(s)
	p.Set("method", "alipay.trade.precreate")
	for name, bad := range map[string]string{"tampered amount": tampered, "other app": foreign, "other method": p.Encode(), "not a query": "%zz"} {
		if _, err := e.sb.PayOrderString(bad); !errors.Is(err, errClientParams) {
			t.Errorf("%s: err = %v, want the parameters refused", name, err)
		}
	}
	if got := e.wallets.Balance(BuyerAccount); got != before {
		t.Fatalf("refused order strings moved money: buyer %d → %d", before, got)
	}
	got, err := e.sb.PayOrderString(s)
	if err != nil || got != no {
		t.Fatalf("PayOrderString = %q, %v", got, err)
	}
	if err := waitNotify(t, e.sb, no); err != nil {
		t.Fatal(err)
	}
	if seen := e.merchant.seen(); seen.credited[no] != 1 || len(seen.rejected) != 0 {
		t.Fatalf("credited %v, rejected %v", seen.credited, seen.rejected)
	}
	if st, err := e.client.Query(context.Background(), no); err != nil || !st.Paid || st.TotalCents != 1230 {
		t.Fatalf("query: %+v, %v", st, err)
	}
	if _, err := e.sb.PayOrderString(s); err == nil || errors.Is(err, errClientParams) {
		t.Fatalf("paying again: %v, want a trade that is not payable", err)
	}
	if spent := before - e.wallets.Balance(BuyerAccount); spent != 1230 {
		t.Fatalf("buyer spent %d fen, want 1230", spent)
	}

	// The same over HTTP, as the demo pays: 200 for a good string, 400 for a bad one.
	e.merchant.expect("FGAPP000002_aa", 99)
	s2, err := e.client.AppPayOrderString(alipay.Trade{OutTradeNo: "FGAPP000002_aa", AmountCents: 99, Subject: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := postForm(t, e.base+"/sdk/app", url.Values{"order_string": {tampered}}); code != http.StatusBadRequest {
		t.Fatalf("tampered over HTTP: %d %s", code, body)
	}
	if code, body := postForm(t, e.base+"/sdk/app", url.Values{"order_string": {s2}}); code != http.StatusOK || !strings.Contains(body, "FGAPP000002_aa") {
		t.Fatalf("over HTTP: %d %s", code, body)
	}
	if err := waitNotify(t, e.sb, "FGAPP000002_aa"); err != nil {
		t.Fatal(err)
	}
}

// TestWeChatAppPay: the WeChat SDK's payment of an APP trade with the
// parameters the real client signed.
func TestWeChatAppPay(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	const no = "FGWXAPP0001"
	e.merchant.expect(no, 500)
	res, err := e.client.Prepay(ctx, wechat.App, wechat.PrepayRequest{OutTradeNo: no, Description: "app", AmountCents: 500})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.client.AppPayParams(res.PrepayID)
	if err != nil {
		t.Fatal(err)
	}
	before := e.wallets.Balance(BuyerAccount)
	forged := p
	forged.NonceStr = p.NonceStr + "x" // the signature no longer covers it
	otherPrepay := p
	otherPrepay.PrepayID = "wx_unknown"
	otherKey := p
	otherKey.Sign = signWith(t, wxTestKeys().other, p.AppID, p.Timestamp, p.NonceStr, p.PrepayID)
	for name, bad := range map[string]wechat.AppPayParams{"forged": forged, "other prepay": otherPrepay, "other key": otherKey} {
		if _, err := e.sb.PayApp(bad); !errors.Is(err, errClientParams) {
			t.Errorf("%s: err = %v, want the parameters refused", name, err)
		}
	}
	if e.wallets.Balance(BuyerAccount) != before {
		t.Fatal("refused parameters moved money")
	}
	if got, err := e.sb.PayApp(p); err != nil || got != no {
		t.Fatalf("PayApp = %q, %v", got, err)
	}
	if err := waitNotify(t, e.sb, no); err != nil {
		t.Fatal(err)
	}
	seen := e.merchant.seen()
	if seen.credited[no] != 1 || len(seen.notices) != 1 {
		t.Fatalf("credited %v, notices %d", seen.credited, len(seen.notices))
	}
	if tx := seen.notices[0].raw.(*wechat.Transaction); tx.TradeType != "APP" || tx.TotalCents != 500 {
		t.Fatalf("notified %+v", tx)
	}
	if _, err := e.sb.PayApp(p); err == nil || errors.Is(err, errClientParams) {
		t.Fatalf("paying again: %v, want a trade that is not payable", err)
	}
}

// TestWeChatJSAPIPay: wx.requestPayment pays only for the payer the trade
// was opened for, and only with the merchant's signature; over HTTP too.
func TestWeChatJSAPIPay(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	const no = "FGWXJS00001"
	e.merchant.expect(no, 700)
	res, err := e.client.Prepay(ctx, wechat.JSAPI, wechat.PrepayRequest{OutTradeNo: no, Description: "mini", AmountCents: 700, OpenID: "oUserA"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.client.JSAPIPayParams(res.PrepayID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sb.PayJSAPI("oUserB", p); !errors.Is(err, errClientParams) {
		t.Fatalf("another payer: %v, want refused", err)
	}
	if _, err := e.sb.PayApp(wechat.AppPayParams{AppID: p.AppID, PartnerID: DevWeChatMchID, PrepayID: res.PrepayID,
		Package: wechat.PackageSignWXPay, NonceStr: p.NonceStr, Timestamp: p.TimeStamp,
		Sign: signWith(t, wxTestKeys().merchant, p.AppID, p.TimeStamp, p.NonceStr, res.PrepayID)}); !errors.Is(err, errClientParams) {
		t.Fatalf("a JSAPI trade paid as APP: %v, want refused", err)
	}
	forged := p
	forged.Package = "prepay_id=" + res.PrepayID + "x"
	body, _ := json.Marshal(forged)
	if code, msg := postJSON(t, e.base+"/sdk/jsapi?openid=oUserA", body); code != http.StatusBadRequest {
		t.Fatalf("forged over HTTP: %d %s", code, msg)
	}
	body, _ = json.Marshal(p)
	if code, msg := postJSON(t, e.base+"/sdk/jsapi?openid=oUserA", body); code != http.StatusOK || !strings.Contains(msg, no) {
		t.Fatalf("over HTTP: %d %s", code, msg)
	}
	if err := waitNotify(t, e.sb, no); err != nil {
		t.Fatal(err)
	}
	seen := e.merchant.seen()
	if seen.credited[no] != 1 {
		t.Fatalf("credited %v", seen.credited)
	}
	if tx := seen.notices[0].raw.(*wechat.Transaction); tx.TradeType != "JSAPI" || tx.PayerOpenID != "oUserA" {
		t.Fatalf("notified %+v", tx)
	}
}

// TestWeChatCode2Session: a login code works once, within 5 minutes, for
// the right app secret; the real client reads the openid and keeps no
// session_key.
func TestWeChatCode2Session(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	e.sb.cfg.AppSecret = "mini-program-secret-0123456789ab"
	login, err := wechat.NewLogin(wechat.MiniProgramConfig{AppID: DevWeChatAppID, AppSecret: e.sb.cfg.AppSecret, Host: e.base})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code := e.sb.LoginCode("oUserA")
	s, err := login.Code2Session(ctx, code)
	if err != nil || s.OpenID != "oUserA" {
		t.Fatalf("Code2Session = %+v, %v", s, err)
	}
	if _, err := login.Code2Session(ctx, code); !errors.Is(err, wechat.ErrLoginCode) {
		t.Fatalf("used code: %v", err)
	}
	if _, err := login.Code2Session(ctx, "never-issued"); !errors.Is(err, wechat.ErrLoginCode) {
		t.Fatalf("unknown code: %v", err)
	}
	stale := e.sb.LoginCode("oUserA")
	e.clock.Advance(6 * time.Minute)
	if _, err := login.Code2Session(ctx, stale); !errors.Is(err, wechat.ErrLoginCode) {
		t.Fatalf("expired code: %v", err)
	}
	wrong, err := wechat.NewLogin(wechat.MiniProgramConfig{AppID: DevWeChatAppID, AppSecret: "not-the-secret", Host: e.base})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Code2Session(ctx, e.sb.LoginCode("oUserA")); err == nil || errors.Is(err, wechat.ErrLoginCode) {
		t.Fatalf("wrong secret: %v, want a configuration error", err)
	}
	// wx.login over HTTP, as the demo logs in.
	code2, msg := postJSON(t, e.base+"/sdk/login?openid=oUserC", nil)
	var got struct{ Code string }
	if code2 != http.StatusOK || json.Unmarshal([]byte(msg), &got) != nil {
		t.Fatalf("/sdk/login: %d %s", code2, msg)
	}
	if s, err := login.Code2Session(ctx, got.Code); err != nil || s.OpenID != "oUserC" {
		t.Fatalf("code from /sdk/login: %+v, %v", s, err)
	}
}

func postForm(t *testing.T, u string, form url.Values) (int, string) {
	t.Helper()
	resp, err := http.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func postJSON(t *testing.T, u string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(u, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signWith signs the fields the client-side way (each followed by a
// newline) with key.
func signWith(t *testing.T, key *rsa.PrivateKey, fields ...string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(strings.Join(fields, "\n") + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// TestWeChatSubscribeMessage: the real Messenger against the sandbox: one
// access_token serves many messages; a token WeChat ended early is replaced
// and the message still goes; a user who did not accept the template gets
// nothing and the sender learns why.
func TestWeChatSubscribeMessage(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	e.sb.cfg.AppSecret = "mini-program-secret-0123456789ab"
	m, err := wechat.NewMessenger(wechat.MiniProgramConfig{AppID: DevWeChatAppID, AppSecret: e.sb.cfg.AppSecret, Host: e.base})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	msg := func(n string) wechat.SubscribeMessage {
		return wechat.SubscribeMessage{ToUser: "oUserA", TemplateID: DevPaidTemplateID, Page: "pages/order?id=" + n,
			Data: map[string]string{"character_string1": n}}
	}
	if err := m.Send(ctx, msg("1")); !errors.Is(err, wechat.ErrNotSubscribed) {
		t.Fatalf("not subscribed: %v", err)
	}
	for range 3 {
		e.sb.Subscribe("oUserA", DevPaidTemplateID)
	}
	for _, n := range []string{"2", "3"} {
		if err := m.Send(ctx, msg(n)); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.sb.TokensIssued(); n != 1 {
		t.Fatalf("%d tokens issued for two messages, want 1 (cached)", n)
	}
	e.sb.ExpireAccessToken()
	if err := m.Send(ctx, msg("4")); err != nil {
		t.Fatalf("after the token expired: %v", err)
	}
	if n := e.sb.TokensIssued(); n != 2 {
		t.Fatalf("%d tokens issued, want 2 (one refresh)", n)
	}
	got := e.sb.Messages()
	if len(got) != 3 || got[0].Data["character_string1"] != "2" || got[2].Data["character_string1"] != "4" || got[2].Page != "pages/order?id=4" {
		t.Fatalf("messages %+v", got)
	}
	if err := m.Send(ctx, msg("5")); !errors.Is(err, wechat.ErrNotSubscribed) {
		t.Fatalf("subscription used up: %v", err)
	}
	wrong, _ := wechat.NewMessenger(wechat.MiniProgramConfig{AppID: DevWeChatAppID, AppSecret: "wrong", Host: e.base})
	if err := wrong.Send(ctx, msg("6")); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong secret: %v, want an error that does not repeat the secret", err)
	}
}
