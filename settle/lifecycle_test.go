package settle_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

// stuckRefunds is a provider whose refunds hang until their context ends,
// as a provider that does not answer does.
type stuckRefunds struct {
	fakeProvider
	started chan string
	mu      sync.Mutex
	ended   []error // the context's error each refund ended with
}

func (s *stuckRefunds) Refund(ctx context.Context, no string, _, _ int64, _ string) (settle.RefundState, error) {
	s.started <- no
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second): // bounds the test if nothing cancels it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = append(s.ended, ctx.Err())
	return "", errors.New("provider did not answer")
}

// TestCloseWaitsForRefunds: a refund Paid starts for a payment that came too
// late runs on a context Close cancels, and Close returns only after it
// ended; the payment stays refunding for RetryRefunds. A notify after Close
// fails with ErrUnavailable and changes nothing.
func TestCloseWaitsForRefunds(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	sp := &stuckRefunds{fakeProvider: fakeProvider{refunds: map[string]int64{}, closed: map[string]bool{}},
		started: make(chan string, 1)}
	p := settle.NewPayments(r.books, map[string]settle.Provider{"alipay": sp})
	var pms []settle.Payment
	for _, id := range []string{"1-0", "2-0"} {
		o := flashgrab.Order{ID: id, SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1, AmountCents: 300, CreatedAt: time.Now().UTC()}
		pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
		if err != nil {
			t.Fatal(err)
		}
		pms = append(pms, pm)
	}
	if _, err := r.db.Exec("UPDATE orders SET status = ? WHERE id = ?", settle.OrderCancelled, "1-0"); err != nil {
		t.Fatal(err)
	}
	out, err := p.Paid(ctx, settle.Notice{Channel: "alipay", OutTradeNo: pms[0].OutTradeNo, AmountCents: 300})
	if err != nil || out != settle.Refunding {
		t.Fatalf("late notify: %v, %v; want Refunding", out, err)
	}
	if no := <-sp.started; no != pms[0].OutTradeNo {
		t.Fatalf("refund of %s started, want %s", no, pms[0].OutTradeNo)
	}
	p.Close()
	sp.mu.Lock()
	ended := append([]error(nil), sp.ended...)
	sp.mu.Unlock()
	if len(ended) != 1 || !errors.Is(ended[0], context.Canceled) {
		t.Fatalf("refunds ended when Close returned: %v; want one, cancelled by Close", ended)
	}
	if pay, err := r.books.Payment(ctx, pms[0].OutTradeNo); err != nil || pay.Status != settle.PaymentRefunding {
		t.Fatalf("late payment after Close: %+v, %v; want refunding", pay, err)
	}
	p.Close()
	if _, err := p.Paid(ctx, settle.Notice{Channel: "alipay", OutTradeNo: pms[1].OutTradeNo, AmountCents: 300}); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("notify after Close: %v; want ErrUnavailable", err)
	}
	if pay, err := r.books.Payment(ctx, pms[1].OutTradeNo); err != nil || pay.Status != settle.PaymentCreated {
		t.Fatalf("payment notified after Close: %+v, %v; want created", pay, err)
	}
}

// TestSettlerNeedsBooks: the settler writes through Books only (it no longer
// takes a DB beside it); without one it refuses instead of writing elsewhere.
func TestSettlerNeedsBooks(t *testing.T) {
	s := settle.NewSettler(nil, nil, engine.Keyspace{Prefix: "t", Partitions: 1}, nil)
	if err := s.Apply(context.Background(), nil); err == nil || err.Error() != "settler: nil Books" {
		t.Fatalf("Apply without Books: %v", err)
	}
}

// TestConstructorsSetDefaults: NewSettler, NewSweeper and NewPayments return
// values whose options already hold the documented defaults (they used to
// be filled in lazily, by the first Run or Apply), and a settler made without
// its Redis client refuses to run instead of panicking in a partition loop.
func TestConstructorsSetDefaults(t *testing.T) {
	host, _ := os.Hostname()
	s := settle.NewSettler(nil, nil, engine.Keyspace{Prefix: "t", Partitions: 1}, nil)
	if s.Group != "settlers" || s.Consumer != host+"-"+strconv.Itoa(os.Getpid()) || s.BatchSize != 1000 ||
		s.Block != 200*time.Millisecond || s.ClaimIdle != 30*time.Second || s.Linger != 10*time.Millisecond ||
		s.Tries != 3 || s.Logger != slog.Default() || s.Metrics != nil {
		t.Fatalf("NewSettler options: %+v", s)
	}
	if err := s.Run(context.Background()); err == nil || err.Error() != "settler: nil Redis client" {
		t.Fatalf("Run without Redis: %v", err)
	}
	w := settle.NewSweeper(nil, nil, nil)
	if w.Interval != time.Second || w.Grace != 30*time.Second || w.StaleAge != settle.DefaultStaleAge ||
		w.StaleEvery != time.Minute || w.Logger != slog.Default() {
		t.Fatalf("NewSweeper options: Interval %v, Grace %v, StaleAge %v, StaleEvery %v, Logger %p",
			w.Interval, w.Grace, w.StaleAge, w.StaleEvery, w.Logger)
	}
	p := settle.NewPayments(nil, nil)
	if p.Logger != slog.Default() || p.Metrics != nil {
		t.Fatalf("NewPayments options: Logger %p, Metrics %p", p.Logger, p.Metrics)
	}
	p.Close()
}
