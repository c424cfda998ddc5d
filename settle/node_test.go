package settle_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

func leaseDB(t *testing.T) *sql.DB {
	t.Helper()
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestNodeLeaseCyclesNeverReuseALiveNode is issue 13 item 3: Redis INCR & 1023
// gave node 1 again after 1,024 starts. 1,100 claim/release cycles (a crash
// loop's worth of starts) while three instances hold live leases never hand
// out a number one of them holds, and the three still renew afterwards.
func TestNodeLeaseCyclesNeverReuseALiveNode(t *testing.T) {
	db := leaseDB(t)
	ctx := context.Background()
	live := map[int64]*settle.NodeLease{}
	for i := range 3 {
		l, err := settle.ClaimNode(ctx, db, fmt.Sprintf("live%d", i), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if live[l.Node()] != nil {
			t.Fatalf("live lease %d got node %d, already held", i, l.Node())
		}
		live[l.Node()] = l
	}
	for i := range 1100 {
		l, err := settle.ClaimNode(ctx, db, "crashloop", time.Hour)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if live[l.Node()] != nil {
			t.Fatalf("cycle %d: got node %d, held by a live lease", i, l.Node())
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for n, l := range live {
		if err := l.Renew(ctx); err != nil {
			t.Fatalf("live lease on node %d after the cycles: %v", n, err)
		}
	}
}

// TestNodeLeaseConcurrentClaimsAreDistinct: 64 instances starting at once
// get 64 different numbers.
func TestNodeLeaseConcurrentClaimsAreDistinct(t *testing.T) {
	db := leaseDB(t)
	const claimers = 64
	nodes := make([]int64, claimers)
	var wg sync.WaitGroup
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := settle.ClaimNode(context.Background(), db, fmt.Sprintf("i%d", i), time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			nodes[i] = l.Node()
		}()
	}
	wg.Wait()
	seen := map[int64]int{}
	for i, n := range nodes {
		if j, dup := seen[n]; dup {
			t.Fatalf("claimers %d and %d both got node %d", j, i, n)
		}
		seen[n] = i
	}
	var held int
	if err := db.QueryRow("SELECT COUNT(*) FROM node_leases WHERE expires_at > NOW(3)").Scan(&held); err != nil || held != claimers {
		t.Fatalf("%d live leases (%v), want %d", held, err, claimers)
	}
}

// TestNodeLeaseExpiredIsTakenOver: a lease left to expire (a crashed
// instance) is taken by the next claim, and its old holder's renewal then
// fails with ErrLeaseLost; with every number live, a claim fails.
func TestNodeLeaseExpiredIsTakenOver(t *testing.T) {
	db := leaseDB(t)
	ctx := context.Background()
	old, err := settle.ClaimNode(ctx, db, "old", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Every other number held by live instances.
	if _, err := db.Exec("UPDATE node_leases SET owner = 'other', expires_at = NOW(3) + INTERVAL 1 HOUR WHERE node <> ?", old.Node()); err != nil {
		t.Fatal(err)
	}
	if _, err := settle.ClaimNode(ctx, db, "none-left", time.Hour); err == nil {
		t.Fatal("claim with every number live succeeded")
	}
	if _, err := db.Exec("UPDATE node_leases SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE node = ?", old.Node()); err != nil {
		t.Fatal(err)
	}
	l, err := settle.ClaimNode(ctx, db, "new", time.Hour)
	if err != nil || l.Node() != old.Node() {
		t.Fatalf("claim after expiry: %v %v, want node %d", l, err, old.Node())
	}
	if err := old.Renew(ctx); !errors.Is(err, settle.ErrLeaseLost) {
		t.Fatalf("renewal by the expired holder: %v, want ErrLeaseLost", err)
	}
	if err := old.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx); err != nil {
		t.Fatalf("the new holder after the old one's release: %v", err)
	}
}

// TestEngineRefusesIDsWithoutLease: a leased engine hands out no order ids
// before its lease, nor once the lease is lost (Keep sees it taken): grabs
// answer ErrUnavailable and change nothing; once it holds a node again
// (Keep claims one), grabs win again.
func TestEngineRefusesIDsWithoutLease(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	ids := engine.NewLeasedIDs()
	eng, err := engine.New(ctx, engine.Config{Redis: r.rdb, Keys: r.keys, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := eng.CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m", PriceCents: 100, Stock: 10, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	grab := func(u string) error {
		_, err := eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: u, Qty: 1})
		return err
	}
	if err := grab("before"); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("grab before any lease: %v, want ErrUnavailable", err)
	}
	l, err := settle.ClaimNode(ctx, r.db, "eng", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ids.Hold(l.Node(), l.Until()) // as serve does, before Keep takes over
	keepCtx, stop := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() { l.Keep(keepCtx, ids); close(kept) }()
	defer func() { stop(); <-kept }()
	if err := grab("held"); err != nil {
		t.Fatalf("grab under the lease: %v", err)
	}
	// Another instance takes every number (this one's lease "expired"):
	// Keep finds it lost, and the engine must stop.
	if _, err := r.db.Exec("UPDATE node_leases SET owner = 'thief', expires_at = NOW(3) + INTERVAL 1 HOUR"); err != nil {
		t.Fatal(err)
	}
	// ("lost" may win once more before Keep's next renewal sees the loss.)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		err := grab("lost")
		return errors.Is(err, flashgrab.ErrUnavailable), fmt.Sprintf("grab with the lease lost: %v, want ErrUnavailable", err)
	})
	before, err := eng.Sale(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	for u := range 5 {
		if err := grab(fmt.Sprintf("refused%d", u)); !errors.Is(err, flashgrab.ErrUnavailable) {
			t.Fatalf("grab with the lease lost: %v, want ErrUnavailable", err)
		}
	}
	if s, err := eng.Sale(ctx, "s1"); err != nil || s.Sold != before.Sold || s.Stock != before.Stock {
		t.Fatalf("refused grabs changed the sale: %+v %v, was %+v", s, err, before)
	}
	// A number comes free: Keep claims it and the engine resumes.
	if _, err := r.db.Exec("UPDATE node_leases SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE node = 7"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		err := grab(fmt.Sprintf("back%d", time.Now().UnixNano()))
		return err == nil, fmt.Sprintf("grab with a node free again: %v, want a win", err)
	})
	if l.Node() != 7 {
		t.Fatalf("leased node %d again, want 7 (the only free one)", l.Node())
	}
}

// TestLeasedEnginesGiveDistinctOrderIDs is issue 13 item 3's incident the
// right way round: two engines with distinct leased nodes, real clocks,
// racing 10,000 grabs of one sale give 10,000 distinct order ids.
func TestLeasedEnginesGiveDistinctOrderIDs(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	var engines []*engine.Engine
	for i := range 2 {
		l, err := settle.ClaimNode(ctx, r.db, fmt.Sprintf("eng%d", i), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ids := engine.NewLeasedIDs()
		ids.Hold(l.Node(), l.Until())
		eng, err := engine.New(ctx, engine.Config{Redis: r.rdb, Keys: r.keys, IDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		engines = append(engines, eng)
	}
	const grabs = 10000
	now := time.Now()
	if _, err := engines[0].CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m", PriceCents: 1, Stock: grabs, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, grabs)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := w; u < grabs; u += 32 {
				res, err := engines[u%2].Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", u), Qty: 1})
				if err != nil {
					t.Errorf("grab u%d: %v", u, err)
					return
				}
				ids[u] = res.OrderID
			}
		}()
	}
	wg.Wait()
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	if len(distinct) != grabs {
		t.Fatalf("%d distinct order ids for %d grabs", len(distinct), grabs)
	}
	if s, err := engines[0].Sale(ctx, "s1"); err != nil || s.Sold != grabs {
		t.Fatalf("sale: %+v %v, want %d sold", s, err, grabs)
	}
}
