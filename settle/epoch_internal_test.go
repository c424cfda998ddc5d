package settle

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestRebuildWaitsForBatchPastItsEpochCheck: a settler batch read before
// Redis lost its state, whose transaction passed the epoch check before the
// rebuild raised the epoch, is counted by the rebuild: the raise waits for
// the batch's commit, so the rebuild reads MySQL with the batch in it, and
// the restored stock plus the orders in MySQL is exactly the initial stock.
// (Without the share lock the rebuild would read MySQL before the commit
// and restore the batch's units as unsold.)
func TestRebuildWaitsForBatchPastItsEpochCheck(t *testing.T) {
	ctx := context.Background()
	r := newLossRig(t)
	rdb, db, keys, eng, settler, reb := r.rdb, r.db, r.keys, r.eng, r.settler, r.reb
	sale := r.createSale(t, 10)
	p := keys.Partition("s1")
	created, err := eng.PartitionEvents(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := settler.Apply(ctx, created); err != nil {
		t.Fatal(err)
	}
	r.grab(t, 3)
	all, err := eng.PartitionEvents(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	batch := all[len(created):]
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	// The batch's transaction stops right after its epoch check, holding
	// the epoch row in share mode, until the rebuild is inside its raise.
	checked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	testHookEpochsChecked = func(evs []flashgrab.Event) {
		if len(evs) > 0 && evs[0].Kind == flashgrab.EventOrder {
			once.Do(func() { close(checked); <-release })
		}
	}
	t.Cleanup(func() { testHookEpochsChecked = nil })
	applied := make(chan error, 1)
	go func() { applied <- settler.Apply(ctx, batch) }()
	<-checked
	type outcome struct {
		res []RebuildResult
		err error
	}
	rebuilt := make(chan outcome, 1)
	go func() {
		res, err := reb.RebuildAll(ctx)
		rebuilt <- outcome{res, err}
	}()
	// Let the batch commit once the rebuild is blocked in the raise (or,
	// were it not to wait, has finished).
	var done *outcome
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		select {
		case o := <-rebuilt:
			done = &o
			return true, ""
		default:
		}
		var n int
		err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO partition_epochs%'`).Scan(&n)
		return err == nil && n > 0, fmt.Sprintf("the rebuild's raise is not running yet (%v)", err)
	})
	close(release)
	if err := <-applied; err != nil {
		t.Fatalf("the batch past its epoch check: %v, want it committed", err)
	}
	if done == nil {
		o := <-rebuilt
		done = &o
	}
	if done.err != nil {
		t.Fatal(done.err)
	}
	var restored RebuildResult
	for _, res := range done.res {
		if res.Partition == p {
			restored = res
		}
	}
	if restored.Outcome != RebuildDone {
		t.Fatalf("partition %d: %v, want rebuilt", p, restored)
	}
	got, err := eng.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	var sold int64
	if err := db.QueryRow(`SELECT COALESCE(SUM(qty), 0) FROM orders WHERE sale_id = 's1'`).Scan(&sold); err != nil {
		t.Fatal(err)
	}
	if sold != 3 || got.Stock+sold != sale.Stock {
		t.Fatalf("after the rebuild: %d sold in MySQL, %d in stock in Redis, want 3 sold and %d in all (%s)",
			sold, got.Stock, sale.Stock, strings.TrimSpace(restored.String()))
	}
}
