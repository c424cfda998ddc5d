package settle

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// Sweeper runs the periodic work that time triggers: it closes expired red
// packets (their refunds then settle like any event), finishes packet creates
// that were interrupted between the debit and Redis, expires unpaid orders
// (returning their stock), retries refunds of late payments and asks the
// providers about payments whose notify never came. Every
// instance may run one: the scripts and the status checks make each step
// happen once.
type Sweeper struct {
	Engine   *engine.Engine
	Books    *Books
	Payments *Payments     // nil: no order expiry or refunds
	Interval time.Duration // default 1s
	// Grace is how long a funded packet may stay unpublished before the
	// sweeper publishes it (default 30s): the create path normally does it
	// within milliseconds.
	Grace time.Duration
	// StaleAge is how old a created or closed payment must be before the
	// sweeper asks its provider whether it was paid after all (default
	// DefaultStaleAge); StaleEvery is how often it asks (default 1m).
	StaleAge, StaleEvery time.Duration
	Logger               *slog.Logger

	staleMu   sync.Mutex
	staleNext time.Time // when to ask next
	staleUpTo time.Time // payments created up to here have been asked about
}

// staleBackfill is how far back the first stale query of a process reaches,
// so that payments that came of age while no sweeper ran are still asked
// about: Alipay's notify window (~25 h) and then some.
const staleBackfill = 26 * time.Hour

// Run sweeps every Interval until ctx is cancelled.
func (w *Sweeper) Run(ctx context.Context) {
	if w.Interval <= 0 {
		w.Interval = time.Second
	}
	if w.Grace <= 0 {
		w.Grace = 30 * time.Second
	}
	if w.Logger == nil {
		w.Logger = slog.Default()
	}
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.Logger.Warn("sweeper: will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep does one round of the sweeper's work.
func (w *Sweeper) Sweep(ctx context.Context) error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for p := 0; p < w.Engine.Keys().Partitions; p++ {
		_, err := w.Engine.ExpirePackets(ctx, p)
		keep(err)
	}
	keep(w.publishFunded(ctx))
	if w.Payments != nil {
		_, err := w.Payments.ExpireOrders(ctx, w.release)
		keep(err)
		keep(w.Payments.RetryRefunds(ctx))
		keep(w.queryStale(ctx))
	}
	return first
}

// queryStale asks, every StaleEvery, about the payments that have come of
// age since the last time: the window (previous upper bound − StaleEvery,
// now − StaleAge] overlaps the last one a little, so a payment committed
// with a slightly older created_at is not missed, and moves on only after a
// round without errors.
func (w *Sweeper) queryStale(ctx context.Context) error {
	w.staleMu.Lock()
	defer w.staleMu.Unlock()
	age, every := w.StaleAge, w.StaleEvery
	if age <= 0 {
		age = DefaultStaleAge
	}
	if every <= 0 {
		every = time.Minute
	}
	now := time.Now()
	if now.Before(w.staleNext) {
		return nil
	}
	before := now.Add(-age)
	// A window that failed is asked again, but reaches back no further than
	// staleBackfill: one trade the provider keeps failing on must not grow
	// every round for ever.
	after := w.staleUpTo.Add(-every)
	if floor := before.Add(-staleBackfill); after.Before(floor) {
		after = floor
	}
	if _, err := w.Payments.QueryStale(ctx, after, before); err != nil {
		w.staleNext = now.Add(every) // ask again later, over the same window
		return err
	}
	w.staleUpTo, w.staleNext = before, now.Add(every)
	return nil
}

func (w *Sweeper) publishFunded(ctx context.Context) error {
	grace := w.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	pks, err := w.Books.FundedPackets(ctx, time.Now().Add(-grace))
	if err != nil {
		return err
	}
	for _, pk := range pks {
		if err := w.Engine.PublishPacket(ctx, pk); err != nil {
			return err
		}
		if err := w.Books.MarkPacketLive(ctx, pk.ID); err != nil {
			return err
		}
	}
	return nil
}

func (w *Sweeper) release(ctx context.Context, o flashgrab.Order) error {
	_, err := w.Engine.ReleaseOrder(ctx, o)
	return err
}
