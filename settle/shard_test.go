package settle_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

const checkMoves = "sharded sale: moved out - moved in = in transit"

// TestShardedSaleSettlesExpiresAndReconciles: a sale of three shards sells
// out to more users than its stock (stock moving between shards), settles
// under the parent sale id with its layout in MySQL, reconciles clean per
// shard; expired orders return their units to the shard that sold them;
// units in transit count; units taken with no transfer are named stranded;
// a forged move is caught.
func TestShardedSaleSettlesExpiresAndReconciles(t *testing.T) {
	b := &ledgerRig{rig: newRig(t)}
	ctx := context.Background()
	pay, _ := newPayments(t, b.rig)
	now := time.Now()
	sale, err := b.eng.CreateSale(ctx, flashgrab.Sale{ID: "sh", MerchantID: "m", PriceCents: 300, Stock: 12,
		PerUserLimit: 1, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var orders []string
	var wg sync.WaitGroup
	for u := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "sh", UserID: "u" + strconv.Itoa(u), Qty: 1})
			if errors.Is(err, flashgrab.ErrSoldOut) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			orders = append(orders, res.OrderID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(orders) != 12 {
		t.Fatalf("%d orders, want the 12 units", len(orders))
	}
	b.settleAll(t)
	settled, ok, err := b.books.Sale(ctx, "sh")
	if err != nil || !ok || settled.Stock != 12 || settled.Shards != 3 || engine.FormatParts(settled.ShardPartitions) != engine.FormatParts(sale.ShardPartitions) {
		t.Fatalf("sale in MySQL %+v %v %v, want 12 units over shards %v", settled, ok, err, sale.ShardPartitions)
	}
	var n int
	if err := b.db.QueryRow("SELECT COUNT(*) FROM orders WHERE sale_id = 'sh'").Scan(&n); err != nil || n != 12 {
		t.Fatalf("%d orders of sh in MySQL (%v), want 12", n, err)
	}
	rep := b.reconcile(t, nil)
	b.wantFailing(t, rep, nil)
	for _, c := range rep.Checks {
		if (c.Name == checkSales && c.Checked != 3) || (c.Name == checkMoves && c.Checked != 1) {
			t.Fatalf("check %q looked at %d, want one per shard (3) / per sale (1)", c.Name, c.Checked)
		}
	}

	// Four orders expire: each unit goes back to the shard that sold it.
	back := map[int]int64{}
	for _, id := range orders[:4] {
		if _, err := b.db.Exec("UPDATE orders SET expires_at = ? WHERE id = ?", now.Add(-time.Second).UTC(), id); err != nil {
			t.Fatal(err)
		}
		p, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:]) // <snowflake>-<partition>
		if err != nil {
			t.Fatal(err)
		}
		back[p]++
	}
	stockBefore := shardStocks(t, b, sale.ShardPartitions)
	release := func(ctx context.Context, o flashgrab.Order) error { _, err := b.eng.ReleaseOrder(ctx, o); return err }
	if n, err := pay.ExpireOrders(ctx, release); err != nil || n != 4 {
		t.Fatalf("expire: %d %v, want 4", n, err)
	}
	after := shardStocks(t, b, sale.ShardPartitions)
	for _, p := range sale.ShardPartitions {
		if after[p]-stockBefore[p] != back[p] {
			t.Fatalf("shard in partition %d: stock %d → %d, want %d back", p, stockBefore[p], after[p], back[p])
		}
	}
	if s, err := b.eng.Sale(ctx, "sh"); err != nil || s.Stock != 4 || s.Sold != 8 {
		t.Fatalf("sale %+v %v, want 4 left and 8 sold", s, err)
	}
	b.wantFailing(t, b.reconcile(t, nil), nil)

	// A unit in transit (taken from one shard, not yet given) is counted.
	src := sale.ShardPartitions[1]
	b.rdb.HIncrBy(ctx, b.keys.Sale(src, "sh"), "stock", -1)
	b.rdb.HIncrBy(ctx, b.keys.Sale(src, "sh"), "tout", 1)
	b.rdb.HSet(ctx, b.keys.Transit(src, "sh"), "t1", strconv.Itoa(sale.ShardPartitions[0])+"|1|0")
	b.wantFailing(t, b.reconcile(t, nil), nil)
	// Taken from a shard with no transfer recording it (what a rebuild
	// that counted units twice leaves): named as stranded.
	b.rdb.HIncrBy(ctx, b.keys.Sale(src, "sh"), "stock", -1)
	b.rdb.HIncrBy(ctx, b.keys.Sale(src, "sh"), "tout", 1)
	rep = b.reconcile(t, nil)
	b.wantFailing(t, rep, map[string]int{checkMoves: 1})
	if d := diffs(rep, checkMoves); len(d) != 1 || !strings.Contains(d[0], ": 1 units stranded") {
		t.Fatalf("moves check: %q, want 1 unit stranded", d)
	}
	b.rdb.HIncrBy(ctx, b.keys.Sale(src, "sh"), "stock", 1)
	b.rdb.HIncrBy(ctx, b.keys.Sale(src, "sh"), "tout", -1)
	// Given at the destination without being taken anywhere: made up.
	dst := sale.ShardPartitions[2]
	b.rdb.HIncrBy(ctx, b.keys.Sale(dst, "sh"), "stock", 1)
	b.rdb.HIncrBy(ctx, b.keys.Sale(dst, "sh"), "tin", 1)
	b.rdb.HSet(ctx, b.keys.Applied(dst, "sh"), "t2", 1)
	rep = b.reconcile(t, nil)
	b.wantFailing(t, rep, map[string]int{checkMoves: 1})
	// (The sale's own refills may have moved units too: only the transit
	// count is fixed.)
	if d := diffs(rep, checkMoves); len(d) != 1 || !strings.HasSuffix(d[0], "but 1 are in transit") {
		t.Fatalf("moves check: %q, want the unit in transit against a balance of moves one off", d)
	}
	// A shard whose stock is off its own counters.
	b.rdb.HIncrBy(ctx, b.keys.Sale(dst, "sh"), "stock", 1)
	rep = b.reconcile(t, nil)
	wantDiff(t, rep, checkSales, "sale sh shard in partition "+strconv.Itoa(dst)+": Redis stock")
}

func shardStocks(t *testing.T, b *ledgerRig, parts []int) map[int]int64 {
	t.Helper()
	out := map[int]int64{}
	for _, p := range parts {
		n, err := b.rdb.HGet(context.Background(), b.keys.Sale(p, "sh"), "stock").Int64()
		if err != nil {
			t.Fatal(err)
		}
		out[p] = n
	}
	return out
}

// shardSaleRig is a sharded sale on a lossRig, with what was sold of it.
type shardSaleRig struct {
	*lossRig
	sale flashgrab.Sale
	mu   sync.Mutex
	won  map[string]int64 // user → units won over the whole test
}

func newShardSaleRig(t *testing.T, stock int64, limit int64, shards int) *shardSaleRig {
	t.Helper()
	r := &shardSaleRig{lossRig: newLossRig(t), won: map[string]int64{}}
	r.rebuildAll(t) // a fresh Redis: every partition initialised
	now := time.Now()
	var err error
	r.sale, err = r.eng.CreateSale(context.Background(), flashgrab.Sale{ID: "sh", MerchantID: "m", PriceCents: 100, Stock: stock,
		PerUserLimit: limit, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// grab has each user grab one unit at once, each with a key of its own,
// and returns the units won.
func (r *shardSaleRig) grab(t *testing.T, users []string) int64 {
	t.Helper()
	var wg sync.WaitGroup
	var n int64
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.eng.Grab(context.Background(), flashgrab.GrabRequest{SaleID: "sh", UserID: u, Key: strconv.Itoa(rand.Int()), Qty: 1})
			if errors.Is(err, flashgrab.ErrSoldOut) || errors.Is(err, flashgrab.ErrLimitReached) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			if res.Repeat {
				t.Errorf("user %s: a new key answered as a repeat", u)
				return
			}
			r.mu.Lock()
			r.won[u]++
			n++
			r.mu.Unlock()
		}()
	}
	wg.Wait()
	return n
}

// users returns n user names, each twice (every one tries past a limit of
// one), whose home shard is not skip (-1: any).
func (r *shardSaleRig) users(prefix string, n, skip int) []string {
	var out []string
	for i := 0; len(out) < 2*n; i++ {
		u := prefix + strconv.Itoa(i)
		if skip >= 0 && int(crc32.ChecksumIEEE([]byte(u))%uint32(len(r.sale.ShardPartitions))) == skip {
			continue
		}
		out = append(out, u, u)
	}
	return out
}

// lose deletes every key of partition p, its epoch marker included.
func (r *shardSaleRig) lose(t *testing.T, p int) {
	t.Helper()
	ctx := context.Background()
	tag := strings.TrimSuffix(r.keys.Epoch(p), "epoch")
	keys, err := r.rdb.Keys(ctx, tag+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys of partition %d: %v %v", p, keys, err)
	}
	if err := r.rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
}

// sellOut sells to more buyers than there are units, then checks that the
// sale sold exactly its stock over the whole test (nothing was in flight at
// the loss, so nothing may be stranded), each user within the limit, and
// that reconcile finds its shards in order.
func (r *shardSaleRig) sellOut(t *testing.T) {
	t.Helper()
	r.grab(t, r.users("late", int(r.sale.Stock), -1))
	var total int64
	for u, n := range r.won {
		if n > r.sale.PerUserLimit {
			t.Fatalf("user %s won %d units, over the limit of %d", u, n, r.sale.PerUserLimit)
		}
		total += n
	}
	if total != r.sale.Stock {
		t.Fatalf("%d units sold over the test, want exactly the sale's %d", total, r.sale.Stock)
	}
	r.settleAll(t)
	rep, err := (&settle.Reconciler{DB: r.db, Redis: r.rdb, Keys: r.keys}).Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Checks {
		if (c.Name == checkSales || c.Name == checkMoves) && len(c.Diffs) > 0 {
			t.Fatalf("reconcile %q: %q", c.Name, c.Diffs)
		}
	}
}

// TestRebuildRestoresLostShard (issue 11): one shard's partition of a
// 3-shard sale loses every key, with sales settled before and a transfer
// towards the lost shard stuck in transit. The rebuild unfences the
// partition (another sale on it sells again) and gives the shard what the
// others and the transit do not hold: the sale then sells exactly its
// stock under concurrency, limits kept, and reconciles clean.
func TestRebuildRestoresLostShard(t *testing.T) {
	r := newShardSaleRig(t, 40, 2, 3)
	ctx := context.Background()
	lost := r.sale.ShardPartitions[1]
	other := ""
	for i := 0; other == ""; i++ {
		if id := "o" + strconv.Itoa(i); r.keys.Partition(id) == lost {
			other = id
		}
	}
	now := time.Now()
	if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: other, MerchantID: "m", PriceCents: 100, Stock: 5, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n := r.grab(t, r.users("early", 8, -1)); n != 16 {
		t.Fatalf("%d units won before the loss, want 16", n)
	}
	// A mover died between taking 2 units from shard 2 and giving them.
	src := r.sale.ShardPartitions[2]
	r.rdb.HIncrBy(ctx, r.keys.Sale(src, "sh"), "stock", -2)
	r.rdb.HIncrBy(ctx, r.keys.Sale(src, "sh"), "tout", 2)
	r.rdb.HSet(ctx, r.keys.Transit(src, "sh"), "t1", strconv.Itoa(lost)+"|2|0")
	r.settleAll(t)
	r.lose(t, lost)

	res, err := r.reb.Rebuild(ctx, lost)
	if err != nil || res.Outcome != settle.RebuildDone || res.ShardStockShort != 0 {
		t.Fatalf("rebuild of partition %d: %v %v", lost, res, err)
	}
	if ok, err := r.eng.HasEpoch(ctx, lost); !ok || err != nil {
		t.Fatalf("partition %d still fenced (%v)", lost, err)
	}
	if _, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: other, UserID: "x", Qty: 1}); err != nil {
		t.Fatalf("grab of sale %s on the rebuilt partition: %v", other, err)
	}
	r.sellOut(t)
}

// TestRebuildShardsAfterFlush: the whole Redis is flushed after a sharded
// sale sold part of its stock; every partition is rebuilt, in a random
// order, and the sale then sells exactly the remainder: the first shard
// restored holds it, the others count it and get the rest (0).
func TestRebuildShardsAfterFlush(t *testing.T) {
	r := newShardSaleRig(t, 30, 1, 3)
	ctx := context.Background()
	if n := r.grab(t, r.users("early", 11, -1)); n != 11 {
		t.Fatalf("%d units won before the loss, want 11", n)
	}
	r.settleAll(t)
	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range rand.Perm(r.keys.Partitions) {
		if res, err := r.reb.Rebuild(ctx, p); err != nil || res.ShardStockShort != 0 {
			t.Fatalf("rebuild of partition %d: %v %v", p, res, err)
		}
	}
	if s, err := r.eng.Sale(ctx, "sh"); err != nil || s.Stock != 19 {
		t.Fatalf("sale after the rebuild %+v %v, want 19 units left", s, err)
	}
	r.sellOut(t)
}

// TestRebuildShardKeepsUnsettledWins: wins of the surviving shards still in
// their streams (not in MySQL) when a shard is lost are counted by the
// rebuild: they are not sold again.
func TestRebuildShardKeepsUnsettledWins(t *testing.T) {
	r := newShardSaleRig(t, 24, 1, 2)
	ctx := context.Background()
	if n := r.grab(t, r.users("settled", 4, -1)); n != 4 {
		t.Fatalf("%d units won, want 4", n)
	}
	r.settleAll(t)
	// Users homed on shard 0 only: their wins stay in shard 0's stream.
	if n := r.grab(t, r.users("unsettled", 6, 1)); n != 6 {
		t.Fatalf("%d units won, want 6", n)
	}
	lost := r.sale.ShardPartitions[1]
	r.lose(t, lost)
	if res, err := r.reb.Rebuild(ctx, lost); err != nil || res.Outcome != settle.RebuildDone {
		t.Fatalf("rebuild of partition %d: %v %v", lost, res, err)
	}
	var inMySQL int
	if err := r.db.QueryRow("SELECT COUNT(*) FROM orders WHERE sale_id = 'sh'").Scan(&inMySQL); err != nil || inMySQL != 4 {
		t.Fatalf("%d orders of sh in MySQL (%v), want the 4 settled: the others were to stay in the stream", inMySQL, err)
	}
	r.sellOut(t)
}

// shardUnits is the units of sale sh the whole system accounts for: held
// by MySQL's orders (pending, paid, or cancelled with the stock not
// returned), in every shard's stock, and in transit between shards.
func (r *shardSaleRig) shardUnits(t *testing.T) int64 {
	t.Helper()
	ctx := context.Background()
	var held int64
	if err := r.db.QueryRow(`SELECT COALESCE(SUM(qty), 0) FROM orders WHERE sale_id = 'sh'
		AND (status IN ('pending', 'paid') OR (status IN ('cancelled', 'refunded') AND released <> 1))`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	units := held
	for _, p := range r.sale.ShardPartitions {
		n, err := r.rdb.HGet(ctx, r.keys.Sale(p, "sh"), "stock").Int64()
		if err != nil {
			t.Fatalf("shard in partition %d: %v", p, err)
		}
		units += n
		tr, err := r.rdb.HGetAll(ctx, r.keys.Transit(p, "sh")).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range tr {
			f := strings.Split(rec, "|")
			n, _ := strconv.ParseInt(f[1], 10, 64)
			units += n
		}
	}
	return units
}

// strand expires the given settled orders while their shards' sale hashes
// are gone (the partitions keep their epoch markers), so that the expirer
// cannot return their stock: each ends cancelled with released = 2. The
// buyers may then buy again: won drops by their units.
func (r *shardSaleRig) strand(t *testing.T, ids []string) {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		p, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:]) // <snowflake>-<partition>
		if err != nil {
			t.Fatal(err)
		}
		if err := r.rdb.Del(ctx, r.keys.Sale(p, "sh"), r.keys.Buyers(p, "sh")).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.db.Exec("UPDATE orders SET expires_at = ? WHERE id = ?", time.Now().Add(-time.Second).UTC(), id); err != nil {
			t.Fatal(err)
		}
	}
	pay := settle.NewPayments(r.books, nil)
	t.Cleanup(pay.Close)
	release := func(ctx context.Context, o flashgrab.Order) error { _, err := r.eng.ReleaseOrder(ctx, o); return err }
	if n, err := pay.ExpireOrders(ctx, release); err != nil || n != len(ids) {
		t.Fatalf("expire: %d %v, want %d", n, err, len(ids))
	}
	for _, id := range ids {
		var user string
		var released int
		if err := r.db.QueryRow("SELECT user_id, released FROM orders WHERE id = ?", id).Scan(&user, &released); err != nil || released != 2 {
			t.Fatalf("order %s: released %d (%v), want 2 (stranded)", id, released, err)
		}
		r.won[user]--
	}
}

// shardOrders returns up to n settled orders of sale sh won by the shard in
// partition p.
func (r *shardSaleRig) shardOrders(t *testing.T, p, n int) []string {
	t.Helper()
	rows, err := r.db.Query("SELECT id FROM orders WHERE sale_id = 'sh' AND id LIKE ? ORDER BY id LIMIT ?", "%-"+strconv.Itoa(p), n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if len(ids) != n {
		t.Fatalf("%d settled orders won by the shard in partition %d, want %d", len(ids), p, n)
	}
	return ids
}

// TestRebuildResolvesStrandedShardOrder (issue 11): an order of a sharded
// sale expired while its shard's keys were gone, so its unit was stranded
// (released = 2); then the shard's partition lost its state. The rebuild of
// that partition gives the unit back to the restored shard and marks the
// order released: units held in MySQL + every shard's stock + transit =
// the initial stock, and the sale then sells exactly its stock.
func TestRebuildResolvesStrandedShardOrder(t *testing.T) {
	r := newShardSaleRig(t, 30, 1, 3)
	ctx := context.Background()
	if n := r.grab(t, r.users("early", 12, -1)); n != 12 {
		t.Fatalf("%d units won before the loss, want 12", n)
	}
	r.settleAll(t)
	lost := r.sale.ShardPartitions[1]
	stranded := r.shardOrders(t, lost, 1)
	r.strand(t, stranded)
	r.lose(t, lost)
	res, err := r.reb.Rebuild(ctx, lost)
	if err != nil || res.Outcome != settle.RebuildDone || res.StrandedResolved != 1 || res.ShardStockShort != 0 {
		t.Fatalf("rebuild of partition %d: %v %v, want rebuilt with 1 stranded order resolved", lost, res, err)
	}
	var released int
	if err := r.db.QueryRow("SELECT released FROM orders WHERE id = ?", stranded[0]).Scan(&released); err != nil || released != 1 {
		t.Fatalf("stranded order after the rebuild: released %d (%v), want 1", released, err)
	}
	if got := r.shardUnits(t); got != 30 {
		t.Fatalf("%d units accounted for after the rebuild, want the initial 30", got)
	}
	r.sellOut(t)
}

// TestRebuildShardsResolveStrandedAfterFlush: stranded orders on two
// shards, then Redis is flushed and the partitions are rebuilt in a random
// order. Each stranded unit is given back once, by the rebuild of the shard
// that sold it (a shard rebuilt before it counts it as held): exactly the
// initial stock is accounted for and then sold.
func TestRebuildShardsResolveStrandedAfterFlush(t *testing.T) {
	r := newShardSaleRig(t, 30, 1, 3)
	ctx := context.Background()
	if n := r.grab(t, r.users("early", 15, -1)); n != 15 {
		t.Fatalf("%d units won before the loss, want 15", n)
	}
	r.settleAll(t)
	stranded := append(r.shardOrders(t, r.sale.ShardPartitions[0], 1), r.shardOrders(t, r.sale.ShardPartitions[2], 2)...)
	r.strand(t, stranded)
	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	resolved := 0
	for _, p := range rand.Perm(r.keys.Partitions) {
		res, err := r.reb.Rebuild(ctx, p)
		if err != nil || res.ShardStockShort != 0 {
			t.Fatalf("rebuild of partition %d: %v %v", p, res, err)
		}
		resolved += res.StrandedResolved
	}
	if resolved != len(stranded) {
		t.Fatalf("%d stranded orders resolved, want %d", resolved, len(stranded))
	}
	if got := r.shardUnits(t); got != 30 {
		t.Fatalf("%d units accounted for after the rebuild, want the initial 30", got)
	}
	if s, err := r.eng.Sale(ctx, "sh"); err != nil || s.Stock != 30-15+3 {
		t.Fatalf("sale after the rebuild %+v %v, want %d units left", s, err, 30-15+3)
	}
	r.sellOut(t)
}

// TestRebuildShardOfUnsettledSale (issue 11): a shard's partition loses its
// state before the sale's create event, on shard 0's partition, is settled:
// MySQL does not know the sale yet. The rebuild settles the create from
// shard 0's stream first and restores the shard with what the others do not
// hold; the sale then sells exactly its stock.
func TestRebuildShardOfUnsettledSale(t *testing.T) {
	r := newShardSaleRig(t, 30, 1, 3)
	ctx := context.Background()
	// Wins of users homed on shards 0 and 2 only, none settled: no refill
	// moves anything, and every win stays in a surviving stream.
	if n := r.grab(t, r.users("early", 6, 1)); n != 6 {
		t.Fatalf("%d units won before the loss, want 6", n)
	}
	if _, ok, err := r.books.Sale(ctx, "sh"); ok || err != nil {
		t.Fatalf("sale in MySQL before the loss: %v %v, want none yet", ok, err)
	}
	lost := r.sale.ShardPartitions[1]
	r.lose(t, lost)
	res, err := r.reb.Rebuild(ctx, lost)
	if err != nil || res.Outcome != settle.RebuildDone || res.Sales != 1 || res.ShardStockShort != 0 {
		t.Fatalf("rebuild of partition %d: %v %v, want the shard restored", lost, res, err)
	}
	if s, err := r.eng.Sale(ctx, "sh"); err != nil || s.Stock != 30-6 {
		t.Fatalf("sale after the rebuild %+v %v, want %d units left", s, err, 30-6)
	}
	r.sellOut(t)
}

// TestShardedSaleLostWithItsCreation (issue 11): shard 0's partition loses
// its state, and with it the sale's creation, before that was settled;
// another shard's wins were settled. No rebuild can know the sale (MySQL
// never had it, and only shard 0 and its stream held its creation), so it
// is lost as a win not yet settled is; the outcome is safe: its surviving
// shards sell nothing, creating it again is refused (the surviving shard
// would sell its units a second time), and reconcile names the settled
// orders of a sale MySQL does not know.
func TestShardedSaleLostWithItsCreation(t *testing.T) {
	r := newShardSaleRig(t, 30, 1, 3)
	ctx := context.Background()
	if n := r.grab(t, r.users("early", 8, -1)); n != 8 {
		t.Fatalf("%d units won before the loss, want 8", n)
	}
	// Only shard 2's stream is settled: its orders are in MySQL, the sale
	// is not.
	survivor := r.sale.ShardPartitions[2]
	evs, err := r.eng.PartitionEvents(ctx, survivor)
	if err != nil {
		t.Fatal(err)
	}
	if err := settle.NewSettler(r.rdb, r.books, r.keys, nil).Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	settled := len(r.shardOrders(t, survivor, len(evs)))
	for _, p := range r.sale.ShardPartitions[:2] {
		r.lose(t, p)
		if res, err := r.reb.Rebuild(ctx, p); err != nil || res.Sales != 0 {
			t.Fatalf("rebuild of partition %d: %v %v, want nothing of the sale restored", p, res, err)
		}
	}
	if _, ok, err := r.books.Sale(ctx, "sh"); ok || err != nil {
		t.Fatalf("sale in MySQL after the rebuilds: %v %v, want none", ok, err)
	}
	// An instance that never saw the sale cannot find it.
	fresh, _ := r.engine(t)
	for i := range 20 {
		if _, err := fresh.Grab(ctx, flashgrab.GrabRequest{SaleID: "sh", UserID: "late" + strconv.Itoa(i), Qty: 1}); !errors.Is(err, flashgrab.ErrNotFound) {
			t.Fatalf("grab of the lost sale: %v, want ErrNotFound", err)
		}
	}
	// One that knew its layout sells what the surviving shard holds, and
	// nothing more.
	left, err := r.rdb.HGet(ctx, r.keys.Sale(survivor, "sh"), "stock").Int64()
	if err != nil {
		t.Fatal(err)
	}
	var won int64
	for i := range 40 {
		res, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "sh", UserID: "late" + strconv.Itoa(i), Qty: 1})
		switch {
		case err == nil && strings.HasSuffix(res.OrderID, "-"+strconv.Itoa(survivor)):
			won++
		case err == nil:
			t.Fatalf("order %s won on a lost shard", res.OrderID)
		case !errors.Is(err, flashgrab.ErrNotFound) && !errors.Is(err, flashgrab.ErrSoldOut):
			t.Fatalf("grab of the lost sale: %v", err)
		}
	}
	if now, err := r.rdb.HGet(ctx, r.keys.Sale(survivor, "sh"), "stock").Int64(); err != nil || won > left || now != left-won {
		t.Fatalf("surviving shard: %d units before, %d won, %d left (%v)", left, won, now, err)
	}
	// Created again it is refused, whatever its shard count: with 2 shards
	// or none the layout would leave the survivor out, and instances that
	// cached the old one would go on selling its stock beside the new sale.
	for _, k := range []int{3, 2, 1} {
		if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: "sh", MerchantID: "m", PriceCents: 100, Stock: r.sale.Stock,
			PerUserLimit: r.sale.PerUserLimit, StartsAt: r.sale.StartsAt, EndsAt: r.sale.EndsAt, Shards: k}); !errors.Is(err, flashgrab.ErrExists) {
			t.Fatalf("create of the lost sale again with %d shards: %v, want ErrExists", k, err)
		}
	}
	rep, err := (&settle.Reconciler{DB: r.db, Redis: r.rdb, Keys: r.keys}).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantDiff(t, rep, checkHasSale, fmt.Sprintf("sale sh: %d orders (%d units) in MySQL, but not the sale", settled, settled))
}
