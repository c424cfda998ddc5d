package api_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestBadIDsGetOneMessage: every id that comes in (a sale's id and merchant,
// an account, a credit's ref, an Idempotency-Key, a token's user) is checked
// by the one rule, flashgrab.ValidID, and refused with the one message.
func TestBadIDsGetOneMessage(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	if status, body := h.do("POST", "/v1/sales", h.admin, `{"id":"s1","merchant_id":"m","price_cents":1,"stock":3,"per_user_limit":1,`+window+`}`); status != 201 {
		t.Fatalf("create sale: %d %v", status, body)
	}
	alice := h.token("alice", false, time.Hour)
	for _, c := range []struct {
		name, method, path, token, body string
		header                          []string
		field                           string
	}{
		{"sale id", "POST", "/v1/sales", h.admin, `{"id":"x y","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, nil, "id"},
		{"merchant", "POST", "/v1/sales", h.admin, `{"id":"x","merchant_id":"","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, nil, "merchant_id"},
		{"account", "POST", "/v1/admin/accounts/a.b/credit", h.admin, `{"amount_cents":5,"ref":"r"}`, nil, "account"},
		{"ref", "POST", "/v1/admin/accounts/alice/credit", h.admin, `{"amount_cents":5}`, nil, "ref"},
		{"idempotency key", "POST", "/v1/sales/s1/grab", alice, ``, []string{"Idempotency-Key", "k/1"}, "Idempotency-Key"},
	} {
		status, body := h.do(c.method, c.path, c.token, c.body, c.header...)
		e, _ := body["error"].(map[string]any)
		want := c.field + ": must be " + flashgrab.IDRule
		if status != 400 || e["code"] != "bad_request" || e["message"] != want {
			t.Errorf("%s: got %d %v, want 400 bad_request %q", c.name, status, body, want)
		}
	}
	_, err := api.Auth{Secret: []byte("s")}.Mint("alice smith", false, time.Hour)
	var inv *flashgrab.InvalidError
	if !errors.As(err, &inv) || inv.Field != "user" || inv.Reason != "must be "+flashgrab.IDRule {
		t.Errorf("mint for a bad user id: %v, want the id rule's InvalidError for user", err)
	}
}
