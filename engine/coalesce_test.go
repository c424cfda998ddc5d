package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

func newEngineWith(t *testing.T, cfg engine.Config) (*engine.Engine, *redis.Client) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	cfg.Redis, cfg.Keys = rdb, engine.Keyspace{Prefix: prefix, Partitions: 16}
	e, err := engine.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, rdb
}

// TestGrabNeverOversells is invariants 1 and 2, with coalescing on (the
// default), with small batches and off: 1,000 users, a fifth retrying three
// times, all at once, on 100 units, per-user limit 1 and 2. Exactly 100
// orders to 100 distinct users, stock 0, one settlement event per order. With
// coalescing on, the script calls must be fewer than the grabs they decided:
// batches really formed.
func TestGrabNeverOversells(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  engine.Config
	}{
		{"coalesced", engine.Config{}},
		{"coalesced-batch-8", engine.Config{MaxBatch: 8}},
		{"per-call", engine.Config{NoCoalesce: true}},
	} {
		for _, limit := range []int64{1, 2} {
			t.Run(fmt.Sprintf("%s/limit=%d", c.name, limit), func(t *testing.T) {
				e, rdb := newEngineWith(t, c.cfg)
				ctx := context.Background()
				if _, err := e.CreateSale(ctx, openSale("s1", 100, limit)); err != nil {
					t.Fatal(err)
				}
				const users, stock = 1000, 100
				type win struct{ user, order string }
				var (
					mu    sync.Mutex
					wins  []win
					wg    sync.WaitGroup
					start = make(chan struct{})
					fails atomic.Int64
				)
				for u := 0; u < users; u++ {
					tries := 1
					if u%5 == 0 {
						tries = 4
					}
					for range tries {
						wg.Add(1)
						go func() {
							defer wg.Done()
							<-start
							user := fmt.Sprintf("u%d", u)
							r, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: user, Qty: 1})
							switch {
							case err == nil:
								mu.Lock()
								wins = append(wins, win{user, r.OrderID})
								mu.Unlock()
							case errors.Is(err, flashgrab.ErrSoldOut):
							default:
								fails.Add(1)
								t.Errorf("user %s: unexpected %v", user, err)
							}
						}()
					}
				}
				close(start)
				wg.Wait()
				if fails.Load() > 0 {
					t.FailNow()
				}
				orderOf := map[string]string{}
				orders := map[string]bool{}
				for _, w := range wins {
					if prev, ok := orderOf[w.user]; ok && prev != w.order {
						t.Fatalf("user %s holds two orders: %s and %s", w.user, prev, w.order)
					}
					orderOf[w.user] = w.order
					orders[w.order] = true
				}
				if len(orders) != stock || len(orderOf) != stock {
					t.Fatalf("%d orders for %d winners, want %d and %d", len(orders), len(orderOf), stock, stock)
				}
				s, err := e.Sale(ctx, "s1")
				if err != nil {
					t.Fatal(err)
				}
				if s.Stock != 0 || s.Sold != stock {
					t.Fatalf("stock %d sold %d, want 0 and %d", s.Stock, s.Sold, stock)
				}
				checkOrderEvents(t, e, rdb, "s1", orders)

				st := e.BatchStats()
				if c.cfg.NoCoalesce {
					if st.Calls != st.Users || st.MaxBatch != 1 {
						t.Fatalf("per-call engine batched: %+v", st)
					}
					return
				}
				if st.Calls >= st.Users || st.MaxBatch < 2 {
					t.Fatalf("%d script calls decided %d grabs (largest batch %d): no batches formed", st.Calls, st.Users, st.MaxBatch)
				}
				if c.cfg.MaxBatch > 0 && st.MaxBatch > int64(c.cfg.MaxBatch) {
					t.Fatalf("a batch of %d users, over MaxBatch %d", st.MaxBatch, c.cfg.MaxBatch)
				}
				t.Logf("%d grabs decided by %d script calls in %d round trips (largest batch %d); %d answered from the sold-out mark",
					st.Users, st.Calls, st.Pipelines, st.MaxBatch, e.SoldOutStats().Answered)
			})
		}
	}
}

// checkOrderEvents: exactly one settlement event per won order, plus the sale's own.
func checkOrderEvents(t *testing.T, e *engine.Engine, rdb *redis.Client, sale string, orders map[string]bool) {
	t.Helper()
	p := e.Keys().Partition(sale)
	msgs, err := rdb.XRange(context.Background(), e.Keys().Events(p), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	events := 0
	for _, m := range msgs {
		evs, err := engine.ParseEntry(p, m)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			events++
			if ev.Kind == flashgrab.EventOrder {
				if seen[ev.Order.ID] || !orders[ev.Order.ID] {
					t.Fatalf("event for order %s is a duplicate or names no won order", ev.Order.ID)
				}
				seen[ev.Order.ID] = true
			}
		}
	}
	if len(seen) != len(orders) || events != len(orders)+1 {
		t.Fatalf("stream holds %d events with %d order events, want %d and %d", events, len(seen), len(orders)+1, len(orders))
	}
}

// TestCoalescedGrabsOnManySales: grabs of several sales at once are batched
// per sale and never mixed up: every sale sells exactly its stock, to its
// own buyers. With one round trip in flight at a time, batches of different
// sales that are ready together share it.
func TestCoalescedGrabsOnManySales(t *testing.T) {
	e, _ := newEngineWith(t, engine.Config{MaxPipelines: 1})
	ctx := context.Background()
	const sales, stock, users = 8, 30, 100
	for i := range sales {
		if _, err := e.CreateSale(ctx, openSale(fmt.Sprintf("m%d", i), stock, 1)); err != nil {
			t.Fatal(err)
		}
	}
	var won [sales]atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range sales {
		for u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				sale := fmt.Sprintf("m%d", i)
				r, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: sale, UserID: fmt.Sprintf("u%d", u), Qty: 1})
				switch {
				case err == nil:
					if r.SaleID != sale {
						t.Errorf("grab of %s answered for %s", sale, r.SaleID)
					}
					o, err := e.Order(ctx, r.OrderID)
					if err != nil || o.SaleID != sale || o.UserID != fmt.Sprintf("u%d", u) {
						t.Errorf("order %s of u%d on %s: %+v %v", r.OrderID, u, sale, o, err)
					}
					won[i].Add(1)
				case !errors.Is(err, flashgrab.ErrSoldOut):
					t.Errorf("grab %s: %v", sale, err)
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	for i := range sales {
		s, err := e.Sale(ctx, fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if won[i].Load() != stock || s.Stock != 0 || s.Sold != stock {
			t.Errorf("sale m%d: %d won, stock %d, sold %d; want %d, 0, %d", i, won[i].Load(), s.Stock, s.Sold, stock, stock)
		}
	}
	st := e.BatchStats()
	if st.Pipelines >= st.Calls {
		t.Fatalf("%d script calls in %d round trips: no round trip carried several sales", st.Calls, st.Pipelines)
	}
	t.Logf("%d grabs of %d sales: %d script calls in %d round trips", st.Users, sales, st.Calls, st.Pipelines)
}

// TestLoneGrabGoesAtOnce: an idle batcher sends a lone grab straight away as
// a call of its own; nothing waits for company.
func TestLoneGrabGoesAtOnce(t *testing.T) {
	e, _ := newEngineWith(t, engine.Config{})
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 10, 5)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "u", Key: fmt.Sprint("k", i), Qty: 1}); err != nil {
			t.Fatal(err)
		}
		// (Round trips are not counted exactly: a SCRIPT FLUSH by a test
		// elsewhere on this Redis adds a reload and a resend.)
		if st := e.BatchStats(); st.Calls != int64(i+1) || st.MaxBatch != 1 {
			t.Fatalf("after %d lone grabs: %+v, want one call of one user each", i+1, st)
		}
	}
}

// TestCoalescedGrabsSurviveScriptFlush: a flushed script cache under
// concurrent grabs is reloaded, and every grab is decided once.
func TestCoalescedGrabsSurviveScriptFlush(t *testing.T) {
	e, rdb := newEngineWith(t, engine.Config{})
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if _, err := e.CreateSale(ctx, openSale(id, 1000, 1)); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for u := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sale := []string{"a", "b"}[u%2]
				if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: sale, UserID: fmt.Sprintf("r%du%d", round, u), Qty: 1}); err != nil {
					t.Errorf("grab after SCRIPT FLUSH: %v", err)
				}
			}()
		}
		wg.Wait()
	}
	for _, id := range []string{"a", "b"} {
		if s, _ := e.Sale(ctx, id); s.Sold != 150 {
			t.Errorf("sale %s sold %d, want 150", id, s.Sold)
		}
	}
}

// TestCancelledGrabLeavesBatchIntact: grabs whose context ends give up
// alone; the grabs batched with them are decided normally. A grab cancelled
// before it is sent is never decided; one cancelled while in flight may have
// been, exactly as a call of its own.
func TestCancelledGrabLeavesBatchIntact(t *testing.T) {
	e, _ := newEngineWith(t, engine.Config{MaxBatch: 4})
	ctx := context.Background()
	const stock, grabs = 10_000, 600
	if _, err := e.CreateSale(ctx, openSale("s1", stock, 1)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var live, racedWon atomic.Int64
	for u := range grabs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithCancel(ctx)
			defer cancel()
			switch u % 3 {
			case 0:
				cancel() // before it is queued
			case 1:
				go cancel() // at some point while it waits or flies
			}
			_, err := e.Grab(c, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", u), Qty: 1})
			switch {
			case u%3 == 2 && err != nil:
				t.Errorf("live grab u%d: %v", u, err)
			case u%3 == 2:
				live.Add(1)
			case err != nil && !errors.Is(err, context.Canceled):
				t.Errorf("cancelled grab u%d: %v, want context.Canceled", u, err)
			case err == nil && u%3 == 0:
				t.Errorf("grab u%d cancelled before it was sent was decided", u)
			case err == nil:
				racedWon.Add(1)
			}
		}()
	}
	wg.Wait()
	s, err := e.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Stock+s.Sold != stock || s.Sold < live.Load()+racedWon.Load() || s.Sold > 2*grabs/3 {
		t.Fatalf("stock %d sold %d: want stock+sold %d, at least the %d live and %d raced wins, at most %d",
			s.Stock, s.Sold, stock, live.Load(), racedWon.Load(), 2*grabs/3)
	}
}

// TestCoalescedGrabsWhileRedisDown: every waiter of a batch that cannot
// reach Redis gets ErrUnavailable promptly; once Redis is back, grabs work.
func TestCoalescedGrabsWhileRedisDown(t *testing.T) {
	rdb, prefix, proxy := testenv.RedisBehindProxy(t)
	ctx := context.Background()
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := e.CreateSale(ctx, openSale(id, 100, 1)); err != nil {
			t.Fatal(err)
		}
	}
	grabAll := func(tag string, want func(error) bool) {
		var wg sync.WaitGroup
		for u := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				sale := []string{"a", "b"}[u%2]
				if _, err := e.Grab(c, flashgrab.GrabRequest{SaleID: sale, UserID: fmt.Sprintf("%s%d", tag, u), Qty: 1}); !want(err) {
					t.Errorf("%s grab u%d of %s: %v", tag, u, sale, err)
				}
			}()
		}
		wg.Wait()
	}
	proxy.Down()
	grabAll("down", func(err error) bool { return errors.Is(err, flashgrab.ErrUnavailable) })
	proxy.Up()
	awaitPartitionsUp(t, e)
	grabAll("up", func(err error) bool { return err == nil })
}
