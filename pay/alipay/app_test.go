package alipay

import (
	"net/url"
	"strings"
	"testing"
)

// The canonical string of the app pay order below, written out by hand:
// sorted keys, raw values, biz_content with the app product code, no
// return_url (the SDK returns to the app, not to a page).
const appPayContent = `app_id=2021000000000000&biz_content={"out_trade_no":"O20240102000001_aa","total_amount":"12.30","subject":"秒杀 iPhone 15+ 256G","product_code":"QUICK_MSECURITY_PAY"}&charset=utf-8&format=JSON&method=alipay.trade.app.pay&notify_url=https://m.example.com/v1/notify/alipay&sign_type=RSA2&timestamp=2024-01-02 11:04:05&version=1.0`

// TestAppPayOrderStringKnownAnswer checks the order string an app gives the
// Alipay SDK: its sign is openssl's signature of the hand-written canonical
// string, openssl verifies it with the app's public key, and the string
// itself carries every value URL-encoded.
func TestAppPayOrderStringKnownAnswer(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	s, err := c.AppPayOrderString(Trade{OutTradeNo: "O20240102000001_aa", AmountCents: 1230, Subject: "秒杀 iPhone 15+ 256G"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := url.ParseQuery(s)
	if err != nil {
		t.Fatalf("order string is not a query string: %v", err)
	}
	if got := RequestContent(p); got != appPayContent {
		t.Fatalf("canonical string\n got %s\nwant %s", got, appPayContent)
	}
	want := opensslSign(t, k.appKeyPEM, []byte(appPayContent))
	if p.Get("sign") != want {
		t.Fatalf("sign differs from openssl's\n got %s\nwant %s", p.Get("sign"), want)
	}
	if !opensslVerify(t, k.appPubPEM, []byte(appPayContent), p.Get("sign")) {
		t.Fatal("openssl rejects the order string's sign with the app's public key")
	}
	// Transport encoding: every value escaped, the signature's '+' and '/'
	// included, and no raw space, brace or quote left in the string.
	for _, frag := range []string{"sign=" + url.QueryEscape(want), "timestamp=2024-01-02+11%3A04%3A05", "biz_content=%7B%22out_trade_no%22"} {
		if !strings.Contains(s, frag) {
			t.Errorf("order string lacks %q:\n%s", frag, s)
		}
	}
	if strings.ContainsAny(s, ` {}"`) {
		t.Errorf("order string carries unescaped characters: %s", s)
	}
	if p.Has("return_url") {
		t.Error("an app order carries return_url")
	}
}

func TestAppPayOrderStringRefusesBadTrade(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	for _, tr := range []Trade{
		{OutTradeNo: "bad-no", AmountCents: 1, Subject: "x"},
		{OutTradeNo: "O1", AmountCents: 0, Subject: "x"},
		{OutTradeNo: "O1", AmountCents: 1, Subject: "a=b"},
	} {
		if s, err := c.AppPayOrderString(tr); err == nil {
			t.Errorf("%+v: order string %q, want an error", tr, s)
		}
	}
}
