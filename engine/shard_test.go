package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

func shardedSale(id string, stock, limit int64, k int) flashgrab.Sale {
	now := time.Now()
	return flashgrab.Sale{ID: id, MerchantID: "m1", PriceCents: 100, Stock: stock, PerUserLimit: limit,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Shards: k}
}

// shardCounters is one shard's hash as reconcile reads it.
type shardCounters struct{ stock, init, sold, tin, tout int64 }

func readShards(t *testing.T, rdb redis.UniversalClient, ks Keyspace, id string, parts []int) ([]shardCounters, int) {
	t.Helper()
	ctx := context.Background()
	out := make([]shardCounters, len(parts))
	transit := 0
	for i, p := range parts {
		v, err := rdb.HMGet(ctx, ks.Sale(p, id), "stock", "init", "sold", "tin", "tout").Result()
		if err != nil || v[0] == nil {
			t.Fatalf("shard %d (partition %d): %v %v", i, p, v, err)
		}
		n := func(i int) int64 { x, _ := strconv.ParseInt(str(v[i]), 10, 64); return x }
		out[i] = shardCounters{n(0), n(1), n(2), n(3), n(4)}
		tr, err := rdb.HLen(ctx, ks.Transit(p, id)).Result()
		if err != nil {
			t.Fatal(err)
		}
		transit += int(tr)
	}
	return out, transit
}

// checkShards asserts what reconcile asserts of a quiet sharded sale: every
// shard's stock = init + tin - tout - sold, nothing in transit, the moves
// add up, the shares add up to the sale's stock, and Sale sums the shards.
func checkShards(t *testing.T, e *Engine, rdb redis.UniversalClient, id string, total, wantSold int64) []shardCounters {
	t.Helper()
	s, err := e.Sale(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	sh, transit := readShards(t, rdb, e.keys, id, s.ShardPartitions)
	var init, sold, tin, tout int64
	for i, c := range sh {
		if c.stock != c.init+c.tin-c.tout-c.sold || c.stock < 0 {
			t.Errorf("shard %d: stock %d != init %d + in %d - out %d - sold %d", i, c.stock, c.init, c.tin, c.tout, c.sold)
		}
		if c.init != ShardStock(total, len(sh), i) {
			t.Errorf("shard %d: init %d, want %d", i, c.init, ShardStock(total, len(sh), i))
		}
		init, sold, tin, tout = init+c.init, sold+c.sold, tin+c.tin, tout+c.tout
	}
	if transit != 0 || tin != tout {
		t.Errorf("%d transfers in transit, moved in %d out %d", transit, tin, tout)
	}
	if init != total || sold != wantSold || s.Sold != wantSold || s.Stock != total-wantSold {
		t.Errorf("shards hold init %d sold %d; Sale says stock %d sold %d; want %d sold of %d", init, sold, s.Stock, s.Sold, wantSold, total)
	}
	return sh
}

// TestShardedSaleSellsExactlyItsStock: demand four times the stock, from
// many goroutines over four shards: exactly the stock is sold, no user
// beyond its limit, nothing left unsold (the dry shards pulled the rest),
// every shard's counters add up, and the shards sit on distinct partitions.
func TestShardedSaleSellsExactlyItsStock(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Redis: rdb, Keys: Keyspace{Prefix: prefix, Partitions: 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	shardedInvariants(t, e, rdb, 4, 203, 400)
}

// shardedInvariants runs users users, each trying for 2 units (limit 2) in
// two attempts, against a sale of stock units over k shards.
func shardedInvariants(t *testing.T, e *Engine, rdb redis.UniversalClient, k int, stock int64, users int) flashgrab.Sale {
	ctx := context.Background()
	s, err := e.CreateSale(ctx, shardedSale("hot", stock, 2, k))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ShardPartitions) != k || s.ShardPartitions[0] != e.keys.Partition("hot") {
		t.Fatalf("partitions %v: want %d, the sale's own first", s.ShardPartitions, k)
	}
	if d := slices.Compact(slices.Sorted(slices.Values(s.ShardPartitions))); len(d) != k {
		t.Fatalf("partitions %v not distinct", s.ShardPartitions)
	}
	var won atomic.Int64
	var mu sync.Mutex
	held := map[string]int64{}
	orders := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := "u" + strconv.Itoa(u)
			for _, key := range []string{"", "b"} {
				res, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "hot", UserID: user, Key: key, Qty: 1})
				if errors.Is(err, flashgrab.ErrSoldOut) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				won.Add(res.Qty)
				mu.Lock()
				held[user] += res.Qty
				if orders[res.OrderID] {
					errs <- fmt.Errorf("order %s won twice", res.OrderID)
				}
				orders[res.OrderID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if won.Load() != stock || int64(len(orders)) != stock {
		t.Fatalf("won %d units in %d orders, want exactly the stock %d", won.Load(), len(orders), stock)
	}
	for u, n := range held {
		if n > 2 {
			t.Fatalf("user %s holds %d, limit 2", u, n)
		}
	}
	checkShards(t, e, rdb, "hot", stock, stock)
	return s
}

// TestShardedSaleOnClusterUsesEveryMaster: on a real three-master cluster,
// three shards land on three masters, and the invariants hold there.
func TestShardedSaleOnClusterUsesEveryMaster(t *testing.T) {
	nodes := testenv.Cluster(t)
	ctx := context.Background()
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { rdb.Close() })
	e, err := New(ctx, Config{Redis: rdb, Keys: Keyspace{Prefix: "fgs", Partitions: 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	s := shardedInvariants(t, e, rdb, 3, 150, 200)
	masters := map[string]bool{}
	for _, p := range s.ShardPartitions {
		m, err := rdb.MasterForKey(ctx, e.keys.Sale(p, "hot"))
		if err != nil {
			t.Fatal(err)
		}
		masters[m.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("shards %v on masters %v, want three distinct", s.ShardPartitions, masters)
	}
}

// usersOf returns n users whose home is shard i of l.
func usersOf(l *shardLayout, i, n int) []string {
	var out []string
	for u := 0; len(out) < n; u++ {
		if user := "user" + strconv.Itoa(u); l.home(user) == i {
			out = append(out, user)
		}
	}
	return out
}

// TestShardedCrashBetweenTransferSteps: a mover that dies after taking
// stock (units in transit) or after giving it but before clearing the
// transit entry loses nothing and oversells nothing: the stock is sold to
// the last unit, once.
func TestShardedCrashBetweenTransferSteps(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Redis: rdb, Keys: Keyspace{Prefix: prefix, Partitions: 8}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, err := e.CreateSale(ctx, shardedSale("c", 12, 1, 3)); err != nil {
		t.Fatal(err)
	}
	l, err := e.saleLayout(ctx, e.saleHead("c"), "c")
	if err != nil || l == unsharded {
		t.Fatalf("layout: %v %v", l, err)
	}
	// Crash after the take: shard 1's 4 units leave for shard 0 and stay
	// in transit.
	if _, n, err := e.take(ctx, l, 1, 0, 4); err != nil || n != 4 {
		t.Fatalf("take: %d %v", n, err)
	}
	// Crash after the give, before the clear: 2 of shard 2's 4 move to
	// shard 1, and the transit entry stays.
	tid, n, err := e.take(ctx, l, 2, 1, 1)
	if err != nil || n != 2 {
		t.Fatalf("take: %d %v", n, err)
	}
	for range 2 { // given twice: applied once
		if r, err := e.saleGive.Run(ctx, rdb, []string{e.keys.Sale(l.parts[1], "c"), e.keys.Applied(l.parts[1], "c")}, tid, n).Int(); err != nil || r < 0 {
			t.Fatalf("give: %d %v", r, err)
		}
	}
	if s, err := e.Sale(ctx, "c"); err != nil || s.Stock != 12 {
		t.Fatalf("sale %+v %v: want the 12 units counted wherever they sit", s, err)
	}
	var sold int
	for i := range 3 {
		for _, u := range usersOf(l, i, 12) {
			_, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "c", UserID: u, Qty: 1})
			switch {
			case err == nil:
				sold++
			case !errors.Is(err, flashgrab.ErrSoldOut):
				t.Fatal(err)
			}
		}
	}
	if sold != 12 {
		t.Fatalf("sold %d, want all 12 units once", sold)
	}
	checkShards(t, e, rdb, "c", 12, 12)
}

// TestShardedSoldOutBound is the bound on a false "sold out": a user whose
// shard is dry gets stock held by another shard in the same grab; once
// every shard was seen empty, stock that comes back to another shard
// (released by another instance) is refused for at most shardEmptyHold
// (100 ms), and at once when released by this instance.
func TestShardedSoldOutBound(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ks := Keyspace{Prefix: prefix, Partitions: 8}
	e, err := New(ctx, Config{Redis: rdb, Keys: ks, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	other, err := New(ctx, Config{Redis: rdb, Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	if _, err := e.CreateSale(ctx, shardedSale("b", 3, 1, 2)); err != nil { // shards hold 2 and 1
		t.Fatal(err)
	}
	l, _ := e.saleLayout(ctx, e.saleHead("b"), "b")
	u0, u1 := usersOf(l, 0, 3), usersOf(l, 1, 3)
	grab := func(u string) (flashgrab.GrabResult, error) {
		return e.Grab(ctx, flashgrab.GrabRequest{SaleID: "b", UserID: u, Qty: 1})
	}
	// Shard 1 sells its unit, then runs dry while shard 0 holds 2: the
	// next user of shard 1 gets one in the same grab.
	for _, u := range u1[:2] {
		if _, err := grab(u); err != nil {
			t.Fatalf("%s on shard 1: %v", u, err)
		}
	}
	first, err := grab(u0[0])
	if err != nil {
		t.Fatalf("%s on shard 0: %v", u0[0], err)
	}
	// Every shard empty: sold out, and the sale is held empty.
	if _, err := grab(u1[2]); !errors.Is(err, flashgrab.ErrSoldOut) {
		t.Fatalf("after the last unit: %v, want sold out", err)
	}
	// Another instance returns an order's unit to shard 0.
	o, err := e.Order(ctx, first.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := other.ReleaseOrder(ctx, o); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	// Within the hold, shard 1's user may still be told sold out…
	now.Add(int64(shardEmptyHold - time.Millisecond))
	if _, err := grab(u1[2]); !errors.Is(err, flashgrab.ErrSoldOut) {
		t.Fatalf("within the hold: %v, want sold out (the refill holds off)", err)
	}
	// …and no longer once the hold ends.
	now.Add(int64(time.Millisecond))
	back, err := grab(u1[2])
	if err != nil {
		t.Fatalf("when the hold ends: %v, want the unit back in shard 0", err)
	}
	// A release by this instance ends the hold at once.
	if _, err := grab(u0[1]); !errors.Is(err, flashgrab.ErrSoldOut) {
		t.Fatalf("sold out again: %v", err)
	}
	o, err = e.Order(ctx, back.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.ReleaseOrder(ctx, o); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	if _, err := grab(u0[1]); err != nil {
		t.Fatalf("after this instance's release: %v, want the unit at once", err)
	}
	checkShards(t, e, rdb, "b", 3, 3)
}
