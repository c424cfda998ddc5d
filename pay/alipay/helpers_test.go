package alipay

import (
	"bytes"
	"crypto/rsa"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	testAppID    = "2021000000000000"
	testSellerID = "2088000000000001"
)

// fixedNow is 11:04:05 in Shanghai: the timestamp a UTC or host-zone bug would get wrong.
var fixedNow = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type testKeys struct {
	app        *rsa.PrivateKey
	alipay     *rsa.PrivateKey
	alipayPub  *rsa.PublicKey
	appPubPEM  []byte
	appKeyPEM  []byte
	alipayPEM  []byte
	alipayPubP []byte
}

func loadKeys(t testing.TB) testKeys {
	t.Helper()
	k := testKeys{
		appKeyPEM:  readTestdata(t, "app_key_pkcs8.pem"),
		appPubPEM:  readTestdata(t, "app_pub.pem"),
		alipayPEM:  readTestdata(t, "alipay_key.pem"),
		alipayPubP: readTestdata(t, "alipay_pub.pem"),
	}
	var err error
	if k.app, err = ParsePrivateKey(k.appKeyPEM); err != nil {
		t.Fatal(err)
	}
	if k.alipay, err = ParsePrivateKey(k.alipayPEM); err != nil {
		t.Fatal(err)
	}
	if k.alipayPub, err = ParsePublicKey(k.alipayPubP); err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestClient(t testing.TB, k testKeys, gateway string) *Client {
	t.Helper()
	c, err := New(Config{
		AppID: testAppID, SellerID: testSellerID,
		PrivateKey: k.app, AlipayPublicKey: k.alipayPub,
		Gateway:   gateway,
		NotifyURL: "https://m.example.com/v1/notify/alipay", ReturnURL: "https://m.example.com/paid",
		Now: func() time.Time { return fixedNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openssl runs the openssl binary with stdin, skipping the test when it is not installed.
func openssl(t *testing.T, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed: the known-answer tests need it as an independent implementation")
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("openssl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// opensslSign is `openssl dgst -sha256 -sign key.pem | openssl base64 -A`.
func opensslSign(t *testing.T, keyPEM, msg []byte) string {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	sig, err := openssl(t, msg, "dgst", "-sha256", "-sign", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b64, err := openssl(t, sig, "base64", "-A")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b64))
}

// opensslVerify is `openssl dgst -sha256 -verify pub.pem -signature sig.bin`.
func opensslVerify(t *testing.T, pubPEM, msg []byte, sigB64 string) bool {
	t.Helper()
	dir := t.TempDir()
	pubFile, sigB64File, sigFile := filepath.Join(dir, "pub.pem"), filepath.Join(dir, "sig.b64"), filepath.Join(dir, "sig.bin")
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sigB64File, []byte(sigB64), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openssl(t, nil, "base64", "-d", "-A", "-in", sigB64File, "-out", sigFile); err != nil {
		t.Fatal(err)
	}
	out, err := openssl(t, msg, "dgst", "-sha256", "-verify", pubFile, "-signature", sigFile)
	return err == nil && strings.TrimSpace(string(out)) == "Verified OK"
}

// notifyParams is a complete TRADE_SUCCESS notify as Alipay sends it, unsigned.
func notifyParams() url.Values {
	return url.Values{
		"notify_time":      {"2024-01-02 11:05:00"},
		"notify_type":      {"trade_status_sync"},
		"notify_id":        {"2024010200222110500012345678901234"},
		"app_id":           {testAppID},
		"auth_app_id":      {testAppID},
		"charset":          {"utf-8"},
		"version":          {"1.0"},
		"sign_type":        {"RSA2"},
		"trade_no":         {"2024010222001411111111111111"},
		"out_trade_no":     {"O20240102000001"},
		"buyer_id":         {"2088102177846875"},
		"buyer_logon_id":   {"159****1111"},
		"seller_id":        {testSellerID},
		"trade_status":     {"TRADE_SUCCESS"},
		"total_amount":     {"12.30"},
		"receipt_amount":   {"12.30"},
		"buyer_pay_amount": {"12.30"},
		"invoice_amount":   {"12.30"},
		"point_amount":     {"0.00"},
		"subject":          {"秒杀 iPhone 15+ 256G"},
		"body":             {"  padded value, never trimmed  "},
		"gmt_create":       {"2024-01-02 11:04:30"},
		"gmt_payment":      {"2024-01-02 11:04:59"},
		"fund_bill_list":   {`[{"amount":"12.30","fundChannel":"ALIPAYACCOUNT"}]`},
	}
}

// signNotify signs p the rsaCheckV1 way with key and returns the form body.
func signNotify(t testing.TB, p url.Values, key *rsa.PrivateKey) string {
	t.Helper()
	sig, err := SignBytes([]byte(NotifyContent(p)), key)
	if err != nil {
		t.Fatal(err)
	}
	p.Set("sign", sig)
	return p.Encode()
}

func parseURLQuery(raw string) (url.Values, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	return url.ParseQuery(u.RawQuery)
}
