package engine_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// afterEvalSha calls fn once each EVALSHA has its reply.
type afterEvalSha struct{ fn func() }

func (h afterEvalSha) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h afterEvalSha) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "evalsha" {
			h.fn()
		}
		return err
	}
}

func (h afterEvalSha) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestWonGrabSurvivesItsDeadline is issue 13 item 9: a grab whose result is
// in by the time its context ends is answered with the result, not 503. The
// request's context is cancelled right after the script replied and before
// the grab looks at either, 200 times: a select choosing at random between
// the two would lose about half of these wins.
func TestWonGrabSurvivesItsDeadline(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	var cancelRequest atomic.Pointer[context.CancelFunc]
	rdb.AddHook(afterEvalSha{fn: func() {
		if c := cancelRequest.Load(); c != nil {
			(*c)()
		}
	}})
	ctx := context.Background()
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	const grabs = 200
	if _, err := e.CreateSale(ctx, openSale("s1", 1000, 1)); err != nil {
		t.Fatal(err)
	}
	orders := map[string]bool{}
	for u := range grabs {
		c, cancel := context.WithCancel(ctx)
		cancelRequest.Store(&cancel)
		res, err := e.Grab(c, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", u), Qty: 1})
		cancelRequest.Store(nil)
		if c.Err() == nil {
			t.Fatalf("grab u%d: the hook did not cancel its context", u)
		}
		if err != nil {
			t.Fatalf("grab u%d, decided before its context ended: %v, want its order", u, err)
		}
		orders[res.OrderID] = true
	}
	s, err := e.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != grabs || s.Sold != grabs {
		t.Fatalf("%d distinct orders answered, %d sold: want %d each", len(orders), s.Sold, grabs)
	}
}

// stallingConn passes traffic through until stalled; then it swallows what
// is written, so the server never answers and reads wait for their deadline.
type stallingConn struct {
	net.Conn
	stalled *atomic.Bool
}

func (c stallingConn) Write(b []byte) (int, error) {
	if c.stalled.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestGrabDeadlineBoundsRedisWait is issue 13 item 9's second half: against
// a Redis that accepts a grab and never answers, a grab with 100 ms left
// returns 503 (ErrUnavailable) near its deadline, not after the client's 3 s
// ReadTimeout. The client is built as cmd/flashgrab builds it
// (ContextTimeoutEnabled). The bound is generous: this is a fault test.
func TestGrabDeadlineBoundsRedisWait(t *testing.T) {
	_, prefix := testenv.Redis(t)
	var stalled atomic.Bool
	var d net.Dialer
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), ReadTimeout: 3 * time.Second,
		MaxRetries: 0, ContextTimeoutEnabled: true,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return stallingConn{Conn: c, stalled: &stalled}, nil
		}})
	defer rdb.Close()
	ctx := context.Background()
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateSale(ctx, openSale("s1", 100, 1)); err != nil {
		t.Fatal(err)
	}
	stalled.Store(true)
	var wg sync.WaitGroup
	for u := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := e.Grab(c, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", u), Qty: 1})
			took := time.Since(start)
			if !errors.Is(err, flashgrab.ErrUnavailable) {
				t.Errorf("grab u%d against a silent Redis: %v, want ErrUnavailable", u, err)
			}
			if took > time.Second {
				t.Errorf("grab u%d with a 100ms deadline returned after %v", u, took)
			}
		}()
	}
	wg.Wait()
}
