package alipay

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseNotifyValid(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	p := notifyParams()
	body := signNotify(t, p, k.alipay)
	n, err := c.ParseNotify([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if n.OutTradeNo != "O20240102000001" || n.TradeNo != "2024010222001411111111111111" || n.TotalCents != 1230 ||
		!n.Paid || n.TradeStatus != StatusTradeSuccess || n.AppID != testAppID || n.SellerID != testSellerID ||
		n.NotifyID != p.Get("notify_id") {
		t.Fatalf("notification %+v", n)
	}
	if want := time.Date(2024, 1, 2, 3, 4, 59, 0, time.UTC); !n.GmtPayment.Equal(want) {
		t.Fatalf("GmtPayment %v, want %v", n.GmtPayment, want)
	}
	// Values arrive as decoded, untrimmed: the padded body and the '+' in subject survive.
	if n.Raw.Get("body") != "  padded value, never trimmed  " || n.Raw.Get("subject") != "秒杀 iPhone 15+ 256G" {
		t.Fatalf("raw values changed: %q %q", n.Raw.Get("body"), n.Raw.Get("subject"))
	}
}

// TestParseNotifySignedByOpenssl: a notify whose sign comes from openssl over
// the hand-written rsaCheckV1 string (no sign, no sign_type, no empty values).
func TestParseNotifySignedByOpenssl(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	const content = "app_id=2021000000000000&notify_id=N1&out_trade_no=O1&seller_id=2088000000000001&subject=a b+c&total_amount=0.01&trade_no=T1&trade_status=TRADE_FINISHED"
	p := url.Values{"app_id": {testAppID}, "notify_id": {"N1"}, "out_trade_no": {"O1"}, "seller_id": {testSellerID},
		"subject": {"a b+c"}, "total_amount": {"0.01"}, "trade_no": {"T1"}, "trade_status": {"TRADE_FINISHED"},
		"sign_type": {"RSA2"}, "buyer_id": {""}}
	p.Set("sign", opensslSign(t, k.alipayPEM, []byte(content)))
	n, err := c.ParseNotify([]byte(p.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	if !n.Paid || n.TotalCents != 1 || !n.GmtPayment.IsZero() {
		t.Fatalf("notification %+v", n)
	}
}

func TestParseNotifyRejections(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	valid := signNotify(t, notifyParams(), k.alipay)

	resign := func(mutate func(url.Values)) string {
		p := notifyParams()
		mutate(p)
		return signNotify(t, p, k.alipay)
	}
	tamper := func(key, value string) string {
		p, err := url.ParseQuery(valid)
		if err != nil {
			t.Fatal(err)
		}
		p.Set(key, value)
		return p.Encode()
	}
	forged := func() string {
		p, _ := url.ParseQuery(valid)
		sig := []byte(p.Get("sign"))
		sig[10] ^= 1
		if sig[10] == '+' || sig[10] == '/' || sig[10] == '=' {
			sig[10] = 'A'
		}
		p.Set("sign", string(sig))
		return p.Encode()
	}
	wrongKey := func() string {
		return signNotify(t, notifyParams(), k.app) // the merchant's own key, not Alipay's
	}

	for _, tc := range []struct {
		name string
		body string
		want error
	}{
		{"forged signature", forged(), ErrBadSignature},
		{"signed with the wrong key", wrongKey(), ErrBadSignature},
		{"tampered amount", tamper("total_amount", "0.01"), ErrBadSignature},
		{"tampered status", tamper("trade_status", "TRADE_SUCCESS "), ErrBadSignature},
		{"trimmed value", tamper("body", "padded value, never trimmed"), ErrBadSignature},
		{"added parameter", valid + "&extra=1", ErrBadSignature},
		{"missing sign", strings.Replace(valid, "sign=", "signx=", 1), ErrBadSignature},
		{"sign type RSA", tamper("sign_type", "RSA"), ErrBadSignature},
		{"wrong app id", resign(func(p url.Values) { p.Set("app_id", "2021999999999999") }), ErrWrongApp},
		{"wrong seller id", resign(func(p url.Values) { p.Set("seller_id", "2088999999999999") }), ErrWrongApp},
		{"repeated parameter", valid + "&total_amount=0.01", ErrMalformed},
		{"bad escape", valid + "&x=%zz", ErrMalformed},
		{"amount with 3 decimals", resign(func(p url.Values) { p.Set("total_amount", "12.300") }), ErrMalformed},
		{"negative amount", resign(func(p url.Values) { p.Set("total_amount", "-12.30") }), ErrMalformed},
		{"no out_trade_no", resign(func(p url.Values) { p.Del("out_trade_no") }), ErrMalformed},
		{"bad gmt_payment", resign(func(p url.Values) { p.Set("gmt_payment", "2024-01-02T11:04:59Z") }), ErrMalformed},
		{"gbk charset", resign(func(p url.Values) { p.Set("charset", "GBK") }), ErrMalformed},
		{"empty body", "", ErrBadSignature},
	} {
		n, err := c.ParseNotify([]byte(tc.body))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: ParseNotify = %+v, %v; want %v", tc.name, n, err, tc.want)
		}
	}
}

// TestParseNotifyPlusInSign: base64 signatures contain '+', which a form
// body carries as %2B. Decoding once keeps it; a '+' sent unencoded becomes a
// space under form decoding and must fail rather than be "repaired".
func TestParseNotifyPlusInSign(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	var p url.Values
	var body string
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("no signature with '+' in 1000 tries")
		}
		p = notifyParams()
		p.Set("notify_id", "N"+strconv.Itoa(i))
		body = signNotify(t, p, k.alipay)
		if strings.Contains(p.Get("sign"), "+") {
			break
		}
	}
	if !strings.Contains(body, "%2B") {
		t.Fatalf("encoded body has no %%2B: %s", body)
	}
	n, err := c.ParseNotify([]byte(body))
	if err != nil {
		t.Fatalf("notify with '+' in sign: %v", err)
	}
	if n.Raw.Get("sign") != p.Get("sign") {
		t.Fatal("sign changed in decoding")
	}
	// Decoding the sign a second time would have turned '+' into ' '.
	if twice, _ := url.QueryUnescape(n.Raw.Get("sign")); twice == p.Get("sign") {
		t.Fatal("test signature is not sensitive to double decoding")
	}
	unencoded := strings.Replace(body, "sign="+url.QueryEscape(p.Get("sign")), "sign="+strings.ReplaceAll(url.QueryEscape(p.Get("sign")), "%2B", "+"), 1)
	if unencoded == body {
		t.Fatal("failed to build the unencoded variant")
	}
	if _, err := c.ParseNotify([]byte(unencoded)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("raw '+' in sign: err = %v, want ErrBadSignature", err)
	}
}

func TestParseNotifyWithoutSellerIDConfigured(t *testing.T) {
	k := loadKeys(t)
	c, err := New(Config{AppID: testAppID, PrivateKey: k.app, AlipayPublicKey: k.alipayPub, Gateway: "https://gw.example.com/gateway.do"})
	if err != nil {
		t.Fatal(err)
	}
	p := notifyParams()
	p.Set("seller_id", "2088999999999999")
	if _, err := c.ParseNotify([]byte(signNotify(t, p, k.alipay))); err != nil {
		t.Fatalf("seller_id not configured, any seller accepted: %v", err)
	}
}

// FuzzParseNotify: ParseNotify never panics, fails only with its sentinels,
// and whatever it accepts is consistent.
func FuzzParseNotify(f *testing.F) {
	k := loadKeys(f)
	c := newTestClient(f, k, "https://gw.example.com/gateway.do")
	f.Add([]byte(signNotify(f, notifyParams(), k.alipay)))
	f.Add([]byte("sign=%2B%2B&app_id=2021000000000000"))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := c.ParseNotify(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrWrongApp) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if n.AppID != testAppID || n.SellerID != testSellerID || n.TotalCents < 0 || n.OutTradeNo == "" || n.Raw == nil {
			t.Fatalf("accepted an inconsistent notify: %+v", n)
		}
	})
}
