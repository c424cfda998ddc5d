package engine_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

func newEngine(t *testing.T) (*engine.Engine, *redis.Client) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	e, err := engine.New(context.Background(), engine.Config{Redis: rdb,
		Keys: engine.Keyspace{Prefix: prefix, Partitions: 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, rdb
}

func openSale(id string, stock, limit int64) flashgrab.Sale {
	now := time.Now()
	return flashgrab.Sale{ID: id, MerchantID: "m1", PriceCents: 150, Stock: stock, PerUserLimit: limit,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
}

// TestGrabRetryReturnsSameOrder: a retry returns the first order; a fresh
// idempotency key buys again up to the limit, then limit_reached.
func TestGrabRetryReturnsSameOrder(t *testing.T) {
	e, _ := newEngine(t)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s2", 10, 2)); err != nil {
		t.Fatal(err)
	}
	first, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s2", UserID: "bob", Qty: 1})
	if err != nil || first.Repeat {
		t.Fatalf("first grab: %+v %v", first, err)
	}
	again, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s2", UserID: "bob", Qty: 1})
	if err != nil || !again.Repeat || again.OrderID != first.OrderID || again.AmountCents != 150 {
		t.Fatalf("retry: %+v %v, want repeat of %s", again, err, first.OrderID)
	}
	second, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s2", UserID: "bob", Key: "k2", Qty: 1})
	if err != nil || second.OrderID == first.OrderID {
		t.Fatalf("second purchase: %+v %v", second, err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s2", UserID: "bob", Key: "k3", Qty: 1}); !errors.Is(err, flashgrab.ErrLimitReached) {
		t.Fatalf("third purchase: %v, want limit_reached", err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s2", UserID: "carol", Qty: 3}); err == nil {
		t.Fatal("qty above the limit accepted")
	}
	s, _ := e.Sale(ctx, "s2")
	if s.Stock != 8 || s.Sold != 2 {
		t.Fatalf("stock %d sold %d, want 8 and 2", s.Stock, s.Sold)
	}
	o, err := e.Order(ctx, first.OrderID)
	if err != nil || o.UserID != "bob" || o.SaleID != "s2" || o.Qty != 1 || o.AmountCents != 150 {
		t.Fatalf("order: %+v %v", o, err)
	}
}

func TestGrabWindowAndMissing(t *testing.T) {
	e, _ := newEngine(t)
	ctx := context.Background()
	now := time.Now()
	future := flashgrab.Sale{ID: "later", MerchantID: "m", PriceCents: 1, Stock: 1, PerUserLimit: 1,
		StartsAt: now.Add(time.Hour), EndsAt: now.Add(2 * time.Hour)}
	past := flashgrab.Sale{ID: "over", MerchantID: "m", PriceCents: 1, Stock: 1, PerUserLimit: 1,
		StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)}
	for _, s := range []flashgrab.Sale{future, past} {
		if _, err := e.CreateSale(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	moved := future
	moved.EndsAt = moved.EndsAt.Add(time.Hour)
	if _, err := e.CreateSale(ctx, moved); !errors.Is(err, flashgrab.ErrExists) {
		t.Fatalf("create under a taken id with other terms: %v, want ErrExists", err)
	}
	for id, want := range map[string]error{"later": flashgrab.ErrNotStarted, "over": flashgrab.ErrEnded, "nope": flashgrab.ErrNotFound} {
		if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: id, UserID: "u", Qty: 1}); !errors.Is(err, want) {
			t.Errorf("grab %s: %v, want %v", id, err, want)
		}
	}
}

// TestGrabSurvivesScriptFlush: a Redis restart empties the script cache; the
// next grab reloads the script instead of failing.
func TestGrabSurvivesScriptFlush(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s3", 5, 1)); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s3", UserID: "u", Qty: 1}); err != nil {
		t.Fatalf("grab after SCRIPT FLUSH: %v", err)
	}
}

// TestGrabRedisDown: with Redis unreachable a grab fails fast with
// ErrUnavailable, and works again once Redis is back (and the breaker's probe
// has seen it), with no restart.
func TestGrabRedisDown(t *testing.T) {
	rdb, prefix, proxy := testenv.RedisBehindProxy(t)
	ctx := context.Background()
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateSale(ctx, openSale("s4", 5, 1)); err != nil {
		t.Fatal(err)
	}
	proxy.Down()
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s4", UserID: "u", Qty: 1}); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("grab with Redis down: %v, want ErrUnavailable", err)
	}
	proxy.Up()
	awaitPartitionsUp(t, e)
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s4", UserID: "u", Qty: 1}); err != nil {
		t.Fatalf("grab after Redis returned: %v", err)
	}
}

func TestIDsAreUniqueAndOrdered(t *testing.T) {
	g := engine.NewIDs(7)
	var prev int64
	for i := 0; i < 100000; i++ {
		id, err := g.Next()
		if err != nil || id <= prev {
			t.Fatalf("id %d (%v) after %d: not increasing", id, err, prev)
		}
		prev = id
	}
}

// TestGrabLargeAmountsStayExact: the largest price times the largest
// quantity (10^15 fen) is written and read back digit for digit, in the
// reply, the order and the settlement event.
func TestGrabLargeAmountsStayExact(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	s := openSale("big", flashgrab.MaxPerUserLimit*2, flashgrab.MaxPerUserLimit)
	s.PriceCents = flashgrab.MaxPriceCents
	if _, err := e.CreateSale(ctx, s); err != nil {
		t.Fatal(err)
	}
	const want = int64(flashgrab.MaxPriceCents) * flashgrab.MaxPerUserLimit
	r, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "big", UserID: "whale", Qty: flashgrab.MaxPerUserLimit})
	if err != nil || r.AmountCents != want || r.Remaining != flashgrab.MaxPerUserLimit {
		t.Fatalf("grab: %+v %v, want amount %d", r, err, want)
	}
	o, err := e.Order(ctx, r.OrderID)
	if err != nil || o.AmountCents != want || o.Qty != flashgrab.MaxPerUserLimit {
		t.Fatalf("order: %+v %v", o, err)
	}
	p := e.Keys().Partition("big")
	msgs, _ := rdb.XRange(ctx, e.Keys().Events(p), "-", "+").Result()
	evs, err := engine.ParseEntry(p, msgs[len(msgs)-1])
	if err != nil || len(evs) != 1 || evs[0].Order.AmountCents != want {
		t.Fatalf("events: %+v %v, want one order of %d fen", evs, err, want)
	}
	again, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "big", UserID: "whale", Qty: flashgrab.MaxPerUserLimit})
	if err != nil || !again.Repeat || again.AmountCents != want {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	if sale, _ := e.Sale(ctx, "big"); sale.Sold != flashgrab.MaxPerUserLimit || sale.Stock != flashgrab.MaxPerUserLimit {
		t.Fatalf("sale after: %+v", sale)
	}
}

// TestOrderRecordsExpire: Redis keeps an order record for Retention,
// not forever (MySQL keeps the order).
func TestOrderRecordsExpire(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 16},
		Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateSale(ctx, openSale("s", 5, 1)); err != nil {
		t.Fatal(err)
	}
	r, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s", UserID: "u", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	ttl := rdb.PTTL(ctx, e.Keys().Orders(e.Keys().Partition("s"), r.OrderID)).Val()
	if ttl <= 0 || ttl > time.Hour {
		t.Fatalf("order bucket TTL %v, want within (0, 1h]", ttl)
	}
}

// TestCreateSaleIsIdempotent is issue 13 item 10: a create sent again with
// identical terms (go-redis resends once when a reply is lost) returns the
// sale as the first did and records one creation event, not two; any other
// terms under the id fail with ErrExists and change nothing.
func TestCreateSaleIsIdempotent(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	s := openSale("s1", 10, 2)
	first, err := e.CreateSale(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.CreateSale(ctx, s)
	if err != nil || !reflect.DeepEqual(again, first) {
		t.Fatalf("identical create again: %+v %v, want %+v", again, err, first)
	}
	for name, change := range map[string]func(*flashgrab.Sale){
		"merchant": func(s *flashgrab.Sale) { s.MerchantID = "m2" },
		"price":    func(s *flashgrab.Sale) { s.PriceCents++ },
		"stock":    func(s *flashgrab.Sale) { s.Stock++ },
		"limit":    func(s *flashgrab.Sale) { s.PerUserLimit++ },
		"start":    func(s *flashgrab.Sale) { s.StartsAt = s.StartsAt.Add(-time.Second) },
		"end":      func(s *flashgrab.Sale) { s.EndsAt = s.EndsAt.Add(time.Second) },
	} {
		other := s
		change(&other)
		if _, err := e.CreateSale(ctx, other); !errors.Is(err, flashgrab.ErrExists) {
			t.Errorf("create with another %s: %v, want ErrExists", name, err)
		}
	}
	got, err := e.Sale(ctx, "s1")
	if err != nil || got.Stock != 10 || got.PerUserLimit != 2 || got.MerchantID != "m1" || got.PriceCents != 150 {
		t.Fatalf("sale after the creates: %+v %v", got, err)
	}
	ks := e.Keys()
	msgs, err := rdb.XRange(ctx, ks.Events(ks.Partition("s1")), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, m := range msgs {
		if m.Values["k"] == "sale" && m.Values["id"] == "s1" {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d sale creation events for s1, want 1", created)
	}
}

// TestLeasedIDsRefuseOutsideLease: a leased generator hands out ids only
// while it holds a node whose time is not up (issue 13 item 3).
func TestLeasedIDsRefuseOutsideLease(t *testing.T) {
	g := engine.NewLeasedIDs()
	if _, err := g.Next(); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("before any lease: %v, want ErrUnavailable", err)
	}
	g.Hold(5, time.Now().Add(time.Hour))
	id, err := g.Next()
	if err != nil || id>>12&1023 != 5 {
		t.Fatalf("under a lease on node 5: %d %v", id, err)
	}
	g.Hold(5, time.Now().Add(-time.Millisecond))
	if _, err := g.Next(); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("past the lease's time: %v, want ErrUnavailable", err)
	}
	g.Hold(6, time.Now().Add(time.Hour))
	g.Drop()
	if _, err := g.Next(); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("after Drop: %v, want ErrUnavailable", err)
	}
}
