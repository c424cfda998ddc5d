package settle

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestSettlerSurvivesPanickingBatch: settling that panics (ants recovers a
// task's panic and drops it, which left the partition waiting for good) is
// an error of the batch: it is split, the entry that panics alone is
// dead-lettered with the panic as its reason, nothing of it reaches MySQL,
// and every other order settles, later ones included (that the panicked
// transaction is rolled back at once is TestTxRolledBackOnPanic). Once the bug is mended, ReplayDead settles the dead letter.
func TestSettlerSurvivesPanickingBatch(t *testing.T) {
	r := newLossRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	var logs strings.Builder
	var mu sync.Mutex
	testHookEpochsChecked = func(evs []flashgrab.Event) {
		for _, e := range evs {
			if e.Kind == flashgrab.EventOrder && e.Order.UserID == "mallory" {
				panic("settling mallory's order")
			}
		}
	}
	t.Cleanup(func() { testHookEpochsChecked = nil })
	pool, err := ants.NewPool(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Release)
	s := NewSettler(r.rdb, r.books, r.keys, pool)
	s.Block, s.BatchSize = 20*time.Millisecond, 50
	s.Logger = slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(b)
	}), nil))
	stopped := make(chan error, 1)
	go func() { stopped <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second): // a deadline, so that a stuck partition fails the test, not hangs it
			t.Error("the settler did not stop within 30 s of its context's end: a partition is stuck")
		}
	})

	r.createSale(t, 100)
	grab := func(user string) {
		t.Helper()
		if _, err := r.eng.Grab(context.Background(), flashgrab.GrabRequest{SaleID: "s1", UserID: user, Qty: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		grab(fmt.Sprintf("u%d", i))
		if i == 4 {
			grab("mallory")
		}
	}
	p := r.keys.Partition("s1")
	dead := r.keys.Events(p) + "-dead"
	settled := func(n int) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			var got int
			err := r.db.QueryRow(`SELECT COUNT(*) FROM orders WHERE user_id <> 'mallory'`).Scan(&got)
			letters, _ := r.rdb.XLen(context.Background(), dead).Result()
			return err == nil && got == n && letters == 1,
				fmt.Sprintf("%d of %d orders settled, %d dead letters (want 1) (%v)", got, n, letters, err)
		})
	}
	settled(10)
	msgs, err := r.rdb.XRange(context.Background(), dead, "-", "+").Result()
	if err != nil || len(msgs) != 1 || !strings.Contains(fmt.Sprint(msgs[0].Values["o"]), "|mallory|") ||
		!strings.Contains(fmt.Sprint(msgs[0].Values["reason"]), "settling panicked: settling mallory's order") {
		t.Fatalf("dead letters %v (%v), want mallory's order with the panic as reason", msgs, err)
	}
	var mallory int
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM orders WHERE user_id = 'mallory'`).Scan(&mallory); err != nil || mallory != 0 {
		t.Fatalf("mallory's order in MySQL %d times (%v), want 0: its transaction panicked", mallory, err)
	}

	// The partition goes on settling.
	for i := range 5 {
		grab(fmt.Sprintf("v%d", i))
	}
	settled(15)

	// The bug mended, a replay settles the dead letter and removes it; a
	// second replay finds nothing.
	testHookEpochsChecked = nil
	res, err := s.ReplayDead(context.Background(), p)
	if err != nil || res.Settled != 1 || len(res.Left) != 0 {
		t.Fatalf("replay after the fix: %v %v, want 1 settled and none left", res, err)
	}
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM orders WHERE user_id = 'mallory'`).Scan(&mallory); err != nil || mallory != 1 {
		t.Fatalf("mallory's order in MySQL %d times after the replay (%v), want 1", mallory, err)
	}
	if n, err := r.rdb.XLen(context.Background(), dead).Result(); err != nil || n != 0 {
		t.Fatalf("%d dead letters after the replay (%v), want 0", n, err)
	}
	if res, err := s.ReplayDead(context.Background(), p); err != nil || res.Settled != 0 || len(res.Left) != 0 {
		t.Fatalf("second replay: %v %v, want nothing to do", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "settling a batch panicked") || !strings.Contains(logs.String(), "settler_internal_test.go") {
		t.Fatalf("the panic was not logged with its stack:\n%s", logs.String())
	}
}

// writerFunc is an io.Writer of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestTxRolledBackOnPanic: a Books transaction whose function panics is
// rolled back as the panic leaves it, not when its context ends (it kept
// its row locks until then before), and the panic goes on up.
func TestTxRolledBackOnPanic(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	if _, err := r.books.Credit(ctx, "a1", 500, "seed"); err != nil {
		t.Fatal(err)
	}
	// txCtx does not end while the test looks; it ends with the test, so
	// that a transaction left open fails it rather than hangs its clean-up.
	txCtx, end := context.WithCancel(ctx)
	defer end()
	func() {
		defer func() {
			if v := recover(); v != "mid-transaction" {
				t.Fatalf("recovered %v, want the function's own panic", v)
			}
		}()
		r.books.Tx(txCtx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(txCtx, `UPDATE accounts SET balance_cents = balance_cents + 1 WHERE id = 'a1'`); err != nil {
				t.Fatal(err)
			}
			panic("mid-transaction")
		}, []string{"a1"})
	}()
	var open int
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM information_schema.INNODB_TRX t
		JOIN information_schema.PROCESSLIST l ON l.ID = t.trx_mysql_thread_id WHERE l.DB = DATABASE()`).Scan(&open); err != nil || open != 0 {
		t.Fatalf("%d transactions open after the panic (%v), want 0", open, err)
	}
	// The row is not locked: another transaction updates it at once.
	if _, err := r.books.Credit(ctx, "a1", 1, "after"); err != nil {
		t.Fatal(err)
	}
	if a, err := r.books.Account(ctx, "a1"); err != nil || a.BalanceCents != 501 {
		t.Fatalf("balance %d (%v), want 501: the panicked update rolled back", a.BalanceCents, err)
	}
}
