package api_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// newHarnessWith is newHarness with the server's limits set by configure,
// served on ln (nil: in memory).
func newHarnessWith(t *testing.T, ln dialer, configure func(*api.Server)) *harness {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(context.Background(), engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &api.Server{Engine: eng, Books: &settle.Books{DB: db}, Auth: api.Auth{Secret: secret},
		MaxBodyBytes: 4096, Timeout: time.Second}
	configure(srv)
	if ln == nil {
		ln = fasthttputil.NewInmemoryListener()
	}
	return startHarness(t, srv, ln)
}

// pollLog polls cond until it holds or the deadline passes.
func pollLog(t *testing.T, cond func() bool) {
	what, d := "fasthttp's log line", 10*time.Second
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGrabRateLimitPerUser: a user's grabs beyond the bucket are answered
// 429 rate_limited and never reach Redis (the sale's sold count stays), while
// another user is unaffected.
func TestGrabRateLimitPerUser(t *testing.T) {
	h := newHarnessWith(t, nil, func(s *api.Server) { s.GrabLimit = api.RateLimit{Rate: 0.001, Burst: 3} })
	if status, body := h.do("POST", "/v1/sales", h.admin,
		`{"id":"s1","merchant_id":"m","price_cents":100,"stock":100,"per_user_limit":50,`+window+`}`); status != 201 {
		t.Fatalf("create sale: %d %v", status, body)
	}
	alice, bob := h.token("alice", false, time.Hour), h.token("bob", false, time.Hour)
	won, limited := 0, 0
	for i := range 10 {
		status, body := h.do("POST", "/v1/sales/s1/grab", alice, "", "Idempotency-Key", fmt.Sprint("a", i))
		switch {
		case status == 200:
			won++
		case status == 429 && errCode(body) == "rate_limited":
			limited++
		default:
			t.Fatalf("grab %d: %d %v", i, status, body)
		}
	}
	if won != 3 || limited != 7 {
		t.Fatalf("alice: %d won, %d limited; want 3 and 7", won, limited)
	}
	sale, err := h.eng.Sale(context.Background(), "s1")
	if err != nil || sale.Sold != 3 {
		t.Fatalf("sold %d (%v) after 3 admitted grabs; want 3", sale.Sold, err)
	}
	if status, body := h.do("POST", "/v1/sales/s1/grab", bob, "", "Idempotency-Key", "b0"); status != 200 {
		t.Fatalf("bob's grab: %d %v", status, body)
	}
	if status, body := h.do("POST", "/v1/packets/p1/grab", alice, ""); status != 429 || errCode(body) != "rate_limited" {
		t.Fatalf("alice's packet grab with an empty bucket: %d %v; want 429 rate_limited", status, body)
	}
	if sale, _ := h.eng.Sale(context.Background(), "s1"); sale.Sold != 4 {
		t.Fatalf("sold %d; want 4", sale.Sold)
	}
}

// TestIPRateLimitPublicRoutes: reading sales (no token) is limited per
// client address; notifies are exempt, as are routes that need a token.
func TestIPRateLimitPublicRoutes(t *testing.T) {
	h := newHarnessWith(t, nil, func(s *api.Server) { s.IPLimit = api.RateLimit{Rate: 0.001, Burst: 2} })
	for i, want := range []int{404, 404, 429, 429} {
		if status, body := h.do("GET", "/v1/sales/nope", "", ""); status != want {
			t.Fatalf("GET %d: %d %v; want %d", i, status, body, want)
		}
	}
	if status, body := h.do("GET", "/v1/packets/nope", "", ""); status != 429 || errCode(body) != "rate_limited" {
		t.Fatalf("GET packet from the same address: %d %v; want 429 rate_limited", status, body)
	}
	for i := range 5 {
		for _, path := range []string{"/v1/notify/alipay", "/v1/notify/wechat"} {
			if status := h.status("POST", path, "x=1"); status == 429 {
				t.Fatalf("notify %d on %s was rate limited", i, path)
			}
		}
		if status, body := h.do("GET", "/v1/accounts/root", h.admin, ""); status == 429 {
			t.Fatalf("authenticated read %d was rate limited: %v", i, body)
		}
	}
}

// TestMaxConnsPerIP: connections from one address beyond the cap are
// refused with 429 and closed; the ones within it are served.
func TestMaxConnsPerIP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, tcpListener{ln}, func(s *api.Server) { s.MaxConnsPerIP = 2 })
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	get := func(c net.Conn) string {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err.Error()
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(line)
	}
	for i := range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if got := get(c); got != "HTTP/1.1 200 OK" {
			t.Fatalf("connection %d within the cap: %q", i, got)
		}
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	held = append(held, c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c) // the server answers at once and closes
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 429")) {
		t.Fatalf("third connection from one address: %q; want a 429 and close", got)
	}
	_ = h
}

// TestIdleConnectionClosed: a keep-alive connection that sends nothing is
// closed by the server after IdleTimeout.
func TestIdleConnectionClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	newHarnessWith(t, tcpListener{ln}, func(s *api.Server) { s.IdleTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Read the answer, then wait (bounded by the deadline) for the close.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	resp, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("healthz: %q %v", resp, err)
	}
	_, err = io.Copy(io.Discard, r)
	if err != nil {
		t.Fatalf("the idle connection was not closed by the server: %v", err)
	}
}

// status sends a request without a token and returns only the status (a
// notify's answer is the provider's format, not JSON).
func (h *harness) status(method, path, body string) int {
	h.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://flashgrab" + path)
	req.Header.SetMethod(method)
	req.SetBodyString(body)
	if err := h.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode()
}

// syncBuffer is a log sink tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMalformedRequestLogHasNoToken: fasthttp logs the raw bytes of a
// request it cannot parse; the bearer token in them never reaches the log.
func TestMalformedRequestLogHasNoToken(t *testing.T) {
	var logs syncBuffer
	ln := fasthttputil.NewInmemoryListener()
	h := newHarnessWith(t, ln, func(s *api.Server) { s.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	tok := h.token("alice", false, time.Hour)
	c, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw := "POST /v1/sales/s1/grab HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
		"\r\nCookie: session=" + tok + "\r\nBroken header line without a colon\r\n\r\n"
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c)
	if !bytes.Contains(got, []byte(`"bad_request"`)) {
		t.Fatalf("malformed request answered %q; want 400 bad_request", got)
	}
	pollLog(t, func() bool { return strings.Contains(logs.String(), "error when") })
	out := logs.String()
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	for _, secret := range []string{tok, sig, tok[:20]} {
		if strings.Contains(out, secret) {
			t.Fatalf("log holds the token (%q):\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "[redacted]") {
		t.Fatalf("log has no redaction mark:\n%s", out)
	}
}

// TestBadInputMessages: duplicate keys, keys in another case, unknown
// fields, wrong types and malformed JSON are 400 bad_request on every
// endpoint that reads a body, with a message that names the field and the
// rule and never a Go type or the decoder's wording; nothing is created.
func TestBadInputMessages(t *testing.T) {
	h := newHarnessWith(t, nil, func(*api.Server) {})
	user := h.token("alice", false, time.Hour)
	sale := `"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window
	for _, c := range []struct {
		name, path, token, body, want string
	}{
		{"sale duplicate", "/v1/sales", h.admin, `{` + sale + `,"stock":6}`, `field "stock" appears more than once`},
		{"sale case variant", "/v1/sales", h.admin, `{` + sale + `,"Price_Cents":1}`, `unknown field "Price_Cents": field names are case-sensitive; did you mean "price_cents"?`},
		{"sale unknown", "/v1/sales", h.admin, `{` + sale + `,"colour":"red"}`, `unknown field "colour"`},
		{"sale wrong type", "/v1/sales", h.admin, `{"id":"x","merchant_id":"m","price_cents":"1","stock":5,"per_user_limit":1,` + window + `}`, `field "price_cents" must be an integer in [-9223372036854775808, 9223372036854775807]`},
		{"sale float", "/v1/sales", h.admin, `{"id":"x","merchant_id":"m","price_cents":1.5,"stock":5,"per_user_limit":1,` + window + `}`, `field "price_cents" must be an integer`},
		{"sale bad time", "/v1/sales", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"starts_at":"tomorrow","ends_at":"2099-01-01T00:00:00Z"}`, `field "starts_at" must be an RFC 3339 time string`},
		{"sale malformed", "/v1/sales", h.admin, `{"id":"x",`, `malformed JSON`},
		{"sale not an object", "/v1/sales", h.admin, `[1,2]`, `the body must be a JSON object`},
		{"grab duplicate", "/v1/sales/x/grab", user, `{"qty":1,"qty":2}`, `field "qty" appears more than once`},
		{"grab case variant", "/v1/sales/x/grab", user, `{"QTY":2}`, `unknown field "QTY": field names are case-sensitive; did you mean "qty"?`},
		{"grab wrong type", "/v1/sales/x/grab", user, `{"qty":"2"}`, `field "qty" must be an integer`},
		{"grab escaped key", "/v1/sales/x/grab", user, `{"q\u0074y":2}`, `unknown field "q\\u0074y"`},
		{"packet duplicate", "/v1/packets", user, `{"total_cents":100,"count":2,"mode":"random","count":3}`, `field "count" appears more than once`},
		{"packet wrong type", "/v1/packets", user, `{"total_cents":100,"count":2,"mode":7}`, `field "mode" must be a string`},
		{"packet grab body", "/v1/packets/p/grab", user, `{"x":1}`, `unknown field "x": this request takes no fields; send {} or no body`},
		{"topup case variant", "/v1/topups", user, `{"Amount_cents":100,"channel":"alipay"}`, `did you mean "amount_cents"?`},
		{"credit duplicate", "/v1/admin/accounts/alice/credit", h.admin, `{"amount_cents":100,"amount_cents":1000000}`, `field "amount_cents" appears more than once`},
		{"credit wrong type", "/v1/admin/accounts/alice/credit", h.admin, `{"amount_cents":true}`, `field "amount_cents" must be an integer`},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := h.do("POST", c.path, c.token, c.body)
			e, _ := body["error"].(map[string]any)
			msg, _ := e["message"].(string)
			if status != 400 || errCode(body) != "bad_request" || !strings.Contains(msg, c.want) {
				t.Fatalf("got %d %v; want 400 bad_request with %q", status, body, c.want)
			}
			for _, leak := range []string{"of type", "Go ", "struct", "Request", "int64", "json:", "sonic", "unmarshal", "Unmarshal"} {
				if strings.Contains(msg, leak) {
					t.Fatalf("message %q names decoder internals (%q)", msg, leak)
				}
			}
		})
	}
	if status, _ := h.do("GET", "/v1/sales/x", "", ""); status != 404 {
		t.Fatalf("sale x exists after rejected creates (GET %d)", status)
	}
	if status, body := h.do("GET", "/v1/accounts/alice", h.admin, ""); status == 200 && body["balance_cents"] != float64(0) {
		t.Fatalf("alice's account after rejected credits: %v", body)
	}
}
