package main

import (
	"context"
	"strings"
	"testing"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/pay/alipay"
)

// runAlipayFlags parses args as serve's payment flags and builds the Alipay
// client from them.
func runAlipayFlags(t *testing.T, args ...string) (*alipay.Client, error) {
	t.Helper()
	var c *alipay.Client
	var cerr error
	cmd := &cli.Command{Name: "serve", Flags: paymentFlags(), Action: func(_ context.Context, cmd *cli.Command) error {
		c, cerr = alipayFromFlags(cmd, "http://127.0.0.1:8080")
		return nil
	}}
	if err := cmd.Run(context.Background(), append([]string{"serve"}, args...)); err != nil {
		t.Fatal(err)
	}
	return c, cerr
}

// TestAlipaySellerIDRequired: outside sandbox mode an Alipay app id without
// a seller id refuses to start, before any key is read, and says which
// setting is missing; with no app id Alipay is simply off.
func TestAlipaySellerIDRequired(t *testing.T) {
	t.Setenv("FLASHGRAB_ALIPAY_SELLER_ID", "")
	t.Setenv("FLASHGRAB_ALIPAY_APP_ID", "")
	c, err := runAlipayFlags(t, "--alipay-app-id", "2021000000000000",
		"--alipay-private-key-file", "/nonexistent/app.pem", "--alipay-public-key-file", "/nonexistent/alipay.pem")
	if c != nil || err == nil || !strings.Contains(err.Error(), "--alipay-seller-id") {
		t.Fatalf("app id without seller id: client %v, error %v; want an error naming --alipay-seller-id", c, err)
	}
	// With the seller id, the check passes and the (missing) keys are next.
	_, err = runAlipayFlags(t, "--alipay-app-id", "2021000000000000", "--alipay-seller-id", "2088000000000001",
		"--alipay-private-key-file", "/nonexistent/app.pem")
	if err == nil || strings.Contains(err.Error(), "seller") || !strings.Contains(err.Error(), "alipay-private-key-file") {
		t.Fatalf("with a seller id: %v; want the key file error", err)
	}
	if c, err := runAlipayFlags(t); c != nil || err != nil {
		t.Fatalf("no app id: %v, %v; want Alipay off", c, err)
	}
}
