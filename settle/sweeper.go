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
// happen once. Make one with NewSweeper.
type Sweeper struct {
	engine   *engine.Engine
	books    *Books
	payments *Payments // nil: no order expiry or refunds

	// The options below are set by NewSweeper; change them before Run.

	Interval time.Duration // default 1s; must be positive
	// Grace is how long a funded packet may stay unpublished before the
	// sweeper publishes it (default 30s): the create path normally does it
	// within milliseconds.
	Grace time.Duration
	// StaleAge is how old a created or closed payment must be before the
	// sweeper asks its provider whether it was paid after all (default
	// DefaultStaleAge); StaleEvery is how often it asks (default 1m).
	StaleAge, StaleEvery time.Duration
	Logger               *slog.Logger // default slog.Default()

	staleMu   sync.Mutex
	staleNext time.Time // when to ask next
	staleUpTo time.Time // payments created up to here have been asked about
}

// NewSweeper returns a sweeper that drives eng's Redis steps and reads
// books, with every option at its default. With payments nil it neither
// expires orders nor follows payments (a deployment without payment
// channels).
func NewSweeper(eng *engine.Engine, books *Books, payments *Payments) *Sweeper {
	return &Sweeper{
		engine:     eng,
		books:      books,
		payments:   payments,
		Interval:   time.Second,
		Grace:      30 * time.Second,
		StaleAge:   DefaultStaleAge,
		StaleEvery: time.Minute,
		Logger:     slog.Default(),
	}
}

// staleBackfill is how far back the first stale query of a process reaches,
// so that payments that came of age while no sweeper ran are still asked
// about: Alipay's notify window (~25 h) and then some.
const staleBackfill = 26 * time.Hour

// Run sweeps every Interval until ctx is cancelled.
func (w *Sweeper) Run(ctx context.Context) {
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
	for p := 0; p < w.engine.Keys().Partitions; p++ {
		_, err := w.engine.ExpirePackets(ctx, p)
		keep(err)
	}
	keep(w.publishFunded(ctx))
	keep(w.refundLost(ctx))
	if w.payments != nil {
		_, err := w.payments.ExpireOrders(ctx, w.release)
		keep(err)
		keep(w.payments.RetryRefunds(ctx))
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
	if _, err := w.payments.QueryStale(ctx, after, before); err != nil {
		w.staleNext = now.Add(every) // ask again later, over the same window
		return err
	}
	w.staleUpTo, w.staleNext = before, now.Add(every)
	return nil
}

func (w *Sweeper) publishFunded(ctx context.Context) error {
	pks, err := w.books.FundedPackets(ctx, time.Now().Add(-w.Grace))
	if err != nil {
		return err
	}
	for _, pk := range pks {
		if err := w.engine.PublishPacket(ctx, pk); err != nil {
			return err
		}
		if err := w.books.MarkPacketLive(ctx, pk.ID); err != nil {
			return err
		}
	}
	return nil
}

// refundLost refunds from MySQL the live packets expired for Grace whose
// Redis keys are gone (evicted, or lost with their partition): no script
// can close them. A fenced partition is left to its rebuild, and a packet
// with an event still in its partition's stream waits for the settler, so
// that the refund counts every settled share.
func (w *Sweeper) refundLost(ctx context.Context) error {
	ids, err := w.books.expiredLivePackets(ctx, time.Now().Add(-w.Grace))
	if err != nil || len(ids) == 0 {
		return err
	}
	inRedis, err := w.engine.PacketsInRedis(ctx, ids)
	if err != nil {
		return err
	}
	streams := map[int]map[string]bool{} // partition → packets with events in its stream
	for _, id := range ids {
		if inRedis[id] {
			continue
		}
		p := w.engine.Keys().Partition(id)
		busy, ok := streams[p]
		if !ok {
			if marked, err := w.engine.HasEpoch(ctx, p); err != nil || !marked {
				streams[p] = nil
				if err != nil {
					return err
				}
				continue
			}
			events, err := w.engine.PartitionEvents(ctx, p)
			if err != nil {
				return err
			}
			busy = map[string]bool{}
			for _, ev := range events {
				busy[ev.Grab.PacketID] = busy[ev.Grab.PacketID] || ev.Kind == flashgrab.EventGrab
				busy[ev.Refund.PacketID] = busy[ev.Refund.PacketID] || ev.Kind == flashgrab.EventRefund
			}
			streams[p] = busy
		}
		if busy == nil || busy[id] {
			continue
		}
		cents, done, err := w.books.RefundLostPacket(ctx, id)
		if err != nil {
			return err
		}
		if done {
			w.Logger.Warn("sweeper: expired packet missing from Redis refunded from MySQL", "packet", id, "refunded_cents", cents)
		}
	}
	return nil
}

func (w *Sweeper) release(ctx context.Context, o flashgrab.Order) error {
	_, err := w.engine.ReleaseOrder(ctx, o)
	return err
}
