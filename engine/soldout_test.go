package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// fakeClock is a settable clock for the sold-out mark; it starts at the real
// time, so sales opened around now are open.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

const markTTL = time.Second

func newMarkedEngine(t *testing.T, clock *fakeClock, maxBuyers int) *engine.Engine {
	t.Helper()
	e, _ := newEngineWith(t, engine.Config{SoldOutTTL: markTTL, SoldOutMaxBuyers: maxBuyers, Clock: clock.Now})
	return e
}

// awaitMark grabs as probe users until the sold-out mark answers one, which
// it does once this instance has loaded the sale's buyers. Probes never win:
// the sale is sold out.
func awaitMark(t *testing.T, e *engine.Engine, sale string) {
	t.Helper()
	i := 0
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		i++
		before := e.SoldOutStats().Answered
		_, err := e.Grab(context.Background(), flashgrab.GrabRequest{SaleID: sale, UserID: fmt.Sprint("probe", i), Qty: 1})
		if !errors.Is(err, flashgrab.ErrSoldOut) {
			t.Fatalf("probe grab of sold-out %s: %v", sale, err)
		}
		st := e.SoldOutStats()
		return st.Answered > before, fmt.Sprintf("the sold-out mark of %s answers no probe: %+v", sale, st)
	})
}

// grabLocally grabs and reports whether the mark answered without Redis.
func grabLocally(t *testing.T, e *engine.Engine, r flashgrab.GrabRequest) (flashgrab.GrabResult, error, bool) {
	t.Helper()
	before := e.SoldOutStats().Answered
	res, err := e.Grab(context.Background(), r)
	return res, err, e.SoldOutStats().Answered > before
}

// TestSoldOutMarkAnswersLikeRedis: once marked, a winner's retry gets its own
// order back, a user over the limit limit_reached, a qty over the limit
// bad_qty, anyone else sold_out: the script's answers, without Redis.
func TestSoldOutMarkAnswersLikeRedis(t *testing.T) {
	clock := newFakeClock()
	e := newMarkedEngine(t, clock, 0)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 3, 2)); err != nil {
		t.Fatal(err)
	}
	alice, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 2})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "bob", Key: "k1", Qty: 1})
	if err != nil || bob.Remaining != 0 {
		t.Fatalf("bob's grab: %+v %v, want the last unit", bob, err)
	}
	awaitMark(t, e, "s1")

	res, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1})
	if err != nil || !local || !res.Repeat || res.OrderID != alice.OrderID || res.Qty != 2 || res.AmountCents != 300 {
		t.Fatalf("alice's retry: %+v %v local=%v, want her order %s (qty 2, 300) from memory", res, err, local, alice.OrderID)
	}
	res, err, local = grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "bob", Key: "k1", Qty: 1})
	if err != nil || !local || res.OrderID != bob.OrderID || !res.Repeat {
		t.Fatalf("bob's retry: %+v %v local=%v, want %s", res, err, local, bob.OrderID)
	}
	for _, c := range []struct {
		r    flashgrab.GrabRequest
		want error
	}{
		{flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Key: "again", Qty: 1}, flashgrab.ErrLimitReached},
		{flashgrab.GrabRequest{SaleID: "s1", UserID: "bob", Key: "k2", Qty: 1}, flashgrab.ErrSoldOut},
		{flashgrab.GrabRequest{SaleID: "s1", UserID: "bob", Key: "k2", Qty: 2}, flashgrab.ErrLimitReached},
		{flashgrab.GrabRequest{SaleID: "s1", UserID: "carol", Qty: 1}, flashgrab.ErrSoldOut},
	} {
		_, err, local := grabLocally(t, e, c.r)
		if !errors.Is(err, c.want) || !local {
			t.Errorf("%+v: %v local=%v, want %v from memory", c.r, err, local, c.want)
		}
	}
	var inv *flashgrab.InvalidError
	if _, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "carol", Qty: 3}); !errors.As(err, &inv) || !local {
		t.Errorf("qty over the limit: %v local=%v, want bad_qty from memory", err, local)
	}
	if s, _ := e.Sale(ctx, "s1"); s.Stock != 0 || s.Sold != 3 {
		t.Fatalf("stock %d sold %d, want 0 and 3", s.Stock, s.Sold)
	}
}

// sellOutToAlice creates sale s1 with one unit (per-user limit), lets alice
// win it, waits until e's sold-out mark is active and returns her order.
func sellOutToAlice(t *testing.T, e *engine.Engine, limit int64) flashgrab.Order {
	t.Helper()
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 1, limit)); err != nil {
		t.Fatal(err)
	}
	won, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	awaitMark(t, e, "s1")
	order, err := e.Order(ctx, won.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	return order
}

// otherInstance is a second engine on e's Redis and keys: another server.
func otherInstance(t *testing.T, e *engine.Engine, rdb *redis.Client) *engine.Engine {
	t.Helper()
	other, err := engine.New(context.Background(), engine.Config{Redis: rdb, Keys: e.Keys()})
	if err != nil {
		t.Fatal(err)
	}
	return other
}

// TestSoldOutMarkStalenessIsBounded: stock returned by an order another
// instance released is refused here for at most the TTL. Within it the mark
// still answers sold out; once the TTL has passed the next grab goes to Redis
// and wins the unit.
func TestSoldOutMarkStalenessIsBounded(t *testing.T) {
	clock := newFakeClock()
	e, rdb := newEngineWith(t, engine.Config{SoldOutTTL: markTTL, Clock: clock.Now})
	ctx := context.Background()
	order := sellOutToAlice(t, e, 1)
	if released, err := otherInstance(t, e, rdb).ReleaseOrder(ctx, order); err != nil || !released {
		t.Fatalf("release: %v %v", released, err)
	}
	clock.Advance(markTTL - time.Nanosecond)
	if _, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "dave", Qty: 1}); !errors.Is(err, flashgrab.ErrSoldOut) || !local {
		t.Fatalf("within the TTL: %v local=%v, want the (stale) mark's sold_out", err, local)
	}
	clock.Advance(time.Nanosecond)
	res, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "dave", Qty: 1})
	if err != nil || local || res.Remaining != 0 {
		t.Fatalf("once the TTL has passed: %+v %v local=%v, want dave to win the released unit in Redis", res, err, local)
	}
	// Sold out again: the mark comes back, and knows dave's order.
	awaitMark(t, e, "s1")
	if again, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "dave", Qty: 1}); err != nil || !local || again.OrderID != res.OrderID {
		t.Fatalf("dave's retry: %+v %v local=%v, want %s from memory", again, err, local, res.OrderID)
	}
}

// TestSoldOutMarkDroppedOnLocalRelease: an order released by this instance
// drops its own mark at once.
func TestSoldOutMarkDroppedOnLocalRelease(t *testing.T) {
	clock := newFakeClock()
	e := newMarkedEngine(t, clock, 0)
	ctx := context.Background()
	order := sellOutToAlice(t, e, 1)
	if released, err := e.ReleaseOrder(ctx, order); err != nil || !released {
		t.Fatalf("release: %v %v", released, err)
	}
	if res, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "dave", Qty: 1}); err != nil || local {
		t.Fatalf("grab right after a local release: %+v %v local=%v, want a win in Redis", res, err, local)
	}
}

// TestSoldOutMarkDroppedWhenStockSeen: a grab that sees stock drops the mark
// at once, without waiting for the TTL.
func TestSoldOutMarkDroppedWhenStockSeen(t *testing.T) {
	clock := newFakeClock()
	e, rdb := newEngineWith(t, engine.Config{SoldOutTTL: markTTL, Clock: clock.Now})
	ctx := context.Background()
	order := sellOutToAlice(t, e, 2)
	// Released by another instance, so only a grab that sees stock can
	// tell this one the mark is stale.
	if _, err := otherInstance(t, e, rdb).ReleaseOrder(ctx, order); err != nil {
		t.Fatal(err)
	}
	// The mark expires and a grab that loses on qty sees stock 1 again.
	clock.Advance(markTTL)
	if res, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "erin", Qty: 2}); !errors.Is(err, flashgrab.ErrSoldOut) || res.Remaining != 1 {
		t.Fatalf("qty 2 of 1 left: %+v %v", res, err)
	}
	clock.Advance(-markTTL) // back inside what would have been the old mark's life
	if res, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: "frank", Qty: 1}); err != nil || local {
		t.Fatalf("after stock was seen: %+v %v local=%v, want a win in Redis", res, err, local)
	}
}

// TestSoldOutMarkNeedsZeroStock: a sale with stock left that a grab's qty
// exceeds is not exhausted; nothing is marked or loaded.
func TestSoldOutMarkNeedsZeroStock(t *testing.T) {
	clock := newFakeClock()
	e := newMarkedEngine(t, clock, 0)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 3, 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		res, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprint("b", i), Qty: 2})
		if !errors.Is(err, flashgrab.ErrSoldOut) || res.Remaining != 1 {
			t.Fatalf("qty 2 of 1 left: %+v %v", res, err)
		}
	}
	if res, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "carol", Qty: 1}); err != nil || res.Remaining != 0 {
		t.Fatalf("qty 1 of 1 left: %+v %v, want the last unit", res, err)
	}
	if st := e.SoldOutStats(); st.Answered != 0 {
		t.Fatalf("the mark answered while stock was left: %+v", st)
	}
}

// TestSoldOutMarkSkipsLargeBuyers: a buyers hash over the bound is not
// loaded, so the sale keeps being decided in Redis.
func TestSoldOutMarkSkipsLargeBuyers(t *testing.T) {
	clock := newFakeClock()
	e := newMarkedEngine(t, clock, 3) // two buyers make four fields
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 2, 1)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: u, Qty: 1}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "probe", Qty: 1}); !errors.Is(err, flashgrab.ErrSoldOut) {
			t.Fatalf("probe grab of sold-out s1: %v", err)
		}
		st := e.SoldOutStats()
		return st.TooBig > 0, fmt.Sprintf("the oversized buyers hash is not refused: %+v, want TooBig > 0", st)
	})
	for i := range 10 {
		if _, err, local := grabLocally(t, e, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprint("c", i), Qty: 1}); !errors.Is(err, flashgrab.ErrSoldOut) || local {
			t.Fatalf("grab: %v local=%v, want sold_out from Redis", err, local)
		}
	}
	if st := e.SoldOutStats(); st.Loads != 0 || st.Answered != 0 {
		t.Fatalf("loaded or answered an oversized sale: %+v", st)
	}
}

// TestSoldOutMarkRenewsWithoutReload: once the TTL has passed and Redis
// still says sold out, the mark comes back without loading the buyers again
// when the partition's stream shows no new win.
func TestSoldOutMarkRenewsWithoutReload(t *testing.T) {
	clock := newFakeClock()
	e := newMarkedEngine(t, clock, 0)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	awaitMark(t, e, "s1")
	clock.Advance(markTTL)
	awaitMark(t, e, "s1")
	if st := e.SoldOutStats(); st.Loads != 1 || st.Renewals != 1 {
		t.Fatalf("%+v, want one load and one renewal", st)
	}
}
