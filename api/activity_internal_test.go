package api

import (
	"fmt"
	"testing"
	"time"
)

// TestActivityBounded: at most maxTrackedSales sales are kept, a new one
// replacing the one idle longest; only answers that prove the sale exists
// are counted; recent lists the sales active within recentActivity, most
// recent first, at most maxShownSales.
func TestActivityBounded(t *testing.T) {
	a := newActivity()
	now := time.Unix(1_700_000_000, 0)
	a.now = func() time.Time { return now }
	for i := range maxTrackedSales {
		now = now.Add(time.Second)
		a.grab(fmt.Sprintf("s%d", i), "won")
	}
	a.grab("ghost", "not_found")
	a.grab("ghost", "rate_limited")
	if len(a.sales) != maxTrackedSales || a.sales["ghost"] != nil {
		t.Fatalf("%d sales tracked (ghost %v), want %d without ghost", len(a.sales), a.sales["ghost"] != nil, maxTrackedSales)
	}
	now = now.Add(time.Second)
	a.grab("new", "sold_out")
	if len(a.sales) != maxTrackedSales || a.sales["s0"] != nil || a.sales["s1"] == nil || a.sales["new"] == nil {
		t.Fatalf("after a new sale: %d tracked, s0 %v, s1 %v, new %v; want s0 (idle longest) evicted",
			len(a.sales), a.sales["s0"] != nil, a.sales["s1"] != nil, a.sales["new"] != nil)
	}
	a.recent() // every sale counted so far is active as of this snapshot
	now = now.Add(time.Second)
	a.grab("s5", "won")
	a.grab("s5", "repeat")
	now = now.Add(time.Second)
	got := a.recent() // s5 moved since: first; the rest by id
	if len(got) != maxShownSales || got[0].id != "s5" || got[0].total != 3 || got[0].outcomes[1] != 1 || got[1].id != "new" {
		t.Fatalf("recent: %d sales, first %+v, second %+v; want %d, s5 (3 grabs, 1 repeat) then new (first by id)", len(got), got[0], got[1], maxShownSales)
	}
	now = now.Add(recentActivity + time.Second)
	a.grab("s7", "ended")
	if got := a.recent(); len(got) != 1 || got[0].id != "s7" {
		t.Fatalf("recent after %v idle: %+v, want only s7", recentActivity, got)
	}
}
