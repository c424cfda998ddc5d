package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

// TestReplayDeadCommand: `flashgrab replay-dead` settles a dead letter whose
// cause is gone and removes it, keeps one it cannot settle, says why and
// exits non-zero while any is left; with none left it exits 0, and a
// partition out of range is refused.
func TestReplayDeadCommand(t *testing.T) {
	r := newStoresRig(t)
	rdb, db, ks, eng := r.rdb, r.db, r.keys, r.eng
	ctx := context.Background()
	order, err := eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "u1", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The sale's creation settles; the order's entry is dead-lettered as the
	// settler does it (reason, the entry's id, its fields, "id" kept as
	// "event_id"), beside a dead letter that names no entry.
	p := ks.Partition("s1")
	stream, dead := ks.Events(p), ks.Events(p)+"-dead"
	msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("stream holds %d entries (%v), want the creation and the order", len(msgs), err)
	}
	created, err := engine.ParseEntry(p, msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := settle.NewSettler(rdb, &settle.Books{DB: db}, ks, nil).Apply(ctx, created); err != nil {
		t.Fatal(err)
	}
	values := map[string]any{"reason": "settling panicked: a bug since fixed", "id": msgs[1].ID}
	for k, v := range msgs[1].Values {
		if k == "id" || k == "reason" {
			k = "event_" + k
		}
		values[k] = v
	}
	for _, v := range []map[string]any{values, {"reason": "hand-made"}} {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: dead, Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Del(ctx, stream).Err(); err != nil {
		t.Fatal(err)
	}
	run := func(flags ...string) (string, error) { return r.run("replay-dead", flags...) }

	out, err := run()
	if err == nil || !strings.Contains(err.Error(), "1 dead letters left") ||
		!strings.Contains(out, fmt.Sprintf("partition %d: 1 dead letters settled, 0 dropped as older than a rebuild, 1 left", p)) ||
		!strings.Contains(out, "dead letter without the entry's id") {
		t.Fatalf("replay-dead: %v\n%s\nwant the order settled, the hand-made one left with why, and an error", err, out)
	}
	var user string
	if err := db.QueryRow(`SELECT user_id FROM orders WHERE id = ?`, order.OrderID).Scan(&user); err != nil || user != "u1" {
		t.Fatalf("order %s in MySQL: user %q (%v), want u1's", order.OrderID, user, err)
	}
	left, err := rdb.XRange(ctx, dead, "-", "+").Result()
	if err != nil || len(left) != 1 || left[0].Values["reason"] != "hand-made" {
		t.Fatalf("dead letters after the replay: %v %v, want only the hand-made one", left, err)
	}

	if err := rdb.XDel(ctx, dead, left[0].ID).Err(); err != nil {
		t.Fatal(err)
	}
	if out, err := run(); err != nil || strings.Count(out, "0 dead letters settled, 0 dropped as older than a rebuild, 0 left") != 4 {
		t.Fatalf("replay-dead with nothing dead: %v\n%s\nwant exit 0 and 4 partitions with nothing to do", err, out)
	}
	if _, err := run("--partition", "4"); err == nil {
		t.Fatal("replay-dead of partition 4 of 4 succeeded")
	}
}
