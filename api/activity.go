package api

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// saleOutcomes are the grab answers counted per sale for the operator's
// page: those that say the sale exists. Refusals that do not (not_found,
// bad_request) or that come before the sale is looked at (rate_limited,
// unauthorized) are counted only in flashgrab_grabs_total, so that made-up
// sale ids cannot fill the table.
var saleOutcomes = [...]string{"won", "repeat", "sold_out", "limit_reached", "not_started", "ended"}

func saleOutcomeIndex(code string) int {
	for i, o := range saleOutcomes {
		if o == code {
			return i
		}
	}
	return -1
}

const (
	// maxTrackedSales bounds the sales this instance keeps counts for; a
	// new one beyond it replaces the one idle longest.
	maxTrackedSales = 256
	// maxShownSales bounds the sales one stats answer reads from Redis.
	maxShownSales = 16
	// recentActivity is how long a sale stays on the page after its last grab.
	recentActivity = 10 * time.Minute
)

// saleActivity is this instance's count of one sale's grabs by outcome.
type saleActivity struct {
	outcomes [len(saleOutcomes)]atomic.Int64

	// Guarded by activity.mu's write lock: the last total a snapshot saw,
	// and when the total last changed (or the sale was first seen).
	lastTotal  int64
	lastActive time.Time
}

// activity tracks the sales this instance has seen grabbed or created, so
// the operator's page can list the live ones without scanning Redis. The
// grab path only takes the read lock and adds to an atomic counter; the
// write lock is for a sale's first grab and for snapshots.
type activity struct {
	mu    sync.RWMutex
	sales map[string]*saleActivity
	now   func() time.Time
}

func newActivity() *activity {
	return &activity{sales: map[string]*saleActivity{}, now: time.Now}
}

// grab counts one grab of sale answered with code.
func (a *activity) grab(sale, code string) {
	i := saleOutcomeIndex(code)
	if i < 0 {
		return
	}
	a.mu.RLock()
	sa := a.sales[sale]
	a.mu.RUnlock()
	if sa == nil {
		sa = a.track(sale)
	}
	sa.outcomes[i].Add(1)
}

// track returns sale's counts, adding them (as active now) when missing.
func (a *activity) track(sale string) *saleActivity {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sa := a.sales[sale]; sa != nil {
		return sa
	}
	if len(a.sales) >= maxTrackedSales {
		var idle string
		var since time.Time
		for id, sa := range a.sales {
			if idle == "" || sa.lastActive.Before(since) {
				idle, since = id, sa.lastActive
			}
		}
		delete(a.sales, idle)
	}
	sa := &saleActivity{lastActive: a.now()}
	a.sales[sale] = sa
	return sa
}

// saleCounts is a snapshot of one sale's counts.
type saleCounts struct {
	id         string
	outcomes   [len(saleOutcomes)]int64
	total      int64
	lastActive time.Time
}

// recent returns the sales active within recentActivity, the most recently
// active first (then by id), at most maxShownSales of them. A sale whose
// counts changed since the previous snapshot is stamped active now: the
// grab path keeps no clock, so activity is known to the snapshot's
// granularity (a second, with a page polling).
func (a *activity) recent() []saleCounts {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []saleCounts
	for id, sa := range a.sales {
		c := saleCounts{id: id}
		for i := range sa.outcomes {
			c.outcomes[i] = sa.outcomes[i].Load()
			c.total += c.outcomes[i]
		}
		if c.total != sa.lastTotal {
			sa.lastTotal, sa.lastActive = c.total, now
		}
		c.lastActive = sa.lastActive
		if now.Sub(c.lastActive) <= recentActivity {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(x, y saleCounts) int {
		return cmp.Or(y.lastActive.Compare(x.lastActive), cmp.Compare(x.id, y.id))
	})
	return out[:min(len(out), maxShownSales)]
}

// packetCounts are this instance's red packets: created (funded) and
// shares won, in number and fen.
type packetCounts struct {
	created, createdCents atomic.Int64
	shares, sharesCents   atomic.Int64
}
