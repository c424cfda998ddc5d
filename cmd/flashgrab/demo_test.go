package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// lockedBuffer is a bytes.Buffer that serve's goroutine writes and the test
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDemoAgainstDevServer runs `flashgrab demo` twice against an in-process
// `serve --dev` (no FLASHGRAB_JWT_SECRET: the server keeps a dev secret file
// and the demo reads it): both runs pass, with fresh ids, so the walkthrough
// works every time. MySQL then holds exactly the six orders of the two
// runs (Alipay qr, WeChat qr, WeChat jsapi after the mini program login),
// all paid, and the jsapi buyers' openids from the login; serve's wiring of
// the login, the jsapi method and "your order is paid" is the real one.
func TestDemoAgainstDevServer(t *testing.T) {
	t.Setenv("FLASHGRAB_JWT_SECRET", "")
	_, prefix := testenv.Redis(t)
	db, dsn := testenv.MySQL(t)
	addr, sandboxAddr := freeAddr(t), freeAddr(t)
	secretFile := filepath.Join(t.TempDir(), "secret")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var serveOut lockedBuffer
	go func() {
		cmd := rootCommand()
		cmd.Writer = &serveOut
		done <- cmd.Run(ctx, []string{"flashgrab", "serve", "--dev", "--addr", addr, "--sandbox-addr", sandboxAddr,
			"--redis-addrs", testenv.RedisAddr(), "--mysql-dsn", dsn, "--key-prefix", prefix, "--dev-secret-file", secretFile})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v on shutdown", err)
		}
	})
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("serve stopped early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("serve never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	secret, err := readDevSecret(secretFile)
	if err != nil {
		t.Fatalf("serve --dev kept no secret: %v", err)
	}
	if out := serveOut.String(); !strings.Contains(out, "export FLASHGRAB_JWT_SECRET="+secret+"\n") ||
		!strings.Contains(out, "export ADMIN=") {
		t.Fatalf("serve --dev did not print the export lines:\n%s", out)
	}

	for run := 1; run <= 2; run++ {
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.Writer = &out
		err := cmd.Run(context.Background(), []string{"flashgrab", "demo", "--url", base, "--sandbox-url", "http://" + sandboxAddr,
			"--dev-secret-file", secretFile})
		if err != nil {
			t.Fatalf("demo run %d: %v\n%s", run, err, out.String())
		}
		s := out.String()
		if !strings.Contains(s, "demo passed") {
			t.Fatalf("demo run %d did not say it passed:\n%s", run, s)
		}
		// Every request is printed with its answer.
		if req, ans := strings.Count(s, "\n> "), strings.Count(s, "\n< "); req != ans || req < 17 {
			t.Fatalf("demo run %d printed %d requests and %d answers, want equal and at least 17:\n%s", run, req, ans, s)
		}
	}
	var orders, paid int
	if err := db.QueryRow("SELECT COUNT(*), COALESCE(SUM(status = 'paid'), 0) FROM orders").Scan(&orders, &paid); err != nil {
		t.Fatal(err)
	}
	if orders != 6 || paid != 6 {
		t.Fatalf("MySQL holds %d orders, %d paid; want 6 and 6", orders, paid)
	}
	var jsapi, payers int
	if err := db.QueryRow("SELECT COUNT(*) FROM payments WHERE out_trade_no LIKE '%\\_wj' AND status = 'paid'").Scan(&jsapi); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM payer_ids WHERE channel = 'wechat' AND payer_id LIKE 'ocarol-%'").Scan(&payers); err != nil {
		t.Fatal(err)
	}
	if jsapi != 2 || payers != 2 {
		t.Fatalf("%d paid jsapi payments and %d openids of the two runs' carol, want 2 and 2", jsapi, payers)
	}
}

// TestDemoFailsOnUnexpectedAnswer: a demo whose tokens the server rejects
// (another secret) stops at the first request with an error naming it and
// the status, instead of going on.
func TestDemoFailsOnUnexpectedAnswer(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthorized","message":"bad token"}}`))
	})}
	addr := freeAddr(t)
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	var out bytes.Buffer
	cmd := rootCommand()
	cmd.Writer = &out
	err = cmd.Run(context.Background(), []string{"flashgrab", "demo", "--url", "http://" + addr, "--jwt-secret", "other"})
	if err == nil || !strings.Contains(err.Error(), "POST "+addr+"/v1/sales: status 401, want 201") {
		t.Fatalf("err %v, want the failed create-sale request named", err)
	}
	if n := strings.Count(out.String(), "\n> "); n != 1 {
		t.Fatalf("the demo sent %d requests after the failure, want it to stop at the first:\n%s", n, out.String())
	}
}
