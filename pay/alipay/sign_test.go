package alipay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// The canonical string of the precreate request below, written out by hand:
// sorted keys, raw (not URL-encoded) values, sign_type and biz_content in,
// sign out, timestamp in Shanghai time.
const precreateContent = `app_id=2021000000000000&biz_content={"out_trade_no":"O20240102000001","total_amount":"12.30","subject":"秒杀 iPhone 15+ 256G"}&charset=utf-8&format=JSON&method=alipay.trade.precreate&notify_url=https://m.example.com/v1/notify/alipay&sign_type=RSA2&timestamp=2024-01-02 11:04:05&version=1.0`

// TestRequestSignatureKnownAnswer captures a real Precreate request and checks
// its sign against openssl's signature of the hand-written canonical string.
func TestRequestSignatureKnownAnswer(t *testing.T) {
	k := loadKeys(t)
	want := opensslSign(t, k.appKeyPEM, []byte(precreateContent))

	got := make(chan url.Values, 1)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded;charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		body, _ := io.ReadAll(r.Body)
		form, err := url.ParseQuery(string(body))
		if err != nil {
			t.Error(err)
		}
		got <- form
		http.Error(w, "not answering", http.StatusServiceUnavailable)
	}))
	defer gw.Close()
	c := newTestClient(t, k, gw.URL+"/gateway.do")
	_, err := c.Precreate(context.Background(), Trade{OutTradeNo: "O20240102000001", AmountCents: 1230, Subject: "秒杀 iPhone 15+ 256G"})
	if err == nil {
		t.Fatal("Precreate succeeded against a 503 gateway")
	}
	form := <-got
	if content := RequestContent(form); content != precreateContent {
		t.Fatalf("canonical string\n got %s\nwant %s", content, precreateContent)
	}
	if form.Get("sign") != want {
		t.Fatalf("sign differs from openssl's\n got %s\nwant %s", form.Get("sign"), want)
	}
}

func TestSignSkipsEmptyValuesKnownAnswer(t *testing.T) {
	k := loadKeys(t)
	p := url.Values{"b": {"2"}, "a": {"1 + 1 = 2&"}, "empty": {""}, "sign": {"old"}, "sign_type": {"RSA2"}}
	const content = "a=1 + 1 = 2&&b=2&sign_type=RSA2"
	if got := RequestContent(p); got != content {
		t.Fatalf("RequestContent = %q, want %q", got, content)
	}
	sig, err := Sign(p, k.app)
	if err != nil {
		t.Fatal(err)
	}
	if want := opensslSign(t, k.appKeyPEM, []byte(content)); sig != want {
		t.Fatalf("Sign = %s, openssl = %s", sig, want)
	}
	if got := NotifyContent(p); got != "a=1 + 1 = 2&&b=2" {
		t.Fatalf("NotifyContent = %q", got)
	}
}

// TestSignaturesVerifyWithOpenssl is the reverse direction: what Go signs,
// openssl verifies, and what openssl rejects Go rejects too.
func TestSignaturesVerifyWithOpenssl(t *testing.T) {
	k := loadKeys(t)
	msgs := [][]byte{
		[]byte(NotifyContent(notifyParams())),
		[]byte(`{"code":"10000","msg":"Success","out_trade_no":"O1","qr_code":"https://qr.alipay.com/bax01"}`),
	}
	for _, msg := range msgs {
		sig, err := SignBytes(msg, k.alipay)
		if err != nil {
			t.Fatal(err)
		}
		if !opensslVerify(t, k.alipayPubP, msg, sig) {
			t.Fatalf("openssl rejects Go's signature over %q", msg)
		}
		if opensslVerify(t, k.appPubPEM, msg, sig) {
			t.Fatal("openssl accepts the signature with the wrong public key")
		}
		if err := VerifyBytes(msg, opensslSign(t, k.alipayPEM, msg), k.alipayPub); err != nil {
			t.Fatalf("Go rejects openssl's signature: %v", err)
		}
		tampered := append([]byte{}, msg...)
		tampered[len(tampered)-2] ^= 1
		if err := VerifyBytes(tampered, sig, k.alipayPub); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered message: err = %v, want ErrBadSignature", err)
		}
	}
}
