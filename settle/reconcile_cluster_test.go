package settle_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

const checkOrders = "every order in Redis is in MySQL (inv. 4)"

// TestReconcileScansEveryMaster is issue 9 item 4 on a real Redis Cluster of
// three masters: an order key in Redis and not in MySQL is planted on each
// master, and reconcile's order check looks at all three and reports each,
// not only those of the one node a plain SCAN reaches.
func TestReconcileScansEveryMaster(t *testing.T) {
	masters, prefix := testenv.SharedCluster(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: masters, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ks := engine.Keyspace{Prefix: prefix, Partitions: 16}

	// One orphan order per master, in a partition whose slot it holds.
	planted := map[string]string{} // master address -> order id
	var want []string
	for p := 0; p < ks.Partitions && len(planted) < len(masters); p++ {
		m, err := rdb.MasterForKey(ctx, ks.Events(p))
		if err != nil {
			t.Fatal(err)
		}
		addr := m.Options().Addr
		if _, ok := planted[addr]; ok {
			continue
		}
		id := fmt.Sprintf("%d-%d", 1000+p, p)
		if err := rdb.HSet(ctx, ks.Orders(p, id), id, "s1|u1|m|1|300|1700000000000|").Err(); err != nil {
			t.Fatal(err)
		}
		planted[addr] = id
		want = append(want, "order "+id+": in Redis, not in MySQL nor in flight")
	}
	if len(planted) != len(masters) {
		t.Fatalf("partitions reach %d of %d masters: %v", len(planted), len(masters), planted)
	}

	rep, err := (&settle.Reconciler{DB: db, Redis: rdb, Keys: ks}).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	rep.Print(&sb)
	for _, c := range rep.Checks {
		if c.Name != checkOrders {
			continue
		}
		got := slices.Sorted(slices.Values(c.Diffs))
		slices.Sort(want)
		if c.Checked != len(masters) || !slices.Equal(got, want) {
			t.Fatalf("order check looked at %d orders with differences %q, want %d and %q\n%s",
				c.Checked, got, len(masters), want, sb.String())
		}
		return
	}
	t.Fatalf("no check %q in the report:\n%s", checkOrders, sb.String())
}
