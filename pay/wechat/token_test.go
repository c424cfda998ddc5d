package wechat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// tokenServer is a /cgi-bin/token endpoint that counts fetches and, like
// WeChat, makes every fetch replace the current token.
type tokenServer struct {
	fetches   atomic.Int64
	expiresIn atomic.Int64
	fail      atomic.Bool // answer {"errcode":-1}
	mu        sync.Mutex
	current   string
}

func newTokenServer(t *testing.T) (*tokenServer, string) {
	ts := &tokenServer{}
	ts.expiresIn.Store(7200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/cgi-bin/token" || q.Get("grant_type") != "client_credential" || q.Get("appid") != "wxapp" {
			fmt.Fprint(w, `{"errcode":40013,"errmsg":"invalid appid"}`)
			return
		}
		if q.Get("secret") != "s3cret" {
			fmt.Fprint(w, `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest"}`)
			return
		}
		if ts.fail.Load() {
			fmt.Fprint(w, `{"errcode":-1,"errmsg":"system error"}`)
			return
		}
		// Latency widens the window in which other instances could race.
		time.Sleep(20 * time.Millisecond)
		n := ts.fetches.Add(1)
		ts.mu.Lock()
		ts.current = fmt.Sprintf("T%d", n)
		ts.mu.Unlock()
		fmt.Fprintf(w, `{"access_token":"T%d","expires_in":%d}`, n, ts.expiresIn.Load())
	}))
	t.Cleanup(srv.Close)
	return ts, srv.URL
}

// call is a downstream API that accepts only the current token.
func (ts *tokenServer) call(token string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if token != ts.current {
		return &APIError{Code: ErrCodeTokenExpired, Message: "access_token expired"}
	}
	return nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tokenFixture makes n TokenSources ("instances") sharing one Redis key
// under a random prefix that is deleted afterwards.
func tokenFixture(t *testing.T, n int, baseURL string, clock *fakeClock) ([]*TokenSource, redis.UniversalClient, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t) // deletes prefix:* afterwards
	key := prefix + ":wechat:token:wxapp"
	var out []*TokenSource
	for range n {
		s, err := NewTokenSource(TokenConfig{AppID: "wxapp", Secret: "s3cret", BaseURL: baseURL, Redis: rdb, Key: key,
			PollInterval: 5 * time.Millisecond, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out, rdb, key
}

// hammer calls Token from perInstance goroutines on every instance at once
// and returns the distinct tokens seen.
func hammer(t *testing.T, sources []*TokenSource, perInstance int) map[string]int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		seen  = map[string]int{}
		start = make(chan struct{})
	)
	for _, s := range sources {
		for range perInstance {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				tok, err := s.Token(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[tok]++
				mu.Unlock()
			})
		}
	}
	close(start)
	wg.Wait()
	return seen
}

func TestTokenOneFetchAcrossInstances(t *testing.T) {
	ts, url := newTokenServer(t)
	clock := &fakeClock{t: time.Unix(1704081606, 0)}
	sources, rdb, key := tokenFixture(t, 3, url, clock)
	seen := hammer(t, sources, 50)
	if n := ts.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	if len(seen) != 1 || seen["T1"] != 150 {
		t.Fatalf("tokens handed out: %v", seen)
	}
	if ttl := rdb.PTTL(context.Background(), key).Val(); ttl <= 0 || ttl > 7200*time.Second {
		t.Fatalf("cached token TTL %v, want the token's lifetime", ttl)
	}
	if rdb.Exists(context.Background(), key+":lock").Val() != 0 {
		t.Fatal("refresh lock left behind")
	}
}

func TestTokenRefreshesOnceBeforeExpiry(t *testing.T) {
	ts, url := newTokenServer(t)
	clock := &fakeClock{t: time.Unix(1704081606, 0)}
	sources, _, _ := tokenFixture(t, 3, url, clock)
	hammer(t, sources, 5)

	clock.Advance(7200*time.Second - 6*time.Minute) // still more than 5 min left: no refresh
	if seen := hammer(t, sources, 10); ts.fetches.Load() != 1 || len(seen) != 1 {
		t.Fatalf("refreshed too early: %d fetches, tokens %v", ts.fetches.Load(), seen)
	}

	clock.Advance(2 * time.Minute) // 4 min left: exactly one instance refreshes
	seen := hammer(t, sources, 20)
	if n := ts.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after nearing expiry, want 2", n)
	}
	for tok := range seen {
		if tok != "T1" && tok != "T2" { // T1 is still valid while T2 is fetched
			t.Fatalf("handed out %q", tok)
		}
	}
	if seen := hammer(t, sources, 5); len(seen) != 1 || seen["T2"] != 15 {
		t.Fatalf("after the refresh: %v", seen)
	}

	// Past T2's expiry with nobody having refreshed: callers wait for the
	// new token instead of getting an expired one.
	clock.Advance(3 * time.Hour)
	if seen := hammer(t, sources, 10); ts.fetches.Load() != 3 || len(seen) != 1 || seen["T3"] != 30 {
		t.Fatalf("after expiry: %d fetches, tokens %v", ts.fetches.Load(), seen)
	}
}

func TestTokenShortLifetimeDoesNotRefreshEveryCall(t *testing.T) {
	ts, url := newTokenServer(t)
	ts.expiresIn.Store(60) // shorter than RefreshBefore
	clock := &fakeClock{t: time.Unix(1704081606, 0)}
	sources, _, _ := tokenFixture(t, 1, url, clock)
	hammer(t, sources, 5)
	clock.Advance(29 * time.Second)
	hammer(t, sources, 5)
	if n := ts.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches within half the lifetime, want 1", n)
	}
}

func TestTokenDoRetriesOnceOnStale(t *testing.T) {
	ts, url := newTokenServer(t)
	clock := &fakeClock{t: time.Unix(1704081606, 0)}
	sources, _, _ := tokenFixture(t, 3, url, clock)
	ctx := context.Background()
	if _, err := sources[0].Token(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone outside fetched a token: T1 is now refused downstream.
	ts.mu.Lock()
	ts.current = "OUTSIDE"
	ts.mu.Unlock()

	// Every instance, many goroutines, all holding the stale T1: one refresh in all.
	var wg sync.WaitGroup
	var calls atomic.Int64
	for _, s := range sources {
		for range 20 {
			wg.Go(func() {
				err := s.Do(ctx, func(tok string) error { calls.Add(1); return ts.call(tok) })
				if err != nil {
					t.Errorf("Do: %v", err)
				}
			})
		}
	}
	wg.Wait()
	if n := ts.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (one refresh for every stale caller)", n)
	}
	if c := calls.Load(); c < 60 || c > 120 {
		t.Fatalf("%d downstream calls for 60 Do, want between 60 and 120", c)
	}

	// A downstream that always says stale: exactly one refresh and one retry, no loop.
	calls.Store(0)
	before := ts.fetches.Load()
	err := sources[1].Do(ctx, func(tok string) error {
		calls.Add(1)
		return &APIError{Code: ErrCodeInvalidCredential, Message: "invalid credential"}
	})
	if !IsStaleToken(err) || calls.Load() != 2 || ts.fetches.Load() != before+1 {
		t.Fatalf("err %v, %d calls, %d new fetches; want stale error, 2 calls, 1 fetch", err, calls.Load(), ts.fetches.Load()-before)
	}

	// Any other error is returned as is, without a retry.
	calls.Store(0)
	other := &APIError{Code: 45009, Message: "reach max api daily quota limit"}
	if err := sources[2].Do(ctx, func(string) error { calls.Add(1); return other }); !errors.Is(err, other) || calls.Load() != 1 {
		t.Fatalf("err %v after %d calls", err, calls.Load())
	}
}

func TestTokenFetchErrors(t *testing.T) {
	ts, url := newTokenServer(t)
	clock := &fakeClock{t: time.Unix(1704081606, 0)}
	sources, rdb, key := tokenFixture(t, 1, url, clock)
	ts.fail.Store(true)
	_, err := sources[0].Token(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != -1 {
		t.Fatalf("got %v, want errcode -1", err)
	}
	// The failed fetcher keeps the lock briefly so others back off.
	if ttl := rdb.PTTL(context.Background(), key+":lock").Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("lock TTL after a failure %v, want the 1 s backoff", ttl)
	}

	wrong, err := NewTokenSource(TokenConfig{AppID: "wxapp", Secret: "wrong-secret-value", BaseURL: url, Redis: rdb, Key: key + ":other"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.Token(context.Background())
	if !errors.As(err, &apiErr) || apiErr.Code != 40001 || strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatalf("got %v", err)
	}

	// Transport errors must not leak the secret from the URL.
	dead, _ := NewTokenSource(TokenConfig{AppID: "wxapp", Secret: "wrong-secret-value", BaseURL: "http://127.0.0.1:1", Redis: rdb, Key: key + ":dead"})
	if _, err := dead.Token(context.Background()); err == nil || strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatalf("got %v", err)
	}
}

func TestTokenWaitIsBoundedByContext(t *testing.T) {
	ts, url := newTokenServer(t)
	clock := &fakeClock{t: time.Unix(1704081606, 0)}
	sources, rdb, key := tokenFixture(t, 1, url, clock)
	// Another instance holds the lock and never delivers.
	rdb.Set(context.Background(), key+":lock", "someone-else", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := sources[0].Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if ts.fetches.Load() != 0 {
		t.Fatal("fetched while another instance held the lock")
	}
	if rdb.Get(context.Background(), key+":lock").Val() != "someone-else" {
		t.Fatal("another instance's lock was touched")
	}
}
