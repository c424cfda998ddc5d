package bench

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

const (
	// ordersWriters is one settler per partition of a default keyspace
	// slice: each applies its partition's batches in turn.
	ordersWriters = 8
	// ordersBatch is the settler's default batch (Settler.BatchSize).
	ordersBatch = 1000
)

// BenchmarkSettleOrders measures how many won orders a second the settler
// writes into MariaDB (issue 10 target 7: settlement keeps up with the
// grabs), and the ceiling under it in the same run:
//
//   - settler: Settler.Apply of batches of order events, as the settler
//     commits them (the partition's epoch read in share mode, INSERT IGNORE
//     of the orders, the read-back that refuses an id taken by another
//     order), 8 writers;
//   - raw-insert: the same rows by plain multi-row INSERTs, one per batch, in
//     autocommit, nothing checked: what MariaDB itself takes on this
//     machine.
//
// b.N is the number of orders. Each run ends by counting its orders in MySQL.
//
//	go test -run '^$' -bench SettleOrders -benchtime 200000x ./bench/
func BenchmarkSettleOrders(b *testing.B) {
	db, _ := testenv.MySQL(b)
	if err := settle.Migrate(context.Background(), db); err != nil {
		b.Fatalf("migrate: %v", err)
	}
	settler := settle.NewSettler(nil, &settle.Books{DB: db}, engine.Keyspace{Prefix: "fg", Partitions: ordersWriters}, nil)
	b.Run("settler", func(b *testing.B) {
		ordersRun(b, db, func(ctx context.Context, evs []flashgrab.Event) error { return settler.Apply(ctx, evs) })
	})
	b.Run("raw-insert", func(b *testing.B) {
		ordersRun(b, db, func(ctx context.Context, evs []flashgrab.Event) error { return rawInsertOrders(ctx, db, evs) })
	})
}

// ordersRun writes b.N orders in batches of ordersBatch through write, from
// ordersWriters writers, reports orders/s and checks they are all in MySQL.
func ordersRun(b *testing.B, db *sql.DB, write func(context.Context, []flashgrab.Event) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	run := testenv.Name("so")
	at := time.Now().UTC().Truncate(time.Millisecond)
	var (
		next    atomic.Int64
		failed  atomic.Bool
		errOnce sync.Once
		firstEr error
		wg      sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for w := range ordersWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := make([]flashgrab.Event, 0, ordersBatch)
			for !failed.Load() {
				hi := int(next.Add(ordersBatch))
				lo := hi - ordersBatch
				if lo >= b.N {
					return
				}
				evs = evs[:0]
				for k := lo; k < min(hi, b.N); k++ {
					id := run + "-" + strconv.Itoa(k)
					evs = append(evs, flashgrab.Event{ID: strconv.Itoa(k) + "-0", Partition: w, Kind: flashgrab.EventOrder,
						Order: flashgrab.Order{ID: id, SaleID: run, UserID: "u" + strconv.Itoa(k), MerchantID: "m",
							Qty: 1, AmountCents: 100, CreatedAt: at, KeyKnown: true}})
				}
				if err := write(ctx, evs); err != nil {
					errOnce.Do(func() { firstEr = fmt.Errorf("write orders %d..%d: %w", lo, min(hi, b.N)-1, err) })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstEr != nil {
		b.Fatal(firstEr)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "orders/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "ns/op")
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM orders WHERE sale_id = ?", run).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if n != b.N {
		b.Fatalf("%d orders in MySQL, want %d", n, b.N)
	}
}

// rawInsertOrders is the baseline: the orders' rows in one plain INSERT.
func rawInsertOrders(ctx context.Context, db *sql.DB, evs []flashgrab.Event) error {
	args := make([]any, 0, 10*len(evs))
	for _, e := range evs {
		o := e.Order
		args = append(args, o.ID, o.SaleID, o.UserID, o.MerchantID, o.Qty, o.AmountCents, o.CreatedAt, o.CreatedAt.Add(15*time.Minute), e.ID, o.Key)
	}
	_, err := db.ExecContext(ctx, "INSERT INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, expires_at, event_id, idem_key) VALUES "+
		strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?,?,?),", len(evs)), ","), args...)
	return err
}
