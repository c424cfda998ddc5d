package main

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// storesRig is what the commands that work on the stores (rebuild,
// replay-dead) are tested against: a Redis of the test's own (so it can be
// flushed), MySQL migrated, and an engine on them with sale s1 open
// (10 units, one per buyer), in 4 partitions under prefix "fg".
type storesRig struct {
	rdb       *redis.Client
	db        *sql.DB
	addr, dsn string
	keys      engine.Keyspace
	eng       *engine.Engine
}

func newStoresRig(t *testing.T) *storesRig {
	t.Helper()
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	r := &storesRig{rdb: srv.Client(t), addr: srv.Addr, keys: engine.Keyspace{Prefix: "fg", Partitions: 4}}
	r.db, r.dsn = testenv.MySQL(t)
	if err := settle.Migrate(ctx, r.db); err != nil {
		t.Fatal(err)
	}
	var err error
	if r.eng, err = engine.New(ctx, engine.Config{Redis: r.rdb, Keys: r.keys}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.eng.Close)
	now := time.Now()
	if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m", PriceCents: 100, Stock: 10, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs `flashgrab <command> <flags>` on the rig's stores and returns
// what it printed.
func (r *storesRig) run(command string, flags ...string) (string, error) {
	var out strings.Builder
	root := rootCommand()
	root.Writer = &out
	err := root.Run(context.Background(), append([]string{"flashgrab", command, "--redis-addrs", r.addr,
		"--mysql-dsn", r.dsn, "--key-prefix", r.keys.Prefix, "--partitions", "4"}, flags...))
	return out.String(), err
}
