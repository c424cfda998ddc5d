package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// inAppAnswer is the answer of POST /v1/orders/{id}/pay for an SDK method.
type inAppAnswer struct {
	Channel     string                 `json:"channel"`
	Method      string                 `json:"method"`
	OutTradeNo  string                 `json:"out_trade_no"`
	PayURL      string                 `json:"pay_url"`
	CodeURL     string                 `json:"code_url"`
	OrderString string                 `json:"order_string"`
	AppParams   *wechat.AppPayParams   `json:"app_params"`
	JSAPIParams *wechat.JSAPIPayParams `json:"jsapi_params"`
}

// payBy opens the order's trade on channel by method as alice.
func (p *payHarness) payBy(orderID, channel, method string) inAppAnswer {
	p.t.Helper()
	status, raw := p.doRaw("POST", "/v1/orders/"+orderID+"/pay", p.token("alice", false, time.Hour),
		fmt.Sprintf(`{"channel":%q,"method":%q}`, channel, method))
	var a inAppAnswer
	if status != 200 || json.Unmarshal(raw, &a) != nil {
		p.t.Fatalf("pay %s on %s by %s: %d %s", orderID, channel, method, status, raw)
	}
	if a.Channel != channel || a.Method != method || a.PayURL != "" || a.CodeURL != "" {
		p.t.Fatalf("pay by %s: %s", method, raw)
	}
	return a
}

// login logs alice in to the mini program as openID: the sandbox's wx.login
// issues the code, POST /v1/wechat/login exchanges it.
func (p *payHarness) login(user, openID string) {
	p.t.Helper()
	code := p.dev.WeChat.LoginCode(openID)
	status, raw := p.doRaw("POST", "/v1/wechat/login", p.token(user, false, time.Hour), fmt.Sprintf(`{"code":%q}`, code))
	if status != 200 || !strings.Contains(string(raw), `"openid":"`+openID+`"`) {
		p.t.Fatalf("login: %d %s", status, raw)
	}
	if strings.Contains(string(raw), "session") {
		p.t.Fatalf("login answer carries the session key: %s", raw)
	}
	// A code works once.
	status, body := p.do("POST", "/v1/wechat/login", p.token(user, false, time.Hour), fmt.Sprintf(`{"code":%q}`, code))
	if status != 400 || errCode(body) != "login_code_invalid" {
		p.t.Fatalf("login with a used code: %d %v", status, body)
	}
}

// inAppMethod is one SDK method: how the payer's client pays the answer in
// the sandbox, with options (duplicates, a forged notify).
type inAppMethod struct {
	channel, method string
	check           func(t *testing.T, a inAppAnswer)
	sdkPay          func(a inAppAnswer, opts ...sandbox.PayOption) (string, error)
}

func inAppMethods(p *payHarness) []inAppMethod {
	return []inAppMethod{
		{pay.ChannelAlipay, settle.MethodApp,
			func(t *testing.T, a inAppAnswer) {
				if !strings.Contains(a.OrderString, "method=alipay.trade.app.pay") || !strings.Contains(a.OrderString, "&sign=") ||
					a.AppParams != nil || a.JSAPIParams != nil {
					t.Fatalf("answer %+v", a)
				}
			},
			func(a inAppAnswer, opts ...sandbox.PayOption) (string, error) {
				return p.dev.Alipay.PayOrderString(a.OrderString, opts...)
			}},
		{pay.ChannelWeChat, settle.MethodApp,
			func(t *testing.T, a inAppAnswer) {
				ap := a.AppParams
				if ap == nil || ap.AppID != sandbox.DevWeChatAppID || ap.PartnerID != sandbox.DevWeChatMchID || ap.PrepayID == "" ||
					ap.Package != "Sign=WXPay" || ap.NonceStr == "" || ap.Timestamp == "" || ap.Sign == "" || a.OrderString != "" {
					t.Fatalf("answer %+v", a)
				}
			},
			func(a inAppAnswer, opts ...sandbox.PayOption) (string, error) {
				return p.dev.WeChat.PayApp(*a.AppParams, opts...)
			}},
		{pay.ChannelWeChat, settle.MethodJSAPI,
			func(t *testing.T, a inAppAnswer) {
				jp := a.JSAPIParams
				if jp == nil || jp.AppID != sandbox.DevWeChatAppID || !strings.HasPrefix(jp.Package, "prepay_id=") ||
					jp.SignType != "RSA" || jp.NonceStr == "" || jp.TimeStamp == "" || jp.PaySign == "" {
					t.Fatalf("answer %+v", a)
				}
			},
			func(a inAppAnswer, opts ...sandbox.PayOption) (string, error) {
				return p.dev.WeChat.PayJSAPI("oAlice", *a.JSAPIParams, opts...)
			}},
	}
}

// TestInAppPayEndToEnd: for each SDK method over HTTP, grab, pay by the
// method, the sandbox's SDK side verifies what the answer carries and pays;
// three copies of the notify credit the merchant once and the order is
// paid. A forged notify of another order is refused and changes nothing.
func TestInAppPayEndToEnd(t *testing.T) {
	p := newPayHarness(t, nil, 1e-5)
	p.login("alice", "oAlice")
	var credited float64
	for i, m := range inAppMethods(p) {
		t.Run(m.channel+"/"+m.method, func(t *testing.T) {
			oid := p.order(fmt.Sprintf("inapp%d", i), 800, 1)
			a := p.payBy(oid, m.channel, m.method)
			m.check(t, a)
			if again := p.payBy(oid, m.channel, m.method); again.OutTradeNo != a.OutTradeNo {
				t.Fatalf("paying again opened another trade: %s, then %s", a.OutTradeNo, again.OutTradeNo)
			}
			if qr := p.pay(oid, m.channel); qr == a.OutTradeNo {
				t.Fatalf("the qr trade and the %s trade share %s", m.method, qr)
			}
			no, err := m.sdkPay(a, sandbox.WithDuplicates(3))
			if err != nil || no != a.OutTradeNo {
				t.Fatalf("SDK pay: %q, %v", no, err)
			}
			sim := p.sim(m.channel)
			if err := sim.Wait(waitCtx(t), no); err != nil {
				t.Fatal(err)
			}
			acked := 0
			for _, d := range sim.Deliveries(no) {
				if d.Acked {
					acked++
				}
			}
			if acked != 3 {
				t.Fatalf("%d of 3 duplicate notifies acknowledged", acked)
			}
			credited += 800
			if s := p.orderStatus(oid); s != "paid" {
				t.Fatalf("order status %q, want paid", s)
			}
			if b := p.balance("m"); b != credited {
				t.Fatalf("merchant balance %v, want %v", b, credited)
			}
			if _, err := m.sdkPay(a); err == nil {
				t.Fatal("the SDK paid a paid trade again")
			}

			// Forged: paid in the sandbox, but its notify's signature is wrong.
			forged := p.order(fmt.Sprintf("inappforged%d", i), 300, 1)
			fa := p.payBy(forged, m.channel, m.method)
			if _, err := m.sdkPay(fa, sandbox.WithForgedSignature()); err != nil {
				t.Fatal(err)
			}
			if err := sim.Wait(waitCtx(t), fa.OutTradeNo); err == nil {
				t.Fatal("a forged notify was acknowledged")
			}
			if s := p.orderStatus(forged); s != "pending" {
				t.Fatalf("order status %q after a forged notify, want pending", s)
			}
			if b := p.balance("m"); b != credited {
				t.Fatalf("merchant balance %v after a forged notify, want %v", b, credited)
			}
		})
	}
}

// TestJSAPINeedsLogin: paying by jsapi before the mini program login is 409
// login_required and opens no trade; after it the trade is opened for the
// logged-in openid only, and the openid outlives the server (it is in
// MySQL).
func TestJSAPINeedsLogin(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	oid := p.order("jsapi1", 600, 1)
	status, body := p.do("POST", "/v1/orders/"+oid+"/pay", p.token("alice", false, time.Hour), `{"channel":"wechat","method":"jsapi"}`)
	if status != 409 || errCode(body) != "login_required" {
		t.Fatalf("jsapi before login: %d %v", status, body)
	}
	if n := p.paymentsOf(oid); n != 0 {
		t.Fatalf("%d payments recorded by a refused pay", n)
	}
	for _, bad := range []string{`{}`, `{"code":""}`, `{"code":"never-issued"}`} {
		status, body := p.do("POST", "/v1/wechat/login", p.token("alice", false, time.Hour), bad)
		if status != 400 {
			t.Fatalf("login %s: %d %v", bad, status, body)
		}
	}
	if status, _ := p.do("POST", "/v1/wechat/login", "", `{"code":"x"}`); status != 401 {
		t.Fatalf("login without a token: %d", status)
	}
	p.login("alice", "oAlice")
	a := p.payBy(oid, pay.ChannelWeChat, settle.MethodJSAPI)
	if _, err := p.dev.WeChat.PayJSAPI("oMallory", *a.JSAPIParams); err == nil {
		t.Fatal("another WeChat user paid alice's jsapi trade")
	}
	if _, err := p.dev.WeChat.PayJSAPI("oAlice", *a.JSAPIParams); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.WeChat.Wait(waitCtx(t), a.OutTradeNo); err != nil {
		t.Fatal(err)
	}
	if s := p.orderStatus(oid); s != "paid" {
		t.Fatalf("order %q, want paid", s)
	}
	// A fresh Books on the same database, as after a restart, knows alice.
	if id, err := (&settle.Books{DB: p.db}).PayerID(context.Background(), "alice", pay.ChannelWeChat); err != nil || id != "oAlice" {
		t.Fatalf("payer id after restart: %q, %v", id, err)
	}
	// A later login as another WeChat account replaces it.
	p.login("alice", "oAlice2")
	if id, _ := (&settle.Books{DB: p.db}).PayerID(context.Background(), "alice", pay.ChannelWeChat); id != "oAlice2" {
		t.Fatalf("payer id after a second login: %q", id)
	}
}

// TestPayMethodRefusals: an unknown method and one the channel lacks are
// 400 with their codes and record nothing.
func TestPayMethodRefusals(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	oid := p.order("methods1", 100, 1)
	for _, c := range []struct{ body, code string }{
		{`{"channel":"alipay","method":"bogus"}`, "bad_request"},
		{`{"channel":"wechat","method":"QR"}`, "bad_request"},
		{`{"channel":"alipay","method":"jsapi"}`, "method_unsupported"},
	} {
		status, body := p.do("POST", "/v1/orders/"+oid+"/pay", p.token("alice", false, time.Hour), c.body)
		if status != 400 || errCode(body) != c.code {
			t.Fatalf("%s: %d %v, want 400 %s", c.body, status, body, c.code)
		}
	}
	if n := p.paymentsOf(oid); n != 0 {
		t.Fatalf("%d payments recorded by refused requests", n)
	}
	// No method is qr, as before methods existed.
	status, body := p.do("POST", "/v1/orders/"+oid+"/pay", p.token("alice", false, time.Hour), `{"channel":"alipay"}`)
	if status != 200 || body["method"] != "qr" || body["pay_url"] == nil {
		t.Fatalf("default method: %d %v", status, body)
	}
}

func (p *payHarness) paymentsOf(orderID string) int {
	p.t.Helper()
	var n int
	if err := p.db.QueryRow("SELECT COUNT(*) FROM payments WHERE order_id = ?", orderID).Scan(&n); err != nil {
		p.t.Fatal(err)
	}
	return n
}

// TestPaidMessageToMiniProgramBuyer: once an order's payment is committed,
// a buyer who logged in with the mini program and accepted the template
// gets one "your order is paid" subscribe message, whatever channel paid
// and however many copies of the notify came; the access_token is cached
// and replaced when WeChat ends it; a buyer who did not accept gets none.
func TestPaidMessageToMiniProgramBuyer(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	p.login("alice", "oAlice")
	wx := p.dev.WeChat
	messagesFor := func(oid string) int {
		n := 0
		for _, m := range wx.Messages() {
			if m.Data["character_string1"] == oid {
				n++
			}
		}
		return n
	}
	payAndWait := func(oid, channel string, opts ...sandbox.PayOption) {
		t.Helper()
		otn := p.pay(oid, channel)
		if err := p.sim(channel).Pay(otn, opts...); err != nil {
			t.Fatal(err)
		}
		if err := p.sim(channel).Wait(waitCtx(t), otn); err != nil {
			t.Fatal(err)
		}
	}
	awaitMessage := func(oid string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() (bool, string) {
			return messagesFor(oid) > 0, fmt.Sprintf("no message for %s; sent %+v", oid, wx.Messages())
		})
	}

	wx.Subscribe("oAlice", sandbox.DevPaidTemplateID)
	o1 := p.order("msg1", 800, 1)
	payAndWait(o1, pay.ChannelAlipay, sandbox.WithDuplicates(3))
	awaitMessage(o1)
	m := wx.Messages()[0]
	if m.ToUser != "oAlice" || m.TemplateID != sandbox.DevPaidTemplateID || m.Data["amount2"] != "8.00元" ||
		m.Data["time3"] == "" || !strings.Contains(m.Page, o1) {
		t.Fatalf("message %+v", m)
	}

	// WeChat ends the token early: the next message gets a fresh one.
	wx.ExpireAccessToken()
	wx.Subscribe("oAlice", sandbox.DevPaidTemplateID)
	o2 := p.order("msg2", 200, 1)
	payAndWait(o2, pay.ChannelWeChat)
	awaitMessage(o2)
	if n := wx.TokensIssued(); n != 2 {
		t.Fatalf("%d access tokens issued, want 2 (one cached for o1, one after the expiry)", n)
	}

	// alice's subscription is used up: o3 is paid, and no message goes.
	// bob's order after it is the marker: one sender goroutine sends in
	// order, so once bob's message is there, o3's attempt is over.
	o3 := p.order("msg3", 100, 1)
	payAndWait(o3, pay.ChannelWeChat)
	p.login("bob", "oBob")
	wx.Subscribe("oBob", sandbox.DevPaidTemplateID)
	if status, body := p.do("POST", "/v1/sales/msg3/grab", p.token("bob", false, time.Hour), ""); status != 200 {
		t.Fatalf("bob's grab: %d %v", status, body)
	} else {
		ob := body["order_id"].(string)
		status, pb := p.do("POST", "/v1/orders/"+ob+"/pay", p.token("bob", false, time.Hour), `{"channel":"wechat"}`)
		if status != 200 {
			t.Fatalf("bob's pay: %d %v", status, pb)
		}
		otn := pb["out_trade_no"].(string)
		if err := wx.Pay(otn); err != nil {
			t.Fatal(err)
		}
		awaitMessage(ob)
	}
	if n1, n2, n3 := messagesFor(o1), messagesFor(o2), messagesFor(o3); n1 != 1 || n2 != 1 || n3 != 0 {
		t.Fatalf("messages for o1, o2, o3: %d %d %d, want 1 1 0", n1, n2, n3)
	}
	for _, oid := range []string{o1, o2, o3} {
		if s := p.orderStatus(oid); s != "paid" {
			t.Fatalf("order %s %q, want paid", oid, s)
		}
	}
}
