package settle_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// lossRig is a Redis of the test's own (so it can be flushed), MySQL, and
// engines that detect lost state.
type lossRig struct {
	rdb   *redis.Client
	db    *sql.DB
	books *settle.Books
	keys  engine.Keyspace
	eng   *engine.Engine
	reb   *settle.Rebuilder
}

func newLossRig(t *testing.T) *lossRig {
	t.Helper()
	srv := testenv.StartRedisServer(t)
	r := &lossRig{rdb: srv.Client(t), keys: engine.Keyspace{Prefix: "fg", Partitions: 4}}
	r.db, _ = testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), r.db); err != nil {
		t.Fatal(err)
	}
	r.books = &settle.Books{DB: r.db}
	r.eng, r.reb = r.engine(t)
	return r
}

// engine returns one more engine (an instance) on the rig's Redis, and its
// rebuilder.
func (r *lossRig) engine(t *testing.T) (*engine.Engine, *settle.Rebuilder) {
	t.Helper()
	eng, err := engine.New(context.Background(), engine.Config{Redis: r.rdb, Keys: r.keys, DetectLoss: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	return eng, settle.NewRebuilder(eng, r.books, settle.NewSettler(r.rdb, r.books, r.keys, nil))
}

// settleAll applies every event in the streams, as the settler would, and
// empties the streams.
func (r *lossRig) settleAll(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	s := settle.NewSettler(r.rdb, r.books, r.keys, nil)
	for p := range r.keys.Partitions {
		evs, err := r.eng.PartitionEvents(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			continue
		}
		if err := s.Apply(ctx, evs); err != nil {
			t.Fatal(err)
		}
		if err := r.rdb.Del(ctx, r.keys.Events(p)).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *lossRig) rebuildAll(t *testing.T) []settle.RebuildResult {
	t.Helper()
	res, err := r.reb.RebuildAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// livePacket sends a packet of total fen in count shares from sender, as
// the API does: funded in MySQL, published in Redis, marked live.
func (r *lossRig) livePacket(t *testing.T, sender string, total, count int64, mode string) flashgrab.Packet {
	t.Helper()
	ctx := context.Background()
	pk, err := r.eng.NewPacket(sender, total, count, mode, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.books.FundPacket(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if err := r.eng.PublishPacket(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if err := r.books.MarkPacketLive(ctx, pk.ID); err != nil {
		t.Fatal(err)
	}
	return pk
}

func (r *lossRig) balance(t *testing.T, id string) int64 {
	t.Helper()
	a, err := r.books.Account(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.BalanceCents
}

// TestRebuildAfterRedisLoss is issue 9 item 2 end to end: a fresh deployment
// only gets its markers; after grabs and packet shares settle, Redis is
// flushed; grabs, creates and packet grabs answer ErrRebuilding and change
// nothing; the rebuild restores the sale (stock = initial − sold exactly,
// a stranded order's unit back), every buyer's limit, retries' original
// orders, a pending order's record, and the live packet with its exact
// remainder and grabbers; selling and grabbing then go on to exactly the
// stock and the total, and reconcile finds the books balanced.
func TestRebuildAfterRedisLoss(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()

	// Fresh: no markers, nothing in MySQL. Fenced until the first round,
	// which only writes the markers.
	now := time.Now()
	sale := flashgrab.Sale{ID: "s1", MerchantID: "m1", PriceCents: 100, Stock: 10, PerUserLimit: 2,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
	if _, err := r.eng.CreateSale(ctx, sale); !errors.Is(err, flashgrab.ErrRebuilding) {
		t.Fatalf("create before any marker: %v, want ErrRebuilding", err)
	}
	for _, res := range r.rebuildAll(t) {
		if res.Outcome != settle.RebuildInitialised {
			t.Fatalf("fresh deployment: %v, want initialised", res)
		}
	}
	if _, err := r.eng.CreateSale(ctx, sale); err != nil {
		t.Fatal(err)
	}
	grab := func(user, key string, qty int64) (flashgrab.GrabResult, error) {
		return r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: user, Key: key, Qty: qty})
	}
	orders := map[string]flashgrab.GrabResult{} // user/key → first answer
	for _, g := range []struct {
		user, key string
		qty       int64
	}{{"u0", "", 2}, {"u1", "a", 1}, {"u1", "b", 1}, {"u2", "", 1}, {"u3", "", 1}} {
		res, err := grab(g.user, g.key, g.qty)
		if err != nil {
			t.Fatal(err)
		}
		orders[g.user+"/"+g.key] = res
	}
	// A packet of 1,000 fen in 5 shares, 2 grabbed.
	if _, err := r.books.Credit(ctx, "sender", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	pk := r.livePacket(t, "sender", 1000, 5, flashgrab.ModeRandom)
	shares := map[string]int64{}
	for _, u := range []string{"g1", "g2"} {
		res, err := r.eng.GrabPacket(ctx, pk.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		shares[u] = res.AmountCents
	}
	r.settleAll(t)
	// u2's order expired while the sale's keys were gone: stranded.
	stranded := orders["u2/"].OrderID
	if _, err := r.db.Exec(`UPDATE orders SET status = 'cancelled', released = 2 WHERE id = ?`, stranded); err != nil {
		t.Fatal(err)
	}
	const held = 2 + 1 + 1 + 1 // u0, u1 twice, u3

	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := grab("u9", "", 1); !errors.Is(err, flashgrab.ErrRebuilding) {
		t.Fatalf("grab after the flush: %v, want ErrRebuilding", err)
	}
	if _, err := r.eng.GrabPacket(ctx, pk.ID, "g9"); !errors.Is(err, flashgrab.ErrRebuilding) {
		t.Fatalf("packet grab after the flush: %v, want ErrRebuilding", err)
	}
	if _, err := r.eng.CreateSale(ctx, sale); !errors.Is(err, flashgrab.ErrRebuilding) {
		t.Fatalf("create after the flush: %v, want ErrRebuilding", err)
	}
	if n, err := r.rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("keys after fenced calls: %d (%v), want 0: a fenced call changes nothing", n, err)
	}
	sp, pp := r.keys.Partition("s1"), r.keys.Partition(pk.ID)
	if rb := r.eng.Rebuilding(); !slices.Contains(rb, sp) || !slices.Contains(rb, pp) {
		t.Fatalf("partitions rebuilding %v, want %d and %d among them", rb, sp, pp)
	}

	for _, res := range r.rebuildAll(t) {
		switch res.Partition {
		case sp, pp:
			if res.Outcome != settle.RebuildDone {
				t.Fatalf("partition %d: %v, want rebuilt", res.Partition, res)
			}
			t.Log(res)
		default:
			if res.Outcome != settle.RebuildInitialised {
				t.Fatalf("partition %d: %v, want initialised", res.Partition, res)
			}
		}
	}
	if rb := r.eng.Rebuilding(); len(rb) != 0 {
		t.Fatalf("partitions rebuilding after the rebuild: %v", rb)
	}

	got, err := r.eng.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Stock != sale.Stock-held || got.Sold != held || got.PerUserLimit != 2 || got.PriceCents != 100 ||
		!got.StartsAt.Equal(sale.StartsAt.Truncate(time.Millisecond)) || !got.EndsAt.Equal(sale.EndsAt.Truncate(time.Millisecond)) {
		t.Fatalf("rebuilt sale %+v, want stock %d, sold %d and the terms of %+v", got, sale.Stock-held, held, sale)
	}
	var released int
	if err := r.db.QueryRow(`SELECT released FROM orders WHERE id = ?`, stranded).Scan(&released); err != nil || released != 1 {
		t.Fatalf("stranded order after the rebuild: released %d (%v), want 1", released, err)
	}
	// Limits and retries.
	if _, err := grab("u0", "fresh", 1); !errors.Is(err, flashgrab.ErrLimitReached) {
		t.Fatalf("u0 at its limit, fresh key: %v, want ErrLimitReached", err)
	}
	if _, err := grab("u1", "c", 1); !errors.Is(err, flashgrab.ErrLimitReached) {
		t.Fatalf("u1 at its limit, fresh key: %v, want ErrLimitReached", err)
	}
	for uk, first := range orders {
		if uk == "u2/" {
			continue
		}
		user, key, _ := strings.Cut(uk, "/")
		res, err := grab(user, key, first.Qty)
		if err != nil || !res.Repeat || res.OrderID != first.OrderID || res.AmountCents != first.AmountCents {
			t.Fatalf("retry of %s: %+v %v, want the original order %s", uk, res, err, first.OrderID)
		}
	}
	// The order records paying reads are back.
	o, err := r.eng.Order(ctx, orders["u3/"].OrderID)
	if err != nil || o.UserID != "u3" || o.Qty != 1 || o.AmountCents != 100 || o.SaleID != "s1" {
		t.Fatalf("order record of u3 after the rebuild: %+v %v", o, err)
	}
	// ... and the pending order is paid through them, as the API pays.
	pay := settle.NewPayments(r.books, map[string]settle.Provider{"alipay": &fakeProvider{refunds: map[string]int64{}, closed: map[string]bool{}}})
	t.Cleanup(pay.Close)
	pm, err := pay.PayOrder(ctx, o, "alipay", settle.MethodQR)
	if err != nil {
		t.Fatal(err)
	}
	n := settle.Notice{Channel: "alipay", OutTradeNo: pm.OutTradeNo, TradeNo: "T1", AmountCents: pm.AmountCents}
	if out, err := pay.Paid(ctx, n); err != nil || out != settle.Applied {
		t.Fatalf("notify of the rebuilt order's payment: %v %v", out, err)
	}
	if st, err := r.books.Order(ctx, o.ID); err != nil || st.Status != settle.OrderPaid {
		t.Fatalf("rebuilt order after its notify: %+v %v, want paid", st, err)
	}
	if b := r.balance(t, "m1"); b != 100 {
		t.Fatalf("merchant balance %d after the paid order, want 100", b)
	}
	// u2's stranded unit was resolved: u2 may buy again.
	if _, err := grab("u2", "again", 1); err != nil {
		t.Fatalf("u2 after its stranded order was resolved: %v", err)
	}
	// Sell the rest: exactly the stock, never more.
	won := int64(1)
	for i := 0; i < 20; i++ {
		res, err := grab(fmt.Sprintf("n%d", i), "", 1)
		if errors.Is(err, flashgrab.ErrSoldOut) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		won += res.Qty
	}
	if won != sale.Stock-held {
		t.Fatalf("sold %d units after the rebuild, want exactly the %d left", won, sale.Stock-held)
	}

	// The packet goes on with its exact remainder; its grabbers repeat.
	p2, err := r.eng.Packet(ctx, pk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p2.RemainingCount != 3 || p2.RemainingCents != 1000-shares["g1"]-shares["g2"] {
		t.Fatalf("rebuilt packet: %d shares, %d fen left; want 3 and %d", p2.RemainingCount, p2.RemainingCents, 1000-shares["g1"]-shares["g2"])
	}
	for u, amt := range shares {
		res, err := r.eng.GrabPacket(ctx, pk.ID, u)
		if err != nil || !res.Repeat || res.AmountCents != amt {
			t.Fatalf("grabber %s again: %+v %v, want its share %d as a repeat", u, res, err, amt)
		}
	}
	sum := shares["g1"] + shares["g2"]
	for i := 0; i < 5; i++ {
		res, err := r.eng.GrabPacket(ctx, pk.ID, fmt.Sprintf("h%d", i))
		if errors.Is(err, flashgrab.ErrEmpty) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sum += res.AmountCents
	}
	if sum != 1000 {
		t.Fatalf("shares sum to %d after the rebuild, want exactly 1000", sum)
	}

	// Money conserved and every check balanced once the rest settles.
	r.settleAll(t)
	rep, err := (&settle.Reconciler{DB: r.db, Redis: r.rdb, Keys: r.keys}).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("reconcile after the rebuild:\n%s", b.String())
	}
}

// TestRebuildSettlesStreamFirst: only some keys are lost (the sale, its
// buyers and the marker), while wins still wait in the stream, unsettled.
// The rebuild settles them before it reads MySQL, so none is sold twice.
func TestRebuildSettlesStreamFirst(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.rebuildAll(t)
	now := time.Now()
	sale := flashgrab.Sale{ID: "s1", MerchantID: "m1", PriceCents: 100, Stock: 6, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
	if _, err := r.eng.CreateSale(ctx, sale); err != nil {
		t.Fatal(err)
	}
	grab := func(user string) error {
		_, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: user, Qty: 1})
		return err
	}
	for _, u := range []string{"a", "b"} {
		if err := grab(u); err != nil {
			t.Fatal(err)
		}
	}
	r.settleAll(t)
	for _, u := range []string{"c", "d"} { // in the stream only
		if err := grab(u); err != nil {
			t.Fatal(err)
		}
	}
	p := r.keys.Partition("s1")
	if err := r.rdb.Del(ctx, r.keys.Sale(p, "s1"), r.keys.Buyers(p, "s1"), r.keys.Epoch(p)).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := r.reb.Rebuild(ctx, p)
	if err != nil || res.Outcome != settle.RebuildDone || res.EventsSettled != 2 {
		t.Fatalf("rebuild: %v %v, want rebuilt with 2 stream events settled first", res, err)
	}
	got, err := r.eng.Sale(ctx, "s1")
	if err != nil || got.Stock != 2 || got.Sold != 4 {
		t.Fatalf("sale after the rebuild: %+v %v, want 2 left, 4 sold", got, err)
	}
	for _, u := range []string{"a", "b", "c", "d"} {
		if _, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: u, Key: "new", Qty: 1}); !errors.Is(err, flashgrab.ErrLimitReached) {
			t.Fatalf("buyer %s again: %v, want ErrLimitReached", u, err)
		}
	}
	var n int
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM orders WHERE sale_id = 's1'`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("orders in MySQL: %d (%v), want 4", n, err)
	}
}

// TestRebuildRace: instances rebuilding the same lost partition at once;
// exactly one rebuilds, the others find it busy or already done, and the
// stock is counted once.
func TestRebuildRace(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.rebuildAll(t)
	now := time.Now()
	if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m1", PriceCents: 100, Stock: 50, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		if _, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", i), Qty: 1}); err != nil {
			t.Fatal(err)
		}
	}
	r.settleAll(t)
	rebuilders := []*settle.Rebuilder{r.reb}
	for len(rebuilders) < 4 {
		_, reb := r.engine(t)
		rebuilders = append(rebuilders, reb)
	}
	p := r.keys.Partition("s1")
	for round := 0; round < 5; round++ {
		if err := r.rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		outcomes := make([]string, len(rebuilders))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, reb := range rebuilders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := reb.Rebuild(ctx, p)
				if err != nil {
					t.Error(err)
				}
				outcomes[i] = res.Outcome
			}()
		}
		close(start)
		wg.Wait()
		done := 0
		for _, o := range outcomes {
			switch o {
			case settle.RebuildDone:
				done++
			case settle.RebuildBusy, settle.RebuildIntact:
			default:
				t.Fatalf("round %d: outcome %q", round, o)
			}
		}
		if done != 1 {
			t.Fatalf("round %d: outcomes %v, want exactly one rebuilt", round, outcomes)
		}
		got, err := r.eng.Sale(ctx, "s1")
		if err != nil || got.Stock != 43 || got.Sold != 7 {
			t.Fatalf("round %d: sale %+v %v, want 43 left, 7 sold", round, got, err)
		}
	}
}

// TestLostExpiredPacketRefundedOnce: an expired packet whose Redis keys are
// gone is refunded from MySQL exactly once: by racing sweepers while its
// partition keeps its marker, by the rebuild when the partition was lost.
func TestLostExpiredPacketRefundedOnce(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.rebuildAll(t)
	if _, err := r.books.Credit(ctx, "sender", 2000, "seed"); err != nil {
		t.Fatal(err)
	}
	var pks []flashgrab.Packet
	for i := 0; i < 2; i++ {
		pk := r.livePacket(t, "sender", 1000, 4, flashgrab.ModeFixed)
		if _, err := r.eng.GrabPacket(ctx, pk.ID, "g"); err != nil { // 250 fen each
			t.Fatal(err)
		}
		pks = append(pks, pk)
	}
	r.settleAll(t)
	if _, err := r.db.Exec(`UPDATE packets SET expires_at = ? WHERE sender_id = 'sender'`, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	refunds := func() (rows int, cents int64) {
		if err := r.db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(delta_cents), 0) FROM ledger WHERE kind = 'refund'`).Scan(&rows, &cents); err != nil {
			t.Fatal(err)
		}
		return
	}

	// First packet: its keys evicted, the partition's marker kept.
	p0 := r.keys.Partition(pks[0].ID)
	if err := r.rdb.Del(ctx, r.keys.Packet(p0, pks[0].ID), r.keys.PacketGrabs(p0, pks[0].ID)).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sw := settle.NewSweeper(r.eng, r.books, nil)
			sw.Grace = time.Second
			if err := sw.Sweep(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n, cents := refunds(); n != 1 || cents != 750 {
		t.Fatalf("after racing sweepers: %d refunds of %d fen, want 1 of 750", n, cents)
	}

	// Second packet: Redis lost everything; the rebuild refunds it.
	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var refunded int
	for _, res := range r.rebuildAll(t) {
		refunded += res.PacketsRefunded
	}
	r.rebuildAll(t)
	sw := settle.NewSweeper(r.eng, r.books, nil)
	sw.Grace = time.Second
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n, cents := refunds(); refunded != 1 || n != 2 || cents != 1500 {
		t.Fatalf("after the rebuild: %d refunded by it; %d refunds of %d fen in all, want 1; 2 of 1500", refunded, n, cents)
	}
	if b := r.balance(t, "sender"); b != 1500 {
		t.Fatalf("sender's balance %d, want 1500 (2000 − 2 × 1000 + 2 × 750)", b)
	}
	rep, err := (&settle.Reconciler{DB: r.db, Redis: r.rdb, Keys: r.keys}).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("reconcile:\n%s", b.String())
	}
}

// TestRebuildSaleWithManyBuyers: a sale whose buyers hash is larger than
// one restore command writes (2,500 buyers, each with a retry record) is
// restored whole, through a staged hash: every buyer's holding and retry
// answer, and nothing of a staged hash a dead rebuild left behind. A buyers
// hash that survived is kept, and the staged one dropped.
func TestRebuildSaleWithManyBuyers(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.rebuildAll(t)
	const buyers, stock = 2500, 3000
	now := time.Now()
	if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m1", PriceCents: 100, Stock: stock, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	orders := make([]string, buyers)
	var wg sync.WaitGroup
	errs := make(chan error, buyers)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < buyers; i += 16 {
				res, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", i), Key: "k", Qty: 1})
				if err != nil {
					errs <- err
					return
				}
				orders[i] = res.OrderID
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r.settleAll(t)
	p := r.keys.Partition("s1")
	buyersKey, staged := r.keys.Buyers(p, "s1"), r.keys.BuyersStaged(p, "s1")

	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// What a rebuild that died while staging left: never to be renamed.
	if err := r.rdb.HSet(ctx, staged, "u:ghost", 1, "u:u0", 7).Err(); err != nil {
		t.Fatal(err)
	}
	r.rebuildAll(t)
	got, err := r.rdb.HGetAll(ctx, buyersKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2*buyers {
		t.Fatalf("restored buyers hash has %d fields, want %d (a holding and a retry record per buyer)", len(got), 2*buyers)
	}
	for i, id := range orders {
		u := fmt.Sprintf("u%d", i)
		if got["u:"+u] != "1" || !strings.HasPrefix(got["k:"+u+":k"], id+"|1|100") {
			t.Fatalf("buyer %s restored as holding %q, retry record %q; want 1 and order %s", u, got["u:"+u], got["k:"+u+":k"], id)
		}
	}
	if n, err := r.rdb.Exists(ctx, staged).Result(); err != nil || n != 0 {
		t.Fatalf("staged buyers hash still there after the rebuild (%d, %v)", n, err)
	}
	sale, err := r.eng.Sale(ctx, "s1")
	if err != nil || sale.Stock != stock-buyers || sale.Sold != buyers {
		t.Fatalf("restored sale %+v %v, want stock %d and sold %d", sale, err, stock-buyers, buyers)
	}
	for _, i := range []int{0, buyers / 2, buyers - 1} {
		u := fmt.Sprintf("u%d", i)
		res, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: u, Key: "k", Qty: 1})
		if err != nil || !res.Repeat || res.OrderID != orders[i] {
			t.Fatalf("retry of %s: %+v %v, want its order %s", u, res, err, orders[i])
		}
		if _, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: u, Key: "other", Qty: 1}); !errors.Is(err, flashgrab.ErrLimitReached) {
			t.Fatalf("%s with a fresh key: %v, want ErrLimitReached", u, err)
		}
	}

	// Only the marker and the sale hash lost: the buyers hash survives and
	// is kept as it is; a staged one is dropped.
	if err := r.rdb.Del(ctx, r.keys.Epoch(p), r.keys.Sale(p, "s1")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.HSet(ctx, staged, "u:ghost", 1).Err(); err != nil {
		t.Fatal(err)
	}
	r.rebuildAll(t)
	if n, err := r.rdb.Exists(ctx, staged).Result(); err != nil || n != 0 {
		t.Fatalf("staged buyers hash still there beside a surviving one (%d, %v)", n, err)
	}
	if ghost, err := r.rdb.HExists(ctx, buyersKey, "u:ghost").Result(); err != nil || ghost {
		t.Fatalf("surviving buyers hash took a staged field (%v)", err)
	}
}
