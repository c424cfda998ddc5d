package wechat

import (
	"fmt"
	"regexp"
	"testing"
	"time"
)

var nonceRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestAppPayParamsKnownAnswer checks the APP SDK parameters: the fixed
// fields, and a sign equal to openssl's signature by the merchant key over
// appid\ntimestamp\nnoncestr\nprepayid\n written out here.
func TestAppPayParamsKnownAnswer(t *testing.T) {
	v := loadVectors(t)
	c := newTestClient(t, "https://api.mch.weixin.qq.com", time.Unix(1704081606, 0))
	const prepay = "wx201410272009395522657a690389285100"
	p, err := c.AppPayParams(prepay)
	if err != nil {
		t.Fatal(err)
	}
	if p.AppID != v.AppID || p.PartnerID != v.MchID || p.PrepayID != prepay || p.Package != "Sign=WXPay" || p.Timestamp != "1704081606" {
		t.Fatalf("params %+v", p)
	}
	if !nonceRe.MatchString(p.NonceStr) {
		t.Fatalf("noncestr %q is not 32 hex characters", p.NonceStr)
	}
	msg := fmt.Sprintf("%s\n1704081606\n%s\n%s\n", v.AppID, p.NonceStr, prepay)
	if want := opensslSign(t, "merchant_key.pem", []byte(msg)); p.Sign != want {
		t.Fatalf("sign differs from openssl's over %q\n got %s\nwant %s", msg, p.Sign, want)
	}
	q, err := c.AppPayParams(prepay)
	if err != nil {
		t.Fatal(err)
	}
	if q.NonceStr == p.NonceStr {
		t.Fatal("two asks share a nonce")
	}
}

// TestJSAPIPayParamsKnownAnswer checks the wx.requestPayment parameters the
// same way, over appId\ntimeStamp\nnonceStr\npackage\n.
func TestJSAPIPayParamsKnownAnswer(t *testing.T) {
	v := loadVectors(t)
	c := newTestClient(t, "https://api.mch.weixin.qq.com", time.Unix(1704081606, 0))
	const prepay = "wx201410272009395522657a690389285100"
	p, err := c.JSAPIPayParams(prepay)
	if err != nil {
		t.Fatal(err)
	}
	if p.AppID != v.AppID || p.Package != "prepay_id="+prepay || p.SignType != "RSA" || p.TimeStamp != "1704081606" {
		t.Fatalf("params %+v", p)
	}
	if !nonceRe.MatchString(p.NonceStr) {
		t.Fatalf("nonceStr %q is not 32 hex characters", p.NonceStr)
	}
	msg := fmt.Sprintf("%s\n1704081606\n%s\nprepay_id=%s\n", v.AppID, p.NonceStr, prepay)
	if want := opensslSign(t, "merchant_key.pem", []byte(msg)); p.PaySign != want {
		t.Fatalf("paySign differs from openssl's over %q\n got %s\nwant %s", msg, p.PaySign, want)
	}
}

// BenchmarkJSAPIPayParams is the cost an app or jsapi pay answer adds: one
// RSA-2048 signature, made on every ask.
func BenchmarkJSAPIPayParams(b *testing.B) {
	c := newTestClient(b, "https://api.mch.weixin.qq.com", time.Unix(1704081606, 0))
	for b.Loop() {
		if _, err := c.JSAPIPayParams("wx201410272009395522657a690389285100"); err != nil {
			b.Fatal(err)
		}
	}
}
