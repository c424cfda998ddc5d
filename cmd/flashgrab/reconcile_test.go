package main

import (
	"context"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// TestReconcileCommand: `flashgrab reconcile` succeeds (exit 0) on balanced
// books and fails (exit 1) once a balance is corrupted.
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
	pk, err := eng.NewPacket("alice", 600, 3, engine.ModeFixed, time.Hour)
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
	run := func() error {
		return rootCommand().Run(ctx, []string{"flashgrab", "reconcile", "--redis-addrs", testenv.RedisAddr(),
			"--mysql-dsn", dsn, "--key-prefix", prefix, "--partitions", "4"})
	}
	if err := run(); err != nil {
		t.Fatalf("reconcile on balanced books: %v", err)
	}
	if _, err := db.Exec("UPDATE accounts SET balance_cents = balance_cents - 1 WHERE id = 'alice'"); err != nil {
		t.Fatal(err)
	}
	if err := run(); err == nil {
		t.Fatal("reconcile passed a corrupted balance")
	}
}
