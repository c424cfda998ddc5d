package settle

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/flashgrab/flashgrab"
)

// TestStrandedOrderResolvedThroughFailedRebuild: a stranded order (its unit
// could not go back while the sale's keys were gone) is resolved by a
// rebuild that fails before it writes Redis, and the retry gives the unit
// back exactly once: stock = initial − held, and exactly that many more
// buyers win. A partition whose sale hash survived (only its marker lost)
// leaves the stranded order alone, since its unit is not in that stock.
func TestStrandedOrderResolvedThroughFailedRebuild(t *testing.T) {
	ctx := context.Background()
	r := newLossRig(t)
	rdb, db, keys, eng, settler, reb := r.rdb, r.db, r.keys, r.eng, r.settler, r.reb
	const stock = 10
	r.createSale(t, stock)
	ids := r.grab(t, 3)
	p := keys.Partition("s1")
	events, err := eng.PartitionEvents(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := settler.Apply(ctx, events); err != nil {
		t.Fatal(err)
	}
	stranded := ids[2]
	if _, err := db.Exec(`UPDATE orders SET status = 'cancelled', released = 2 WHERE id = ?`, stranded); err != nil {
		t.Fatal(err)
	}
	released := func() int {
		t.Helper()
		var n int
		if err := db.QueryRow(`SELECT released FROM orders WHERE id = ?`, stranded).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rebuild := func() RebuildResult {
		t.Helper()
		res, err := reb.Rebuild(ctx, p)
		if err != nil || res.Outcome != RebuildDone {
			t.Fatalf("rebuild of partition %d: %v %v, want done", p, res, err)
		}
		return res
	}

	// Only the marker lost: the sale's hash, without the stranded unit,
	// survives and is kept, so the order stays stranded.
	before, err := eng.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, keys.Epoch(p)).Err(); err != nil {
		t.Fatal(err)
	}
	if res := rebuild(); res.StrandedResolved != 0 || res.Sales != 0 {
		t.Fatalf("rebuild with the sale's hash intact: %v, want nothing resolved nor restored", res)
	}
	after, err := eng.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if after.Stock != before.Stock || released() != 2 {
		t.Fatalf("with the sale's hash intact: stock %d → %d, stranded order released=%d; want the stock kept and released=2",
			before.Stock, after.Stock, released())
	}

	// Everything lost; the first rebuild fails just before it writes Redis.
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	cut := errors.New("redis went away")
	testHookBeforeRestore = func(int) error { return cut }
	t.Cleanup(func() { testHookBeforeRestore = nil })
	if _, err := reb.Rebuild(ctx, p); !errors.Is(err, cut) {
		t.Fatalf("rebuild with Redis cut before the restore: %v, want it failed", err)
	}
	if ok, err := eng.HasEpoch(ctx, p); err != nil || ok {
		t.Fatalf("partition %d marked after a failed rebuild (%v)", p, err)
	}
	if got := released(); got != 1 {
		t.Fatalf("stranded order after the failed rebuild: released=%d, want 1 (resolved before the restore)", got)
	}
	testHookBeforeRestore = nil
	if res := rebuild(); res.Sales != 1 {
		t.Fatalf("retried rebuild: %v, want the sale restored", res)
	}
	const held = 2 // u0 and u1; u2's unit is back
	got, err := eng.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Stock != stock-held || got.Sold != held || released() != 1 {
		t.Fatalf("after the retried rebuild: stock %d, sold %d, stranded order released=%d; want %d, %d, 1",
			got.Stock, got.Sold, released(), stock-held, held)
	}
	wins := 0
	for i := range 2 * stock {
		_, err := eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("b%d", i), Qty: 1})
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, flashgrab.ErrSoldOut):
			t.Fatal(err)
		}
	}
	if wins != stock-held {
		t.Fatalf("%d buyers won after the rebuild, want exactly the %d units not held", wins, stock-held)
	}
}
