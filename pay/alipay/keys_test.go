package alipay

import (
	"encoding/pem"
	"strings"
	"testing"
)

// bareBase64 strips the PEM armour the way the Alipay console shows keys.
func bareBase64(t *testing.T, pemBytes []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("testdata key is not PEM")
	}
	lines := strings.Split(strings.TrimSpace(string(pemBytes)), "\n")
	return []byte(strings.Join(lines[1:len(lines)-1], "\n"))
}

func TestParsePrivateKeyForms(t *testing.T) {
	k := loadKeys(t)
	pkcs1 := readTestdata(t, "app_key_pkcs1.pem")
	for name, data := range map[string][]byte{
		"pkcs8 pem":    k.appKeyPEM,
		"pkcs1 pem":    pkcs1,
		"pkcs8 bare":   bareBase64(t, k.appKeyPEM),
		"pkcs1 bare":   bareBase64(t, pkcs1),
		"one line":     []byte(strings.ReplaceAll(string(bareBase64(t, pkcs1)), "\n", "")),
		"crlf wrapped": []byte(strings.ReplaceAll(string(bareBase64(t, k.appKeyPEM)), "\n", "\r\n")),
	} {
		got, err := ParsePrivateKey(data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !got.Equal(k.app) {
			t.Errorf("%s: parsed a different key", name)
		}
	}
	for name, data := range map[string][]byte{
		"empty":      nil,
		"public pem": k.appPubPEM,
		"junk":       []byte("not a key!"),
		"bad base64": []byte("MIIE$$"),
	} {
		if _, err := ParsePrivateKey(data); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestParsePublicKeyForms(t *testing.T) {
	k := loadKeys(t)
	for name, data := range map[string][]byte{
		"pkix pem":  k.alipayPubP,
		"pkix bare": bareBase64(t, k.alipayPubP),
	} {
		got, err := ParsePublicKey(data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !got.Equal(&k.alipay.PublicKey) {
			t.Errorf("%s: parsed a different key", name)
		}
	}
	for name, data := range map[string][]byte{
		"private pem": k.alipayPEM,
		"empty":       []byte("  \n"),
		"junk":        []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	} {
		if _, err := ParsePublicKey(data); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestNewRejectsOwnPublicKeyAsAlipayKey(t *testing.T) {
	k := loadKeys(t)
	_, err := New(Config{AppID: testAppID, PrivateKey: k.app, AlipayPublicKey: &k.app.PublicKey, Gateway: "https://gw.example.com/gateway.do"})
	if err == nil || !strings.Contains(err.Error(), "own public key") {
		t.Fatalf("New with the app's own public key as Alipay key: err = %v", err)
	}
}

func TestNewValidatesURLs(t *testing.T) {
	k := loadKeys(t)
	base := Config{AppID: testAppID, PrivateKey: k.app, AlipayPublicKey: k.alipayPub, Gateway: "https://gw.example.com/gateway.do"}
	if _, err := New(base); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no app id":          func(c *Config) { c.AppID = "" },
		"relative gateway":   func(c *Config) { c.Gateway = "/gateway.do" },
		"notify with query":  func(c *Config) { c.NotifyURL = "https://m.example.com/notify?order=1" },
		"return with query":  func(c *Config) { c.ReturnURL = "https://m.example.com/r?x=1" },
		"gateway with query": func(c *Config) { c.Gateway = "https://gw.example.com/gateway.do?charset=utf-8" },
		"no private key":     func(c *Config) { c.PrivateKey = nil },
		"no alipay key":      func(c *Config) { c.AlipayPublicKey = nil },
	} {
		cfg := base
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
