package settle

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
)

// TestReconcileSaleCreatedAfterSnapshot: a sharded sale created after
// reconcile's snapshot, one of whose orders settled (on another shard's
// partition) before the check reads MySQL, is no difference in "every
// settled order's sale is in MySQL": its creation, not in the snapshot nor
// in MySQL, is found by reading its partition's stream again.
func TestReconcileSaleCreatedAfterSnapshot(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	var settledOrder string
	testHookSnapshotsTaken = func() {
		testHookSnapshotsTaken = nil
		now := time.Now()
		sale, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: "sh", MerchantID: "m", PriceCents: 100, Stock: 50, PerUserLimit: 1,
			StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Shards: 2})
		if err != nil {
			t.Fatal(err)
		}
		other := sale.ShardPartitions[1]
		for i := 0; settledOrder == "" && i < 100; i++ {
			res, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "sh", UserID: fmt.Sprintf("u%d", i), Qty: 1})
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(res.OrderID, fmt.Sprintf("-%d", other)) {
				settledOrder = res.OrderID
			}
		}
		if settledOrder == "" {
			t.Fatalf("no grab of 100 won on shard 1 (partition %d)", other)
		}
		evs, err := r.eng.PartitionEvents(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.settler.Apply(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { testHookSnapshotsTaken = nil })
	rep, err := (&Reconciler{DB: r.db, Redis: r.rdb, Keys: r.keys}).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if settledOrder == "" {
		t.Fatal("the hook did not run")
	}
	var known bool
	if err := r.db.QueryRow(`SELECT COUNT(*) > 0 FROM sales WHERE id = 'sh'`).Scan(&known); err != nil || known {
		t.Fatalf("sale sh in MySQL (%v, %v): the test needs its creation unsettled", known, err)
	}
	for _, c := range rep.Checks {
		if c.Name == "every settled order's sale is in MySQL" {
			if c.Checked != 1 || len(c.Diffs) != 0 {
				t.Fatalf("check %q looked at %d sales and found %q, want 1 and none", c.Name, c.Checked, c.Diffs)
			}
			return
		}
	}
	t.Fatal("no check of settled orders' sales in the report")
}
