package settle

import (
	"context"
	"errors"
	"testing"
)

// TestReplayDeadDropsEntryOlderThanRebuild: a dead letter of an epoch a
// rebuild has since left is removed by ReplayDead without being settled (the
// rebuild restored the partition from MySQL without it: settling it would
// count its unit twice), and counted apart from those settled or left.
func TestReplayDeadDropsEntryOlderThanRebuild(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.createSale(t, 10)
	p := r.keys.Partition("s1")
	created, err := r.eng.PartitionEvents(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.settler.Apply(ctx, created); err != nil {
		t.Fatal(err)
	}
	stream := r.keys.Events(p)
	if err := r.rdb.Del(ctx, stream).Err(); err != nil {
		t.Fatal(err)
	}
	order := r.grab(t, 1)[0]
	if err := r.rdb.XGroupCreateMkStream(ctx, stream, r.settler.Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	msgs, err := r.rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream holds %d entries (%v), want the order's", len(msgs), err)
	}
	if err := r.settler.deadLetter(p, msgs[0], errors.New("a cause since mended")); err != nil {
		t.Fatal(err)
	}
	// The partition loses its marker and is rebuilt: a new epoch, the
	// dead-lettered order not in MySQL, so not counted as sold.
	if err := r.rdb.Del(ctx, r.keys.Epoch(p)).Err(); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reb.Rebuild(ctx, p); err != nil || res.Outcome != RebuildDone {
		t.Fatalf("rebuild: %v %v", res, err)
	}

	res, err := r.settler.ReplayDead(ctx, p)
	if err != nil || res.Stale != 1 || res.Settled != 0 || len(res.Left) != 0 {
		t.Fatalf("replay: %v %v, want the dead letter dropped as older than the rebuild", res, err)
	}
	var n int
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM orders WHERE id = ?`, order).Scan(&n); err != nil || n != 0 {
		t.Fatalf("order %s in MySQL %d times (%v), want 0", order, n, err)
	}
	if left, err := r.rdb.XLen(ctx, stream+"-dead").Result(); err != nil || left != 0 {
		t.Fatalf("%d dead letters after the replay (%v), want 0", left, err)
	}
}
