package settle_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
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
func (r *rig) settler(t *testing.T, db *sql.DB, consumer string, claimIdle time.Duration, configure ...func(*settle.Settler)) *settle.Settler {
	t.Helper()
	pool, err := ants.NewPool(4)
	if err != nil {
		t.Fatal(err)
	}
	books := &settle.Books{DB: db}
	if db == r.db {
		books = r.books
	}
	s := settle.NewSettler(r.rdb, books, r.keys, pool)
	s.Consumer, s.ClaimIdle, s.Block, s.BatchSize = consumer, claimIdle, 20*time.Millisecond, 50
	for _, c := range configure {
		c(s)
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
		if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: id, MerchantID: "m", PriceCents: 100, Stock: int64(stock),
			PerUserLimit: 1, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for u := 0; u < users; u++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: id, UserID: fmt.Sprintf("u%d", u), Qty: 1})
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
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		var got int
		if err := db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&got); err != nil {
			return false, fmt.Sprintf("count orders: %v", err)
		}
		return got >= n, fmt.Sprintf("MySQL holds %d orders, want %d", got, n)
	})
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
		if !want[id] {
			t.Fatalf("MySQL order %s: unknown to Redis", id)
		}
		if seen[id] {
			t.Fatalf("MySQL order %s: twice", id)
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
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		var total int64
		for p := 0; p < r.keys.Partitions; p++ {
			total += r.rdb.XLen(context.Background(), r.keys.Events(p)).Val()
		}
		return total == 0, fmt.Sprintf("streams hold %d entries, want 0", total)
	})
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
		var evs []flashgrab.Event
		for _, m := range res[0].Messages {
			es, err := engine.ParseEntry(p, m)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, es...)
		}
		dead := settle.NewSettler(nil, &settle.Books{DB: r.db}, r.keys, nil)
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
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		var pending int64
		for p := 0; p < r.keys.Partitions; p++ {
			if x, err := r.rdb.XPending(context.Background(), r.keys.Events(p), "settlers").Result(); err == nil {
				pending += x.Count
			}
		}
		return pending > 0, "the settler has read nothing while MySQL was down: 0 entries pending"
	})
	var n int
	r.db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&n)
	if n != 0 {
		t.Fatalf("%d orders reached MySQL through a closed proxy", n)
	}
	proxy.Up()
	waitSettled(t, r.db, len(orders))
	r.checkExactlyOnce(t, orders, 2)
	for p := 0; p < r.keys.Partitions; p++ {
		if n := len(r.deadLetters(t, p)); n != 0 {
			t.Fatalf("partition %d: %d dead letters from an outage", p, n)
		}
	}
}

func redisZ(score int64, member string) redis.Z {
	return redis.Z{Score: float64(score), Member: member}
}

// addEvent appends a settlement event to partition p's stream, as a script
// would, and returns its entry id.
func (r *rig) addEvent(t *testing.T, p int, fields ...any) string {
	t.Helper()
	id, err := r.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: r.keys.Events(p), Values: fields}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// addOrder appends an order event of 100 fen to partition p.
func (r *rig) addOrder(t *testing.T, p int, id, user string) string {
	t.Helper()
	return r.addEvent(t, p, "k", flashgrab.EventOrder, "id", id, "sale", "s", "user", user, "mch", "m",
		"qty", 1, "amt", 100, "at", time.Now().UnixMilli())
}

// meteredSettler starts a settler on r.db whose metrics the test can read.
func (r *rig) meteredSettler(t *testing.T, consumer string, claimIdle time.Duration) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	pool, err := ants.NewPool(4)
	if err != nil {
		t.Fatal(err)
	}
	s := settle.NewSettler(r.rdb, r.books, r.keys, pool)
	s.Consumer, s.ClaimIdle, s.Block, s.BatchSize = consumer, claimIdle, 20*time.Millisecond, 50
	s.Metrics = settle.NewMetrics(reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pool.Release() })
	return reg
}

// counter reads a counter from reg; 0 when it was never incremented.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// deadLetters returns partition p's dead letters.
func (r *rig) deadLetters(t *testing.T, p int) []redis.XMessage {
	t.Helper()
	msgs, err := r.rdb.XRange(context.Background(), r.keys.Events(p)+"-dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// orderUsers returns each order's buyer as MySQL has it.
func (r *rig) orderUsers(t *testing.T) map[string]string {
	t.Helper()
	rows, err := r.db.Query("SELECT id, user_id FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	users := map[string]string{}
	for rows.Next() {
		var id, user string
		if err := rows.Scan(&id, &user); err != nil {
			t.Fatal(err)
		}
		users[id] = user
	}
	return users
}

// TestSettlerDeadLettersOnlyTheBadEvent: one batch holds 40 good orders, an
// identical replay of a settled order, and two orders of different buyers
// under one id (two engines on one node number). The good ones, the replay and
// the first of the two settle; the second alone goes to the dead-letter
// stream with its reason and is counted, and orders appended later to the
// same partition still settle.
func TestSettlerDeadLettersOnlyTheBadEvent(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	// 3-0 is settled and will be replayed.
	if _, err := r.db.Exec(`INSERT INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, expires_at)
		VALUES ('3-0', 's', 'u3', 'm', 1, 100, NOW(3), NOW(3) + INTERVAL 1 HOUR)`); err != nil {
		t.Fatal(err)
	}
	// alice wins 7-0, and so, later in the same batch, does mallory.
	var bad string
	for i := 0; i < 40; i++ {
		switch i {
		case 5:
			r.addOrder(t, 0, "7-0", "alice")
		case 20:
			bad = r.addOrder(t, 0, "7-0", "mallory")
		}
		r.addOrder(t, 0, fmt.Sprintf("%d-0", 100+i), fmt.Sprintf("u%d", i))
	}
	r.addOrder(t, 0, "3-0", "u3")
	reg := r.meteredSettler(t, "a", time.Minute)
	waitSettled(t, r.db, 42)
	r.waitDrained(t)

	dead := r.deadLetters(t, 0)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1: %v", len(dead), dead)
	}
	v := dead[0].Values
	if v["id"] != bad || v["event_id"] != "7-0" || v["user"] != "mallory" || v["k"] != flashgrab.EventOrder ||
		!strings.Contains(v["reason"].(string), "held by user alice") || !strings.Contains(v["reason"].(string), settle.ErrOrderConflict.Error()) {
		t.Fatalf("dead letter %v, want entry %s, order 7-0 of mallory, reason naming alice's order", v, bad)
	}
	if n := counter(t, reg, "flashgrab_settle_dead_letters_total"); n != 1 {
		t.Fatalf("dead-letter counter %v, want 1", n)
	}
	users := r.orderUsers(t)
	if len(users) != 42 || users["7-0"] != "alice" || users["3-0"] != "u3" || users["119-0"] != "u19" {
		t.Fatalf("MySQL orders %v: want 40 new, alice's 7-0 and u3's 3-0", users)
	}

	// The partition goes on settling.
	for i := 0; i < 10; i++ {
		r.addOrder(t, 0, fmt.Sprintf("%d-0", 200+i), fmt.Sprintf("v%d", i))
	}
	waitSettled(t, r.db, 52)
	r.waitDrained(t)
	if n := len(r.deadLetters(t, 0)); n != 1 {
		t.Fatalf("%d dead letters after more orders, want 1", n)
	}
	if x, err := r.rdb.XPending(ctx, r.keys.Events(0), "settlers").Result(); err != nil || x.Count != 0 {
		t.Fatalf("pending after settling: %+v %v", x, err)
	}

	// A replay cannot settle it while alice holds the id: it stays, saying why.
	res, err := settle.NewSettler(r.rdb, r.books, r.keys, nil).ReplayDead(ctx, 0)
	if err != nil || res.Settled != 0 || len(res.Left) != 1 || !strings.Contains(res.Left[0], settle.ErrOrderConflict.Error()) {
		t.Fatalf("replay of the conflicting order: %v %v, want it left with its conflict", res, err)
	}
	if n := len(r.deadLetters(t, 0)); n != 1 {
		t.Fatalf("%d dead letters after the replay, want 1", n)
	}
}

// TestEnsureOrderRefusesTakenID: paying an order whose id MySQL holds for
// another buyer fails with ErrOrderConflict and changes nothing; paying the
// very order MySQL holds works.
func TestEnsureOrderRefusesTakenID(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, _ := newPayments(t, r)
	alice := flashgrab.Order{ID: "9-0", SaleID: "s", UserID: "alice", MerchantID: "m", Qty: 1, AmountCents: 300, CreatedAt: time.Now().UTC()}
	if _, err := p.PayOrder(ctx, alice, "alipay", settle.MethodQR); err != nil {
		t.Fatal(err)
	}
	for _, other := range []flashgrab.Order{
		{ID: "9-0", SaleID: "s", UserID: "mallory", MerchantID: "m", Qty: 1, AmountCents: 300, CreatedAt: alice.CreatedAt},
		{ID: "9-0", SaleID: "s", UserID: "alice", MerchantID: "m", Qty: 2, AmountCents: 600, CreatedAt: alice.CreatedAt},
	} {
		if _, err := p.PayOrder(ctx, other, "alipay", settle.MethodQR); !errors.Is(err, settle.ErrOrderConflict) {
			t.Fatalf("paying %+v over alice's order: %v, want ErrOrderConflict", other, err)
		}
	}
	if users := r.orderUsers(t); len(users) != 1 || users["9-0"] != "alice" {
		t.Fatalf("orders %v, want only alice's 9-0", users)
	}
	var payments int
	r.db.QueryRow("SELECT COUNT(*) FROM payments").Scan(&payments)
	if payments != 1 {
		t.Fatalf("%d payments, want alice's 1", payments)
	}
	if _, err := p.PayOrder(ctx, alice, "alipay", settle.MethodQR); err != nil {
		t.Fatalf("alice paying her own order again: %v", err)
	}
}

// TestSettlerFailingConsumerIsTakenOver: a settler that cannot reach MySQL
// holds a batch it read; it retries without re-reading, so the entries grow
// idle and a healthy settler claims and settles them after ClaimIdle. Nothing
// is dead-lettered: an outage is not the events' fault. (Before, the sick
// settler re-read its pending entries on every retry, resetting their idle
// time below ClaimIdle, and they were never settled.)
func TestSettlerFailingConsumerIsTakenOver(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	pdb, proxy := testenv.MySQLBehindProxy(t, r.db)
	proxy.Down()
	const claimIdle = 5 * time.Second // beyond the retry backoff's 2 s cap
	r.settler(t, pdb, "sick", claimIdle)
	for i := 0; i < 30; i++ {
		r.addOrder(t, 0, fmt.Sprintf("%d-0", i), fmt.Sprintf("u%d", i))
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		x, err := r.rdb.XPending(ctx, r.keys.Events(0), "settlers").Result()
		if err != nil {
			return false, fmt.Sprintf("XPENDING: %v", err)
		}
		return x.Consumers["sick"] > 0, fmt.Sprintf("pending by consumer %v, want some for sick", x.Consumers)
	})
	r.settler(t, r.db, "well", claimIdle)
	waitSettled(t, r.db, 30)
	r.waitDrained(t)
	if users := r.orderUsers(t); len(users) != 30 || users["29-0"] != "u29" {
		t.Fatalf("orders %v, want the 30", users)
	}
	if n := len(r.deadLetters(t, 0)); n != 0 {
		t.Fatalf("%d dead letters from an outage", n)
	}
}

// TestSettlerRetrySkipsClaimedEntries: a settler that cannot reach MySQL holds
// an event that can never settle; a healthy settler claims it after ClaimIdle
// and dead-letters it. When MySQL comes back, the first settler's retry finds
// the entry no longer its own and leaves it: one dead letter, not two.
func TestSettlerRetrySkipsClaimedEntries(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.db.Exec(`INSERT INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, expires_at)
		VALUES ('7-0', 's', 'alice', 'm', 1, 100, NOW(3), NOW(3) + INTERVAL 1 HOUR)`); err != nil {
		t.Fatal(err)
	}
	pdb, proxy := testenv.MySQLBehindProxy(t, r.db)
	proxy.Down()
	const claimIdle = 3 * time.Second
	r.settler(t, pdb, "sick", claimIdle)
	r.addOrder(t, 0, "7-0", "mallory")
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		x, err := r.rdb.XPending(ctx, r.keys.Events(0), "settlers").Result()
		if err != nil {
			return false, fmt.Sprintf("XPENDING: %v", err)
		}
		return x.Consumers["sick"] == 1, fmt.Sprintf("pending by consumer %v, want sick:1", x.Consumers)
	})
	pool, err := ants.NewPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	well := settle.NewSettler(r.rdb, r.books, r.keys, pool)
	well.Consumer, well.ClaimIdle, well.Block = "well", claimIdle, 20*time.Millisecond
	wctx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { well.Run(wctx); close(stopped) }()
	r.waitDrained(t)
	stop()
	<-stopped
	if n := len(r.deadLetters(t, 0)); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
	// Only the sick settler is left, and it reads new entries only once its
	// retry is done: when this order is settled, the retry has happened.
	proxy.Up()
	r.addOrder(t, 0, "8-0", "bob")
	waitSettled(t, r.db, 2)
	if n := len(r.deadLetters(t, 0)); n != 1 {
		t.Fatalf("%d dead letters after the sick settler's retry, want 1", n)
	}
}

// TestSettlerSettlesBatchWhoseStreamWasLost: a batch waits in the settler's
// memory for MySQL while Redis loses the stream and its group with the rest
// of the partition's state (a restart without persistence, a flush). Nobody
// can claim the entries any more, so the settler settles them from memory
// once MySQL is back, and the partition goes on settling (it used to retry
// XPENDING's NOGROUP forever). But once the partition has been rebuilt from
// MySQL (its epoch raised) before MySQL returned, the rebuild counted those
// units as unsold: settling them then would count them twice, so they are
// dropped and counted as stale, and the partition still goes on settling,
// in the new epoch.
func TestSettlerSettlesBatchWhoseStreamWasLost(t *testing.T) {
	for _, rebuilt := range []bool{false, true} {
		t.Run(fmt.Sprintf("rebuilt=%v", rebuilt), func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			if _, err := r.db.Exec(`INSERT INTO partition_epochs (part, epoch) VALUES (0, 1)`); err != nil {
				t.Fatal(err)
			}
			order := func(id, user string, epoch int) {
				r.addEvent(t, 0, "k", flashgrab.EventOrder, "id", id, "sale", "s", "user", user, "mch", "m",
					"qty", 1, "amt", 100, "at", time.Now().UnixMilli(), "ep", epoch)
			}
			pdb, proxy := testenv.MySQLBehindProxy(t, r.db)
			proxy.Down()
			reg := prometheus.NewRegistry()
			r.settler(t, pdb, "a", time.Minute, func(s *settle.Settler) { s.Metrics = settle.NewMetrics(reg) })
			order("1-0", "alice", 1)
			testenv.Eventually(t, 30*time.Second, func() (bool, string) {
				x, err := r.rdb.XPending(ctx, r.keys.Events(0), "settlers").Result()
				if err != nil {
					return false, fmt.Sprintf("XPENDING: %v", err)
				}
				return x.Consumers["a"] == 1, fmt.Sprintf("pending by consumer %v, want a:1", x.Consumers)
			})
			if err := r.rdb.Del(ctx, r.keys.Events(0)).Err(); err != nil {
				t.Fatal(err)
			}
			epoch := 1
			if rebuilt { // what the rebuild does before it reads MySQL
				if _, err := r.db.Exec(`UPDATE partition_epochs SET epoch = 2 WHERE part = 0`); err != nil {
					t.Fatal(err)
				}
				epoch = 2
			}
			proxy.Up()
			want := map[string]string{"1-0": "alice", "2-0": "bob"}
			if rebuilt {
				delete(want, "1-0")
				testenv.Eventually(t, 30*time.Second, func() (bool, string) {
					n := counter(t, reg, "flashgrab_settle_stale_events_total")
					return n == 1, fmt.Sprintf("%v stale events counted, want 1", n)
				})
			} else {
				waitSettled(t, r.db, 1)
			}
			order("2-0", "bob", epoch)
			waitSettled(t, r.db, len(want))
			// 2-0 was read after the orphans were dealt with: with it
			// settled, 1-0's fate is decided.
			if users := r.orderUsers(t); !maps.Equal(users, want) {
				t.Fatalf("orders in MySQL %v, want %v", users, want)
			}
		})
	}
}
