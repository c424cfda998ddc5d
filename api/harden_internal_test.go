package api

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// emfileListener fails its first n accepts with EMFILE, as the kernel does
// when the process is out of file descriptors.
type emfileListener struct {
	*fasthttputil.InmemoryListener
	n int
}

var errEMFILE = &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.n > 0 {
		l.n--
		return nil, errEMFILE
	}
	return l.InmemoryListener.Accept()
}

// TestRetryListenerSurvivesEMFILE: fasthttp's Serve returns on EMFILE
// (which stopped serve in issue 9); behind RetryListener it backs off,
// retries, and keeps serving.
func TestRetryListenerSurvivesEMFILE(t *testing.T) {
	bare := &emfileListener{InmemoryListener: fasthttputil.NewInmemoryListener(), n: 1}
	defer bare.Close()
	s := &Server{}
	if err := s.HTTPServer().Serve(bare); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("fasthttp Serve on a bare listener returned %v; this test assumes it returns EMFILE", err)
	}

	inner := &emfileListener{InmemoryListener: fasthttputil.NewInmemoryListener(), n: 4}
	var slept []time.Duration
	ln := &RetryListener{Listener: inner, sleep: func(d time.Duration) { slept = append(slept, d) }}
	hs := (&Server{}).HTTPServer()
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return inner.Dial() }}
	for i := range 3 {
		status, _, err := c.GetTimeout(nil, "http://x/healthz", 10*time.Second)
		if err != nil || status != 200 {
			t.Fatalf("healthz %d after EMFILE: %d %v", i, status, err)
		}
	}
	hs.Shutdown()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v after shutdown", err)
	}
	if want := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}; !slices.Equal(slept, want) {
		t.Fatalf("backoffs %v; want %v", slept, want)
	}
}

// TestRaiseFileLimit: the soft RLIMIT_NOFILE ends at the hard limit.
func TestRaiseFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
	low := orig
	low.Cur = min(orig.Max, 256)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	got, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if now.Cur != orig.Max || got != orig.Max {
		t.Fatalf("soft limit %d (returned %d) after RaiseFileLimit; want the hard limit %d", now.Cur, got, orig.Max)
	}
}

// TestLimiterBoundedAndAllocationFree: a flood of distinct users never grows
// the map past its bound, and a known user's check allocates nothing.
func TestLimiterBoundedAndAllocationFree(t *testing.T) {
	lm := newLimiter[string](RateLimit{Rate: 1, Burst: 2}, 256)
	now := time.Now()
	for i := range 100_000 {
		lm.allow("u"+strconv.Itoa(i), now)
	}
	if n := lm.size(); n > 256 {
		t.Fatalf("%d buckets after 100,000 distinct users; bound 256", n)
	}
	if !lm.allow("alice", now) || !lm.allow("alice", now) || lm.allow("alice", now) {
		t.Fatal("burst 2: want two grabs admitted and the third refused")
	}
	if !lm.allow("alice", now.Add(time.Second)) || lm.allow("alice", now.Add(time.Second)) {
		t.Fatal("rate 1/s: want exactly one more grab after a second")
	}
	if a := testing.AllocsPerRun(1000, func() { lm.allow("alice", now) }); a != 0 {
		t.Fatalf("allow allocates %v times per call for a known user", a)
	}
	if var0 := (*limiter[string])(nil); !var0.allow("x", now) {
		t.Fatal("a nil limiter (limit off) refused")
	}
}

// size is the number of buckets kept.
func (lm *limiter[K]) size() int {
	n := 0
	for i := range lm.shards {
		sh := &lm.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// TestCheckKeysAllocationFree: the key scan added to every decode, the
// grab's included, allocates nothing on a good body.
func TestCheckKeysAllocationFree(t *testing.T) {
	body := []byte(`{"qty": 2}`)
	typ := reflect.TypeFor[grabSaleRequest]()
	fieldsOf(typ)
	if a := testing.AllocsPerRun(1000, func() {
		if err := checkKeys(body, fieldsOf(typ)); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("checkKeys allocates %v times per body", a)
	}
	for body, want := range map[string]string{
		`{"qty":1,"qty":2}`:                 `field "qty" appears more than once`,
		`{"QTY":2}`:                         `unknown field "QTY": field names are case-sensitive; did you mean "qty"?`,
		`{"n":{"qty":1,"qty":2},"qty":1}`:   `unknown field "n": the fields are qty`,
		` { "qty" : [1,{"a":"}"}] , "x":1}`: `unknown field "x": the fields are qty`,
	} {
		err := checkKeys([]byte(body), fieldsOf(typ))
		if err == nil || err.Error() != "bad_request: "+want {
			t.Errorf("%s: %v; want %s", body, err, want)
		}
	}
}

// BenchmarkLimiterAllow is the grab limit's cost per grab, users spread
// over the shards as in a sale.
func BenchmarkLimiterAllow(b *testing.B) {
	lm := newLimiter[string](RateLimit{Rate: 1e9, Burst: 1}, maxLimited)
	users := make([]string, 10_000)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			lm.allow(users[i%len(users)], time.Now())
			i++
		}
	})
}

// BenchmarkCheckKeys is the key scan's cost on a grab body.
func BenchmarkCheckKeys(b *testing.B) {
	body := []byte(`{"qty":2}`)
	fs := fieldsOf(reflect.TypeFor[grabSaleRequest]())
	b.ReportAllocs()
	for b.Loop() {
		checkKeys(body, fs)
	}
}

// TestHandlerPanicAnswers500AndServes: a handler that panics (fasthttp does
// not recover it; serve died with it) answers 500 internal with its request
// id, is counted and logged with its stack but not the request's token, and
// the server, the same connection included, goes on serving; the panicked
// request leaves the in-flight count.
func TestHandlerPanicAnswers500AndServes(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	s := &Server{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	s.Handler()
	s.routes = append([]route{{method: "POST", pattern: "/boom", name: "boom", obs: s.metrics.latency.WithLabelValues("boom"),
		handle: func(*fasthttp.RequestCtx, params) error { panic("boom: index out of range") }}}, s.routes...)
	ln := fasthttputil.NewInmemoryListener()
	hs := s.HTTPServer()
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	defer func() {
		hs.Shutdown()
		<-done
	}()
	const token = "eyJhbGciOiJIUzI1NiJ9.secret-claims.secret-signature"
	c := &fasthttp.HostClient{Addr: "x", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 1}
	for i := range 3 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://x/boom")
		req.Header.SetMethod("POST")
		req.Header.Set("Authorization", "Bearer "+token)
		if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
			t.Fatalf("request %d to the panicking route: %v", i, err)
		}
		if resp.StatusCode() != 500 || !bytes.Contains(resp.Body(), []byte(`"code":"internal"`)) || len(resp.Header.Peek(requestIDHeader)) == 0 {
			t.Fatalf("panicking route answered %d %s (request id %q); want 500 internal with a request id",
				resp.StatusCode(), resp.Body(), resp.Header.Peek(requestIDHeader))
		}
		req.Reset()
		req.SetRequestURI("http://x/healthz")
		if err := c.DoTimeout(req, resp, 10*time.Second); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("healthz after a panic: %d %v", resp.StatusCode(), err)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	if n := s.inFlight.Load(); n != 0 {
		t.Fatalf("%d requests in flight after the panics, want 0", n)
	}
	var m dto.Metric
	if err := s.metrics.panics.WithLabelValues("boom").Write(&m); err != nil || m.GetCounter().GetValue() != 3 {
		t.Fatalf("flashgrab_http_panics_total{route=boom} = %v (%v), want 3", m.GetCounter().GetValue(), err)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if strings.Count(out, "handler panicked") != 3 || !strings.Contains(out, "boom: index out of range") ||
		!strings.Contains(out, "TestHandlerPanicAnswers500AndServes") {
		t.Fatalf("log does not hold each panic with its value and stack:\n%s", out)
	}
	for _, secret := range []string{token, "secret-claims", "secret-signature"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log holds the request's token (%q):\n%s", secret, out)
		}
	}
}

// lockedWriter serialises writes to w: the server logs from its own goroutines.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
