package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
)

// TestVerifyRemembersOnlyWhatVerified: a remembered token answers only for
// its own secret and only until it expires; a failure is never remembered.
func TestVerifyRemembersOnlyWhatVerified(t *testing.T) {
	good := NewAuth([]byte("fastpath-secret"))
	other := NewAuth([]byte("another-secret"))
	tok, err := good.Mint("alice", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second round is answered from the cache
		p, err := good.Verify(tok)
		if err != nil || p.UserID != "alice" || !p.Admin {
			t.Fatalf("round %d: %+v %v", i, p, err)
		}
		if _, err := other.Verify(tok); err == nil {
			t.Fatalf("round %d: a token verified under one secret passed under another", i)
		}
	}
	if _, ok := good.tokens.get(good.Secret, tok, time.Now()); !ok {
		t.Fatal("a verified token was not remembered")
	}
	if p, ok := good.tokens.getBytes(good.Secret, []byte(tok), time.Now()); !ok || p.UserID != "alice" {
		t.Fatalf("looked up from bytes: %+v %v", p, ok)
	}
	if _, ok := good.tokens.getBytes(other.Secret, []byte(tok), time.Now()); ok {
		t.Fatal("looked up from bytes under another secret")
	}
	forged := tok[:len(tok)-2] + "xx"
	for range 2 {
		if _, err := good.Verify(forged); err == nil {
			t.Fatal("forged signature accepted")
		}
	}
	if _, ok := good.tokens.get(good.Secret, forged, time.Now()); ok {
		t.Fatal("a failed token was remembered")
	}

	c := newTokenCache(64)
	exp := time.Now().Add(time.Minute)
	c.put(good.Secret, "t", Principal{UserID: "bob"}, exp)
	if p, ok := c.get(good.Secret, "t", exp.Add(-time.Nanosecond)); !ok || p.UserID != "bob" {
		t.Fatalf("before expiry: %+v %v", p, ok)
	}
	if _, ok := c.get(good.Secret, "t", exp); ok {
		t.Fatal("a token was answered at its expiry")
	}
}

// TestAuthRemembersItsOwnTokens: what an Auth remembers is its own (and its
// copies'), not the process's: another Auth with the same secret has not seen
// the token, and a bare Auth{Secret} verifies without remembering anything.
func TestAuthRemembersItsOwnTokens(t *testing.T) {
	secret := []byte("own-secret")
	a, b, bare := NewAuth(secret), NewAuth(secret), Auth{Secret: secret}
	tok, err := bare.Mint("carol", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []Auth{a, bare} {
		if p, err := v.Verify(tok); err != nil || p.UserID != "carol" {
			t.Fatalf("verify: %+v %v, want carol", p, err)
		}
	}
	copied := a
	if _, ok := copied.tokens.get(secret, tok, time.Now()); !ok {
		t.Error("a copy of the Auth that verified the token does not remember it")
	}
	if _, ok := b.tokens.get(secret, tok, time.Now()); ok {
		t.Error("another Auth with the same secret remembers a token it never verified")
	}
	if bare.tokens != nil {
		t.Error("a bare Auth has a token cache")
	}
	if p, err := b.Verify(tok); err != nil || p.UserID != "carol" {
		t.Fatalf("verify by the other Auth: %+v %v, want carol", p, err)
	}
}

// TestTokenCacheIsBounded: however many tokens pass, the cache holds at most its size.
func TestTokenCacheIsBounded(t *testing.T) {
	const size = 64
	c := newTokenCache(size)
	exp := time.Now().Add(time.Hour)
	for i := range 10 * size {
		c.put([]byte("s"), fmt.Sprint("token", i), Principal{UserID: "u"}, exp)
	}
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].m)
	}
	if n > size {
		t.Fatalf("cache holds %d tokens, bound %d", n, size)
	}
	if _, ok := c.get([]byte("s"), fmt.Sprint("token", 10*size-1), time.Now()); !ok {
		t.Fatal("the latest token was evicted")
	}
}

// TestGrabAnswerMatchesEncodingJSON: the hand-appended grab answer and error
// bodies decode to what encoding/json makes of the same values.
func TestGrabAnswerMatchesEncodingJSON(t *testing.T) {
	for _, res := range []grabSaleResponse{
		{OrderID: "1234567890-3", SaleID: "s_1-x", Qty: 2, AmountCents: 300, Remaining: 0, Repeat: true},
		{OrderID: "9-0", SaleID: "a", Qty: 1, AmountCents: 1_000_000_000_000_000, Remaining: 999_999_999_999, Repeat: false},
	} {
		var ctx fasthttp.RequestCtx
		writeGrabAnswer(&ctx, flashgrab.GrabResult{OrderID: res.OrderID, SaleID: res.SaleID, Qty: res.Qty,
			AmountCents: res.AmountCents, Remaining: res.Remaining, Repeat: res.Repeat})
		var got, want map[string]any
		if err := json.Unmarshal(ctx.Response.Body(), &got); err != nil {
			t.Fatalf("%s: %v", ctx.Response.Body(), err)
		}
		wb, _ := json.Marshal(res)
		_ = json.Unmarshal(wb, &want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("hand-appended %s, encoding/json %s", ctx.Response.Body(), wb)
		}
	}
	for _, msg := range []string{"sale s1: sold out", `sale "x\"y\\z": not found`, "tab\there\nnewline\x01\x1f",
		"ünïcødé 红包", "bad \xff\xfe utf-8", "\u2028\u2029<>&", ""} {
		var ctx fasthttp.RequestCtx
		writeErrorFast(&ctx, 409, "sold_out", msg)
		var got, want errorBody
		if err := json.Unmarshal(ctx.Response.Body(), &got); err != nil {
			t.Fatalf("%q gave %s: %v", msg, ctx.Response.Body(), err)
		}
		wb, _ := json.Marshal(errorBody{Error: errorDetail{Code: "sold_out", Message: msg}})
		_ = json.Unmarshal(wb, &want)
		if got != want || ctx.Response.StatusCode() != 409 {
			t.Errorf("%q: hand-appended %s (%d), encoding/json %s", msg, ctx.Response.Body(), ctx.Response.StatusCode(), wb)
		}
		if !strings.HasPrefix(string(ctx.Response.Header.ContentType()), "application/json") {
			t.Errorf("content type %q", ctx.Response.Header.ContentType())
		}
	}
}
