package settle

import (
	"context"
	"log/slog"
	"time"

	"github.com/flashgrab/flashgrab/engine"
)

// Sweeper runs the periodic work that time triggers: it closes expired red
// packets (their refunds then settle like any event), finishes packet creates
// that were interrupted between the debit and Redis, expires unpaid orders
// (returning their stock) and retries refunds of late payments. Every
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
	Grace  time.Duration
	Logger *slog.Logger
}

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
	}
	return first
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

func (w *Sweeper) release(ctx context.Context, o engine.Order) error {
	_, err := w.Engine.ReleaseOrder(ctx, o)
	return err
}
