package settle_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

func newBooks(t *testing.T) *settle.Books {
	t.Helper()
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return &settle.Books{DB: db}
}

// interleave runs n writers that each read the merchant's balance, wait until
// all n have read, then write: the seed's scenario, made deterministic.
func interleave(t *testing.T, n int, read func() (int64, int64), write func(bal, ver int64) bool) {
	t.Helper()
	var readAll sync.WaitGroup
	readAll.Add(n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bal, ver := read()
			readAll.Done()
			readAll.Wait()
			for !write(bal, ver) {
				bal, ver = read() // the version moved: read again and retry
			}
		}()
	}
	wg.Wait()
}

// TestLostUpdate is the seed's scenario: three buyers pay 1 yuan each to a
// merchant at balance 0. A read-modify-write without a version ends at 1
// yuan; the versioned compare-and-set ends at exactly 3.
func TestLostUpdate(t *testing.T) {
	b := newBooks(t)
	db := b.DB
	read := func(id string) func() (int64, int64) {
		return func() (bal, ver int64) {
			if err := db.QueryRow("SELECT balance_cents, version FROM accounts WHERE id = ?", id).Scan(&bal, &ver); err != nil {
				t.Error(err)
			}
			return
		}
	}
	for _, id := range []string{"naive", "cas"} {
		if _, err := db.Exec("INSERT INTO accounts (id) VALUES (?)", id); err != nil {
			t.Fatal(err)
		}
	}
	interleave(t, 3, read("naive"), func(bal, _ int64) bool {
		_, err := db.Exec("UPDATE accounts SET balance_cents = ? WHERE id = 'naive'", bal+100)
		return err == nil
	})
	interleave(t, 3, read("cas"), func(bal, ver int64) bool {
		res, err := db.Exec("UPDATE accounts SET balance_cents = ?, version = version + 1 WHERE id = 'cas' AND version = ?", bal+100, ver)
		if err != nil {
			t.Error(err)
			return true
		}
		n, _ := res.RowsAffected()
		return n == 1
	})
	naive, _ := read("naive")()
	cas, ver := read("cas")()
	t.Logf("three concurrent 1-yuan credits: naive read-modify-write ends at %d fen, versioned CAS at %d fen (version %d)", naive, cas, ver)
	if naive != 100 {
		t.Errorf("naive balance %d: the forced interleaving should lose two of three updates", naive)
	}
	if cas != 300 || ver != 3 {
		t.Errorf("CAS balance %d version %d, want 300 and 3", cas, ver)
	}
}

// TestConcurrentCreditsThroughBooks: 1,000 concurrent credits of 1 yuan,
// from four Books (four server instances: their in-process turns do not see
// each other, so only the version check stands between them), end at exactly
// 1,000 yuan, with the ledger matching row for row and the version counting
// every write.
func TestConcurrentCreditsThroughBooks(t *testing.T) {
	b := newBooks(t)
	ctx := context.Background()
	instances := []*settle.Books{b, {DB: b.DB}, {DB: b.DB}, {DB: b.DB}}
	var wg sync.WaitGroup
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := settle.Posting{EventID: fmt.Sprintf("pay:%d", i), Account: "merchant", Delta: 100, Kind: "sale", Ref: fmt.Sprint(i)}
			if err := instances[i%4].Post(ctx, []settle.Posting{p}, false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var conflicts int64
	for _, in := range instances {
		conflicts += in.Conflicts()
	}
	t.Logf("1,000 concurrent credits from 4 instances: %d compare-and-set conflicts retried", conflicts)
	a, err := b.Account(ctx, "merchant")
	if err != nil {
		t.Fatal(err)
	}
	var rows, sum, maxAfter int64
	b.DB.QueryRow("SELECT COUNT(*), SUM(delta_cents), MAX(balance_after) FROM ledger WHERE account_id = 'merchant'").Scan(&rows, &sum, &maxAfter)
	if a.BalanceCents != 100000 || a.Version != 1000 || rows != 1000 || sum != 100000 || maxAfter != 100000 {
		t.Fatalf("balance %d version %d, ledger %d rows summing %d (max after %d); want 100000, 1000, 1000, 100000, 100000",
			a.BalanceCents, a.Version, rows, sum, maxAfter)
	}
	// Replaying every event changes nothing.
	for i := 0; i < 1000; i += 97 {
		p := settle.Posting{EventID: fmt.Sprintf("pay:%d", i), Account: "merchant", Delta: 100, Kind: "sale"}
		if err := b.Post(ctx, []settle.Posting{p}, false); err != nil {
			t.Fatal(err)
		}
	}
	if again, _ := b.Account(ctx, "merchant"); again != a {
		t.Fatalf("replay moved the account: %+v → %+v", a, again)
	}
}

func TestCreditIdempotentByRef(t *testing.T) {
	b := newBooks(t)
	ctx := context.Background()
	a1, err := b.Credit(ctx, "alice", 500, "r1")
	if err != nil || a1.BalanceCents != 500 || a1.Version != 1 {
		t.Fatalf("credit: %+v %v", a1, err)
	}
	a2, err := b.Credit(ctx, "alice", 500, "r1")
	if err != nil || a2 != a1 {
		t.Fatalf("repeat credit: %+v %v, want %+v", a2, err, a1)
	}
	if _, err := b.Credit(ctx, "alice", 700, "r1"); !errors.Is(err, flashgrab.ErrExists) {
		t.Fatalf("ref reused with another amount: %v, want ErrExists", err)
	}
	if _, err := b.Credit(ctx, "bob", 500, "r1"); !errors.Is(err, flashgrab.ErrExists) {
		t.Fatalf("ref reused for another account: %v, want ErrExists", err)
	}
}

func TestFundPacketRefusesOverdraft(t *testing.T) {
	b := newBooks(t)
	ctx := context.Background()
	if _, err := b.Credit(ctx, "s", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	pk := flashgrab.Packet{ID: "1", SenderID: "s", TotalCents: 1001, Count: 1, Mode: "fixed"}
	if err := b.FundPacket(ctx, pk); !errors.Is(err, flashgrab.ErrInsufficientFunds) {
		t.Fatalf("overdraft: %v, want ErrInsufficientFunds", err)
	}
	var n int
	b.DB.QueryRow("SELECT COUNT(*) FROM packets").Scan(&n)
	if a, _ := b.Account(ctx, "s"); a.BalanceCents != 1000 || n != 0 {
		t.Fatalf("refused debit changed things: balance %d, %d packets", a.BalanceCents, n)
	}
}
