package settle_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// commandCalls sums, over every master of the cluster, the calls of the
// commands whose INFO commandstats name starts with cmdstat_<name>
// (subcommands included: cmdstat_xgroup|create), failed and rejected ones
// too.
func commandCalls(t *testing.T, rdb *redis.ClusterClient, name string) int {
	t.Helper()
	var mu sync.Mutex
	total := 0
	err := rdb.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		for line := range strings.Lines(info) {
			stat, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+name)
			if !ok || !(strings.HasPrefix(stat, ":") || strings.HasPrefix(stat, "|")) {
				continue
			}
			_, fields, _ := strings.Cut(stat, ":")
			for f := range strings.SplitSeq(fields, ",") {
				k, v, _ := strings.Cut(f, "=")
				if k == "calls" || k == "rejected_calls" {
					n, err := strconv.Atoi(v)
					if err != nil {
						return fmt.Errorf("%s: %q: %w", c.Options().Addr, line, err)
					}
					mu.Lock()
					total += n
					mu.Unlock()
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	return total
}

// TestSettlerCreatesGroupsOnce is issue 11 on a real 3-master cluster: the
// settler sends XGROUP CREATE once per partition stream, however many loops
// it runs (it sent one on every loop, each answered BUSYGROUP), and again
// only when a read answers NOGROUP: a stream deleted under it is recreated
// with its group and the partition settles again.
func TestSettlerCreatesGroupsOnce(t *testing.T) {
	nodes := testenv.Cluster(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr}, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	const partitions = 6
	ks := engine.Keyspace{Prefix: "fgs", Partitions: partitions}
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	if n := commandCalls(t, rdb, "xgroup"); n != 0 {
		t.Fatalf("%d XGROUP calls before the settler started", n)
	}

	pool, err := ants.NewPool(4)
	if err != nil {
		t.Fatal(err)
	}
	s := settle.NewSettler(rdb, &settle.Books{DB: db}, ks, pool)
	s.Block, s.Linger = 10*time.Millisecond, 0
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pool.Release() })

	// One sale per partition, sold while the settler runs.
	sales := make([]string, partitions)
	for i, found := 0, 0; found < partitions; i++ {
		id := "s" + strconv.Itoa(i)
		if p := ks.Partition(id); sales[p] == "" {
			sales[p] = id
			found++
		}
	}
	now := time.Now()
	for _, id := range sales {
		if _, err := eng.CreateSale(ctx, flashgrab.Sale{ID: id, MerchantID: "m", PriceCents: 100, Stock: 10,
			PerUserLimit: 1, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	orders := map[string]bool{}
	grab := func(sale string, users int) {
		t.Helper()
		for u := range users {
			res, err := eng.Grab(ctx, flashgrab.GrabRequest{SaleID: sale, UserID: "u" + strconv.Itoa(u), Qty: 1})
			if err != nil {
				t.Fatalf("grab of %s by u%d: %v", sale, u, err)
			}
			orders[res.OrderID] = true
		}
	}
	for _, id := range sales {
		grab(id, 5)
	}
	waitSettled(t, db, len(orders))
	// Many loops: every partition blocks 10 ms per empty read.
	const loops = 30
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := commandCalls(t, rdb, "xreadgroup")
		return n >= loops*partitions, fmt.Sprintf("%d XREADGROUP calls, want %d loops of %d partitions", n, loops, partitions)
	})
	if n := commandCalls(t, rdb, "xgroup"); n != partitions {
		t.Fatalf("%d XGROUP calls after %d loops of %d partitions, want %d: one per stream", n, loops, partitions, partitions)
	}

	// The stream of partition 0 deleted under the settler: the next read
	// answers NOGROUP, the group is created again, and new grabs settle.
	if err := rdb.Del(ctx, ks.Events(0)).Err(); err != nil {
		t.Fatal(err)
	}
	grab(sales[0], 10)
	waitSettled(t, db, len(orders))
	var got int
	if err := db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != len(orders) {
		t.Fatalf("MySQL holds %d orders, Redis decided %d", got, len(orders))
	}
	if n := commandCalls(t, rdb, "xgroup"); n != partitions+1 {
		t.Fatalf("%d XGROUP calls after the stream of partition 0 was deleted, want %d: one more", n, partitions+1)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := rdb.XLen(ctx, ks.Events(0)).Val()
		return n == 0, fmt.Sprintf("the recreated stream holds %d entries, want 0 once settled", n)
	})
}
