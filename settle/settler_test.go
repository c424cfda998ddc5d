package settle_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

type rig struct {
	eng   *engine.Engine
	rdb   *redis.Client
	db    *sql.DB
	books *settle.Books // shared by the rig's settlers on db
	keys  engine.Keyspace
}

func newRig(t *testing.T) *rig {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ks := engine.Keyspace{Prefix: prefix, Partitions: 8}
	eng, err := engine.New(context.Background(), engine.Config{Redis: rdb, Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{eng: eng, rdb: rdb, db: db, books: &settle.Books{DB: db}, keys: ks}
}

// settler starts a settler on db and stops it (flushing) when the test ends.
func (r *rig) settler(t *testing.T, db *sql.DB, consumer string, claimIdle time.Duration) *settle.Settler {
	t.Helper()
	pool, err := ants.NewPool(4)
	if err != nil {
		t.Fatal(err)
	}
	s := &settle.Settler{Redis: r.rdb, DB: db, Keys: r.keys, Pool: pool, Consumer: consumer,
		ClaimIdle: claimIdle, Block: 20 * time.Millisecond, BatchSize: 50}
	if db == r.db {
		s.Books = r.books
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pool.Release() })
	return s
}

// sellOut creates sales and has many users grab them concurrently; it returns
// the orders Redis decided.
func (r *rig) sellOut(t *testing.T, sales, stock, users int) map[string]bool {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	orders := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for s := 0; s < sales; s++ {
		id := fmt.Sprintf("sale%d", s)
		if _, err := r.eng.CreateSale(ctx, engine.Sale{ID: id, MerchantID: "m", PriceCents: 100, Stock: int64(stock),
			PerUserLimit: 1, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for u := 0; u < users; u++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.eng.Grab(ctx, engine.GrabRequest{SaleID: id, UserID: fmt.Sprintf("u%d", u), Qty: 1})
				if err == nil {
					mu.Lock()
					orders[res.OrderID] = true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(orders) != sales*stock {
		t.Fatalf("%d orders won, want %d", len(orders), sales*stock)
	}
	return orders
}

// waitSettled polls until MySQL holds n orders, failing after a generous deadline.
func waitSettled(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got int
		if err := db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&got); err == nil && got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MySQL holds %d orders after 60s, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkExactlyOnce asserts MySQL holds exactly the orders Redis decided, and
// that the streams were trimmed.
func (r *rig) checkExactlyOnce(t *testing.T, want map[string]bool, sales int) {
	t.Helper()
	rows, err := r.db.Query("SELECT id, user_id, sale_id FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	perUser := map[string]int{}
	for rows.Next() {
		var id, user, sale string
		if err := rows.Scan(&id, &user, &sale); err != nil {
			t.Fatal(err)
		}
		if !want[id] || seen[id] {
			t.Fatalf("MySQL order %s: unknown to Redis or twice", id)
		}
		seen[id] = true
		perUser[sale+"/"+user]++
		if perUser[sale+"/"+user] > 1 {
			t.Fatalf("user %s holds two orders of %s", user, sale)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("MySQL holds %d orders, Redis decided %d", len(seen), len(want))
	}
	var nsales int
	r.db.QueryRow("SELECT COUNT(*) FROM sales").Scan(&nsales)
	if nsales != sales {
		t.Fatalf("MySQL holds %d sales, want %d", nsales, sales)
	}
	// Trimmed: once settled, nothing is left in the streams.
	r.waitDrained(t)
}

// waitDrained polls until every partition stream is empty: all settled and
// deleted (the deletes follow the commit).
func (r *rig) waitDrained(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var total int64
		for p := 0; p < r.keys.Partitions; p++ {
			total += r.rdb.XLen(context.Background(), r.keys.Events(p)).Val()
		}
		if total == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams still hold %d entries after 60s", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSettleEveryOrderOnce(t *testing.T) {
	r := newRig(t)
	r.settler(t, r.db, "a", time.Minute)
	orders := r.sellOut(t, 4, 100, 300)
	waitSettled(t, r.db, len(orders))
	r.checkExactlyOnce(t, orders, 4)
}

// TestSettlerTakeover: one settler read a batch and died before committing;
// another consumer read one, committed it and died before acknowledging. A
// new settler claims both after ClaimIdle and settles each order exactly once.
func TestSettlerTakeover(t *testing.T) {
	r := newRig(t)
	orders := r.sellOut(t, 3, 100, 200)
	ctx := context.Background()
	for p := 0; p < r.keys.Partitions; p++ {
		if err := r.rdb.XGroupCreateMkStream(ctx, r.keys.Events(p), "settlers", "0").Err(); err != nil {
			t.Fatal(err)
		}
		// "dead1" reads up to 40 entries and dies.
		if err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "settlers", Consumer: "dead1",
			Streams: []string{r.keys.Events(p), ">"}, Count: 40, Block: -1}).Err(); err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		// "dead2" reads the next 40, commits them, and dies before XACK.
		res, err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "settlers", Consumer: "dead2",
			Streams: []string{r.keys.Events(p), ">"}, Count: 40, Block: -1}).Result()
		if err == redis.Nil {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var evs []engine.Event
		for _, m := range res[0].Messages {
			ev, err := engine.ParseEvent(p, m)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
		dead := &settle.Settler{DB: r.db, Keys: r.keys}
		if err := dead.Apply(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	r.settler(t, r.db, "heir", 100*time.Millisecond)
	waitSettled(t, r.db, len(orders))
	r.checkExactlyOnce(t, orders, 3)
}

// TestSettlerMySQLOutage: grabs go on while MySQL is unreachable; nothing is
// acknowledged; when MySQL returns everything drains, exactly once.
func TestSettlerMySQLOutage(t *testing.T) {
	r := newRig(t)
	pdb, proxy := testenv.MySQLBehindProxy(t, r.db)
	proxy.Down()
	r.settler(t, pdb, "a", time.Minute)
	orders := r.sellOut(t, 2, 100, 150)
	// The settler has read entries and could not commit them: they stay pending.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending int64
		for p := 0; p < r.keys.Partitions; p++ {
			if x, err := r.rdb.XPending(context.Background(), r.keys.Events(p), "settlers").Result(); err == nil {
				pending += x.Count
			}
		}
		if pending > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("settler never read while MySQL was down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var n int
	r.db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&n)
	if n != 0 {
		t.Fatalf("%d orders reached MySQL through a closed proxy", n)
	}
	proxy.Up()
	waitSettled(t, r.db, len(orders))
	r.checkExactlyOnce(t, orders, 2)
}

func redisZ(score int64, member string) redis.Z {
	return redis.Z{Score: float64(score), Member: member}
}
