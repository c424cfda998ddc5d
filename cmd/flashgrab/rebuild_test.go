package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// TestRebuildCommand: `flashgrab rebuild` restores a flushed Redis from
// MySQL and prints what it restored per partition; run again, it finds
// every partition intact; a partition out of range is refused.
func TestRebuildCommand(t *testing.T) {
	r := newStoresRig(t)
	rdb, db, ks, eng := r.rdb, r.db, r.keys, r.eng
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", i), Qty: 1}); err != nil {
			t.Fatal(err)
		}
	}
	p := ks.Partition("s1")
	evs, err := eng.PartitionEvents(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := settle.NewSettler(rdb, &settle.Books{DB: db}, ks, nil).Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	run := func(flags ...string) (string, error) { return r.run("rebuild", flags...) }
	out, err := run()
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	want := fmt.Sprintf("partition %d: rebuilt: 0 stream events settled first; restored 1 sales, 1 buyer sets, 3 order records", p)
	if !strings.Contains(out, want) || strings.Count(out, "initialised") != 3 {
		t.Fatalf("rebuild printed:\n%s\nwant %q and 3 partitions initialised", out, want)
	}
	if s, err := eng.Sale(ctx, "s1"); err != nil || s.Stock != 7 || s.Sold != 3 {
		t.Fatalf("sale after the rebuild: %+v %v, want 7 left, 3 sold", s, err)
	}
	if out, err := run("--partition", fmt.Sprint(p)); err != nil || strings.TrimSpace(out) != fmt.Sprintf("partition %d: intact", p) {
		t.Fatalf("rebuild of a restored partition: %q %v, want intact", out, err)
	}
	if _, err := run("--partition", "4"); err == nil {
		t.Fatal("rebuild of partition 4 of 4 succeeded")
	}
}
