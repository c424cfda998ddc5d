// Package alipay is a thin client for the Alipay OpenAPI gateway with RSA2
// (SHA256withRSA) signatures, built on the standard library's crypto only.
//
// It signs requests, verifies every response over the exact bytes Alipay
// signed, and verifies async notifies on the raw parameter map before looking
// at a single field. Amounts are int64 fen throughout; the yuan strings of the
// wire are produced and parsed exactly by FormatYuan and ParseYuan.
package alipay

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
	// Asia/Shanghai must resolve even on hosts without a zoneinfo database:
	// a hard-coded or host-local zone would sign wrong timestamps.
	_ "time/tzdata"
)

// Gateways of the real service; the default deployment points at the local sandbox instead.
const (
	ProductionGateway = "https://openapi.alipay.com/gateway.do"
	SandboxGateway    = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
)

// Acknowledgement bodies for the notify endpoint: Alipay stops retrying only
// on exactly AckSuccess.
const (
	AckSuccess = "success"
	AckFail    = "fail"
)

// TimeLayout is Alipay's timestamp format, always in Asia/Shanghai time.
const TimeLayout = "2006-01-02 15:04:05"

const minKeyBits = 2048

var shanghai = func() *time.Location {
	if loc, err := time.LoadLocation("Asia/Shanghai"); err == nil {
		return loc
	}
	return time.FixedZone("CST", 8*60*60)
}()

// FormatTime renders t as an Alipay timestamp in Asia/Shanghai time.
func FormatTime(t time.Time) string { return t.In(shanghai).Format(TimeLayout) }

// ParseTime reads an Alipay timestamp, which is in Asia/Shanghai time.
func ParseTime(s string) (time.Time, error) { return time.ParseInLocation(TimeLayout, s, shanghai) }

// Config is what a Client needs. AppID, PrivateKey, AlipayPublicKey and
// Gateway are required.
type Config struct {
	AppID string
	// SellerID (the 2088… partner id), when set, must match every notify's seller_id.
	SellerID string
	// PrivateKey is the app's key: it signs requests.
	PrivateKey *rsa.PrivateKey
	// AlipayPublicKey is Alipay's key from the console (not the app's own
	// public key): it verifies responses and notifies.
	AlipayPublicKey *rsa.PublicKey
	// Gateway is the full gateway.do URL.
	Gateway string
	// NotifyURL and ReturnURL must not carry a query: Alipay does not sign it.
	NotifyURL, ReturnURL string
	// HTTPClient defaults to one with a 15 s timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now; tests fix it.
	Now func() time.Time
}

// Client talks to one Alipay app. It is safe for concurrent use.
type Client struct {
	cfg     Config
	gateway *url.URL
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.AppID == "" {
		return nil, errors.New("alipay config: AppID is required")
	}
	if cfg.PrivateKey == nil {
		return nil, errors.New("alipay config: PrivateKey (the app private key) is required")
	}
	if cfg.AlipayPublicKey == nil {
		return nil, errors.New("alipay config: AlipayPublicKey is required")
	}
	if n := cfg.PrivateKey.N.BitLen(); n < minKeyBits {
		return nil, fmt.Errorf("alipay config: PrivateKey has %d bits, RSA2 needs at least %d", n, minKeyBits)
	}
	if n := cfg.AlipayPublicKey.N.BitLen(); n < minKeyBits {
		return nil, fmt.Errorf("alipay config: AlipayPublicKey has %d bits, RSA2 needs at least %d", n, minKeyBits)
	}
	// The most common integration mistake: verifying with the app's own key.
	if cfg.AlipayPublicKey.Equal(&cfg.PrivateKey.PublicKey) {
		return nil, errors.New("alipay config: AlipayPublicKey is the app's own public key; use the Alipay public key shown in the console")
	}
	gw, err := parseHTTPURL(cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("alipay config: Gateway: %w", err)
	}
	for name, u := range map[string]string{"NotifyURL": cfg.NotifyURL, "ReturnURL": cfg.ReturnURL} {
		if u == "" {
			continue
		}
		if _, err := parseHTTPURL(u); err != nil {
			return nil, fmt.Errorf("alipay config: %s: %w", name, err)
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg, gateway: gw}, nil
}

// parseHTTPURL accepts an absolute http(s) URL without query or fragment.
func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q must not carry a query or fragment", s)
	}
	return u, nil
}
