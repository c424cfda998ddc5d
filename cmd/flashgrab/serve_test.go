package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeLifecycle runs `flashgrab serve` as main would: it creates the
// schema, serves a sale grab that the settler writes to MySQL, and on
// cancellation (SIGINT/SIGTERM) stops and returns cleanly. With
// --debug-addr it serves Go's profiles there, and only there.
func TestServeLifecycle(t *testing.T) {
	_, prefix := testenv.Redis(t)
	db, dsn := testenv.MySQL(t) // empty: serve must create the schema
	addr, debugAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- rootCommand().Run(ctx, []string{"flashgrab", "serve", "--addr", addr, "--redis-addrs", testenv.RedisAddr(),
			"--mysql-dsn", dsn, "--key-prefix", prefix, "--jwt-secret", "lifecycle", "--sandbox=false", "--debug-addr", debugAddr})
	}()
	defer cancel()
	base := "http://" + addr
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("serve stopped early: %v", err)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, fmt.Sprintf("GET /readyz: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("GET /readyz: %d, want 200", resp.StatusCode)
	})
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := get("http://" + debugAddr + "/debug/pprof/"); status != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("GET /debug/pprof/ on --debug-addr: %d %.200s", status, body)
	}
	if status, body := get("http://" + debugAddr + "/debug/pprof/heap?debug=1"); status != 200 || !strings.Contains(body, "heap profile") {
		t.Fatalf("GET /debug/pprof/heap on --debug-addr: %d %.200s", status, body)
	}
	if status, _ := get(base + "/debug/pprof/"); status != 404 {
		t.Fatalf("GET /debug/pprof/ on the API's address: %d, want 404", status)
	}
	auth := api.Auth{Secret: []byte("lifecycle")}
	do := func(path, user string, admin bool, body string) int {
		tok, _ := auth.Mint(user, admin, time.Hour)
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := do("/v1/sales", "root", true, `{"id":"s1","merchant_id":"m","price_cents":5,"stock":2,"per_user_limit":1,
		"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z"}`); s != 201 {
		t.Fatalf("create sale: %d", s)
	}
	for _, u := range []string{"a", "b", "c"} {
		do("/v1/sales/s1/grab", u, false, "")
	}
	waitOrders := func(db *sql.DB, n int) {
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			var got int
			if err := db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&got); err != nil {
				return false, fmt.Sprintf("count orders: %v", err)
			}
			return got == n, fmt.Sprintf("MySQL holds %d orders, want %d", got, n)
		})
	}
	waitOrders(db, 2)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v on shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of the signal")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("serve still answers after shutdown")
	}
	if _, err := http.Get("http://" + debugAddr + "/debug/pprof/"); err == nil {
		t.Fatal("the debug listener still answers after shutdown")
	}
}

// TestDebugAddrNotThePublicOne: profiles are never served on the API's own
// address.
func TestDebugAddrNotThePublicOne(t *testing.T) {
	if _, err := startDebug("127.0.0.1:8080", "127.0.0.1:8080", slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "--debug-addr") {
		t.Fatalf("--debug-addr equal to --addr: %v, want refused", err)
	}
}
