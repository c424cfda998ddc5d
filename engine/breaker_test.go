package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestBreakerFailsFastAndRecovers is issue 9 item 6 on one Redis: with
// Redis cut, once the breaker is open 200 grabs answer ErrUnavailable with a
// p99 under 100 ms (the target is 50 ms; the bound is generous because this
// machine is shared) and cost the proxy almost no connections, since only
// the probe dials; every partition is reported down; within 1 s of Redis
// returning grabs win again, with no restart.
func TestBreakerFailsFastAndRecovers(t *testing.T) {
	rdb, prefix, proxy := testenv.RedisBehindProxy(t)
	ctx := context.Background()
	const partitions = 4
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: partitions}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, err := e.CreateSale(ctx, openSale("s1", 1000, 1)); err != nil {
		t.Fatal(err)
	}
	grab := func(user string) error {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := e.Grab(c, flashgrab.GrabRequest{SaleID: "s1", UserID: user, Qty: 1})
		return err
	}
	if err := grab("before"); err != nil {
		t.Fatalf("grab before the cut: %v", err)
	}

	proxy.Down()
	n := 0
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		n++
		if err := grab("opening-" + strconv.Itoa(n)); !errors.Is(err, flashgrab.ErrUnavailable) {
			t.Fatalf("grab with Redis cut: %v, want ErrUnavailable", err)
		}
		down := e.PartitionsDown(ctx)
		return len(down) == partitions, fmt.Sprintf("partitions down %v after %d failed grabs, want all %d", down, n, partitions)
	})

	const grabs = 200
	accepted := proxy.Accepted()
	took := make([]time.Duration, grabs)
	for i := range grabs {
		start := time.Now()
		err := grab("cut-" + strconv.Itoa(i))
		took[i] = time.Since(start)
		if !errors.Is(err, flashgrab.ErrUnavailable) {
			t.Fatalf("grab %d with the breaker open: %v, want ErrUnavailable", i, err)
		}
	}
	slices.Sort(took)
	t.Logf("breaker open: %d grabs, p50 %v, p99 %v, max %v, %d connections to the proxy", grabs,
		took[grabs/2-1], took[grabs*99/100-1], took[grabs-1], proxy.Accepted()-accepted)
	if p99 := took[grabs*99/100-1]; p99 > 100*time.Millisecond {
		t.Errorf("p99 of %d grabs with the breaker open: %v, want under 100 ms (target 50 ms)", grabs, p99)
	}
	// The probe dials once per 100 ms; 200 grabs that touch no network
	// take far less than a second.
	if dials := proxy.Accepted() - accepted; dials > 10 {
		t.Errorf("%d connections reached the proxy during %d grabs with the breaker open, want at most 10 (the probe's)", dials, grabs)
	}

	proxy.Up()
	back := time.Now()
	testenv.Eventually(t, time.Second, func() (bool, string) {
		err := grab("after")
		return err == nil, fmt.Sprintf("grab after Redis returned: %v", err)
	})
	t.Logf("first winning grab %v after Redis returned", time.Since(back))
	if down := e.PartitionsDown(ctx); len(down) != 0 {
		t.Errorf("partitions down after recovery: %v, want none", down)
	}
	s, err := e.Sale(ctx, "s1")
	if err != nil || s.Sold != 2 {
		t.Fatalf("sale after recovery: %+v %v, want 2 sold (before and after the cut)", s, err)
	}
}

// awaitPartitionsUp waits for e's breakers to close once Redis is back: the
// probe closes them within its period, not the next call.
func awaitPartitionsUp(t *testing.T, e *engine.Engine) {
	t.Helper()
	testenv.Eventually(t, time.Second, func() (bool, string) {
		down := e.PartitionsDown(context.Background())
		return len(down) == 0, fmt.Sprintf("partitions %v down after Redis returned, want none", down)
	})
}

// TestBusinessErrorsKeepBreakerClosed: replies are answers, however
// negative: sold out, limit reached, a script's error reply and NOSCRIPT,
// far more often than the breaker's threshold, leave every partition up and
// the next grab winning.
func TestBusinessErrorsKeepBreakerClosed(t *testing.T) {
	rdb, prefix, _ := testenv.RedisBehindProxy(t)
	ctx := context.Background()
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4},
		SoldOutTTL: -1}) // every sold-out grab asks Redis
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, err := e.CreateSale(ctx, openSale("gone", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateSale(ctx, openSale("open", 100, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "gone", UserID: "u0", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "open", UserID: "u0", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "gone", UserID: "u" + strconv.Itoa(i+1), Qty: 1}); !errors.Is(err, flashgrab.ErrSoldOut) {
			t.Fatalf("grab %d of a sold-out sale: %v, want ErrSoldOut", i, err)
		}
		if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "open", UserID: "u0", Key: "k" + strconv.Itoa(i), Qty: 1}); !errors.Is(err, flashgrab.ErrLimitReached) {
			t.Fatalf("grab %d past the limit: %v, want ErrLimitReached", i, err)
		}
		if err := rdb.Eval(ctx, "return redis.error_reply('ERR bad_qty')", nil).Err(); err == nil {
			t.Fatal("the script's error reply came back as no error")
		}
		if err := rdb.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err(); err == nil {
			t.Fatal("EVALSHA of an unknown script: no error, want NOSCRIPT")
		}
	}
	if down := e.PartitionsDown(ctx); len(down) != 0 {
		t.Fatalf("partitions down after 40 error replies: %v, want none", down)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "open", UserID: "u1", Qty: 1}); err != nil {
		t.Fatalf("grab after the error replies: %v", err)
	}
}
