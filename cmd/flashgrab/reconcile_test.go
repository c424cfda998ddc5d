package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// TestReconcileCommand: `flashgrab reconcile` succeeds (exit 0) on balanced
// books, fails (exit 1) on a partition stuck for longer than --stuck-after,
// and once a balance is corrupted.
func TestReconcileCommand(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	db, dsn := testenv.MySQL(t)
	ctx := context.Background()
	if err := settle.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ks := engine.Keyspace{Prefix: prefix, Partitions: 4}
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	books := &settle.Books{DB: db}
	if _, err := books.Credit(ctx, "alice", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	pk, err := eng.NewPacket("alice", 600, 3, flashgrab.ModeFixed, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := books.FundPacket(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if err := eng.PublishPacket(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if err := books.MarkPacketLive(ctx, pk.ID); err != nil {
		t.Fatal(err)
	}
	run := func(flags ...string) error {
		return rootCommand().Run(ctx, append([]string{"flashgrab", "reconcile", "--redis-addrs", testenv.RedisAddr(),
			"--mysql-dsn", dsn, "--key-prefix", prefix, "--partitions", "4"}, flags...))
	}
	if err := run(); err != nil {
		t.Fatalf("reconcile on balanced books: %v", err)
	}
	// An event 10 minutes old that no settler took: stuck under the default
	// 5m, in flight under --stuck-after 1h.
	old := fmt.Sprintf("%d-0", time.Now().Add(-10*time.Minute).UnixMilli())
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: ks.Events(1), ID: old, Values: map[string]any{"k": "sale", "id": "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := run("--stuck-after", "1h"); err != nil {
		t.Fatalf("reconcile with a 10-minute-old event under --stuck-after 1h: %v", err)
	}
	if err := run(); err == nil {
		t.Fatal("reconcile passed a partition stuck for 10 minutes")
	}
	rdb.XDel(ctx, ks.Events(1), old)
	if err := run(); err != nil {
		t.Fatalf("reconcile once the stuck event is gone: %v", err)
	}
	if _, err := db.Exec("UPDATE accounts SET balance_cents = balance_cents - 1 WHERE id = 'alice'"); err != nil {
		t.Fatal(err)
	}
	if err := run(); err == nil {
		t.Fatal("reconcile passed a corrupted balance")
	}
}
