package api_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

var secret = []byte("test-secret")

type harness struct {
	t      *testing.T
	client *fasthttp.Client
	eng    *engine.Engine
	books  *settle.Books
	db     *sql.DB
	admin  string
}

// newHarness serves the API in memory on the given Redis and a fresh MySQL
// database of the test's own.
func newHarness(t *testing.T, rdb redis.UniversalClient, prefix string) *harness {
	t.Helper()
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return newHarnessOn(t, rdb, prefix, db)
}

// migratedMySQLBehindProxy returns the test's own database, with the schema,
// reached through a proxy the test cuts to simulate a MySQL outage.
func migratedMySQLBehindProxy(t *testing.T) (*sql.DB, *testenv.Proxy) {
	t.Helper()
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return testenv.MySQLBehindProxy(t, db)
}

// newHarnessOn serves the API on the given Redis and MySQL handle (which may
// go through a proxy the test cuts).
func newHarnessOn(t *testing.T, rdb redis.UniversalClient, prefix string, db *sql.DB) *harness {
	t.Helper()
	ctx := context.Background()
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	books := &settle.Books{DB: db}
	srv := &api.Server{Engine: eng, Books: books, Auth: api.NewAuth(secret),
		MaxBodyBytes: 4096, Timeout: time.Second}
	return startHarness(t, srv, fasthttputil.NewInmemoryListener())
}

// awaitReady waits, at most the 1 s the breaker's probe is allowed, for
// /readyz to answer 200 once a cut Redis is back.
func (h *harness) awaitReady() {
	h.t.Helper()
	testenv.Eventually(h.t, time.Second, func() (bool, string) {
		status, body := h.do("GET", "/readyz", "", "")
		return status == 200, fmt.Sprintf("readyz after Redis returned: %d %v", status, body)
	})
}

// dialer is a listener the test client can dial directly.
type dialer interface {
	net.Listener
	Dial() (net.Conn, error)
}

type tcpListener struct{ net.Listener }

func (l tcpListener) Dial() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) }

// startHarness serves srv on ln until the test ends.
func startHarness(t *testing.T, srv *api.Server, ln dialer) *harness {
	t.Helper()
	hs := srv.HTTPServer()
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Shutdown(); ln.Close() })
	h := &harness{t: t, eng: srv.Engine, books: srv.Books, db: srv.Books.DB,
		// The write buffer holds a whole oversized request, so the client has
		// written it before the server answers 413 and closes; with the
		// default 4 KiB the server could close between two flushes and the
		// client would see "connection closed" instead of the answer.
		client: &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, WriteBufferSize: 64 << 10}}
	h.admin = h.token("root", true, time.Hour)
	return h
}

func (h *harness) token(user string, admin bool, ttl time.Duration) string {
	tok, err := api.Auth{Secret: secret}.Mint(user, admin, ttl)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// do sends a request and returns the status and decoded JSON body.
func (h *harness) do(method, path, token, body string, header ...string) (int, map[string]any) {
	h.t.Helper()
	status, raw := h.doRaw(method, path, token, body, header...)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			h.t.Fatalf("%s %s: body %q is not JSON: %v", method, path, raw, err)
		}
	}
	return status, out
}

// doRaw sends a request (header: name, value pairs) and returns the status
// and the body as it came.
func (h *harness) doRaw(method, path, token, body string, header ...string) (int, []byte) {
	h.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://flashgrab" + path)
	req.Header.SetMethod(method)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.SetBodyString(body)
	if err := h.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode(), bytes.Clone(resp.Body())
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}
