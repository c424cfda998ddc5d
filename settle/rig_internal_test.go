package settle

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// lossRig is, for the tests inside the package, a Redis of the test's own
// (so it can be flushed), MySQL, and an engine that detects lost state, with
// every partition already initialised by its rebuilder.
type lossRig struct {
	rdb     *redis.Client
	db      *sql.DB
	keys    engine.Keyspace
	eng     *engine.Engine
	books   *Books
	settler *Settler
	reb     *Rebuilder
}

func newLossRig(t *testing.T) *lossRig {
	t.Helper()
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	r := &lossRig{rdb: srv.Client(t), keys: engine.Keyspace{Prefix: "fg", Partitions: 2}}
	r.db, _ = testenv.MySQL(t)
	if err := Migrate(ctx, r.db); err != nil {
		t.Fatal(err)
	}
	var err error
	if r.eng, err = engine.New(ctx, engine.Config{Redis: r.rdb, Keys: r.keys, DetectLoss: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.eng.Close)
	r.books = &Books{DB: r.db}
	r.settler = NewSettler(r.rdb, r.books, r.keys, nil)
	r.reb = NewRebuilder(r.eng, r.books, r.settler)
	if _, err := r.reb.RebuildAll(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// createSale creates sale s1 of stock units, one per buyer, open now.
func (r *lossRig) createSale(t *testing.T, stock int64) flashgrab.Sale {
	t.Helper()
	now := time.Now()
	sale := flashgrab.Sale{ID: "s1", MerchantID: "m1", PriceCents: 100, Stock: stock, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
	if _, err := r.eng.CreateSale(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	return sale
}

// grab has buyers u0 … u<n-1> win a unit of s1 each, and returns their orders.
func (r *lossRig) grab(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		res, err := r.eng.Grab(context.Background(), flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", i), Qty: 1})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = res.OrderID
	}
	return ids
}
