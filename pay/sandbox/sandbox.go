// Package sandbox simulates Alipay and WeChat Pay locally, so that the whole
// payment flow (create a trade, pay it, receive signed notifies, query, close,
// refund) runs offline. It follows the providers' wire formats closely enough
// that the real clients in pay/alipay and pay/wechat talk to it unchanged.
package sandbox

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// The seed's sandbox accounts: a buyer holding 99,999 yuan and a seller holding nothing.
const (
	BuyerAccount  = "15911111111"
	SellerAccount = "15922222222"

	buyerOpeningCents = 99_999_00
)

// Wallets are the simulated provider-side balances that a payment moves money
// between. The zero value is not usable; call NewWallets.
type Wallets struct {
	mu       sync.Mutex
	balances map[string]int64
}

// NewWallets returns the seed's opening balances.
func NewWallets() *Wallets {
	return &Wallets{balances: map[string]int64{BuyerAccount: buyerOpeningCents, SellerAccount: 0}}
}

// Transfer moves cents from one wallet to another, failing when from is short.
func (w *Wallets) Transfer(from, to string, cents int64) error {
	if cents <= 0 {
		return fmt.Errorf("sandbox transfer: amount %d fen must be positive", cents)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.balances[from] < cents {
		return fmt.Errorf("sandbox transfer: wallet %s holds %d fen, needs %d", from, w.balances[from], cents)
	}
	w.balances[from] -= cents
	w.balances[to] += cents
	return nil
}

// Balance returns the wallet's balance in fen.
func (w *Wallets) Balance(account string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.balances[account]
}

// Retry schedules of the real providers for notifies that were not acknowledged.
var (
	AlipayRetries = []time.Duration{4 * time.Minute, 10 * time.Minute, 10 * time.Minute, time.Hour,
		2 * time.Hour, 6 * time.Hour, 15 * time.Hour}
	WeChatRetries = []time.Duration{15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute,
		10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute,
		time.Hour, 3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour}
)

// Schedule is a provider retry schedule compressed by Scale (0.001 turns
// Alipay's 4 minutes into 240 ms); Scale 0 means real time.
type Schedule struct {
	Delays []time.Duration
	Scale  float64
}

// Delay returns how long to wait before retry number attempt (0-based), and
// false once the schedule is exhausted.
func (s Schedule) Delay(attempt int) (time.Duration, bool) {
	if attempt < 0 || attempt >= len(s.Delays) {
		return 0, false
	}
	d := s.Delays[attempt]
	if s.Scale > 0 {
		d = time.Duration(float64(d) * s.Scale)
	}
	return d, true
}

// Delivery records one attempt to deliver a notify to the merchant, so tests
// can see what the merchant answered and that retries stopped.
type Delivery struct {
	Copy    int       // which concurrent duplicate sent it (0 when there is one copy)
	Attempt int       // 1 for the first try, 2 for the first retry, ...
	At      time.Time // when the attempt was sent
	Status  int       // HTTP status answered; 0 when the request failed
	Body    string    // the answered body, truncated to a few hundred bytes
	Err     string    // transport error, if the request failed
	Acked   bool      // whether the provider counts this answer as an acknowledgement
}

// notifyRun is the delivery of one payment's notify: every copy of it, each
// retried on the provider's schedule until acknowledged. Both simulators use
// it; only the way one attempt is made differs between them.
type notifyRun struct {
	done chan struct{} // closed when every copy stopped

	mu    sync.Mutex
	acked bool
	log   []Delivery
}

// startNotifyRun delivers copies concurrent copies of a notify, each making
// attempts with post until one is acknowledged, the schedule runs out or ctx
// ends. wg (the simulator's) counts the goroutines, so Close can wait.
func startNotifyRun(ctx context.Context, wg *sync.WaitGroup, sched Schedule, copies int, post func() Delivery) *notifyRun {
	d := &notifyRun{done: make(chan struct{})}
	var all sync.WaitGroup
	for c := 0; c < copies; c++ {
		all.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer all.Done()
			d.deliver(ctx, sched, c, post)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		all.Wait()
		close(d.done)
	}()
	return d
}

func (d *notifyRun) deliver(ctx context.Context, sched Schedule, copyNo int, post func() Delivery) {
	for attempt := 0; ; attempt++ {
		rec := post()
		rec.Copy, rec.Attempt = copyNo, attempt+1
		d.mu.Lock()
		d.log = append(d.log, rec)
		d.acked = d.acked || rec.Acked
		d.mu.Unlock()
		if rec.Acked {
			return
		}
		delay, ok := sched.Delay(attempt)
		if !ok {
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// deliveries returns the attempts made so far, in the order they completed.
func (d *notifyRun) deliveries() []Delivery {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Delivery(nil), d.log...)
}

// wait blocks until every copy stopped: nil when one was acknowledged.
func (d *notifyRun) wait(ctx context.Context, provider, outTradeNo string) error {
	if d == nil {
		return fmt.Errorf("sandbox %s: no notify delivery for %q", provider, outTradeNo)
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		return fmt.Errorf("sandbox %s: waiting for notify of %q: %w", provider, outTradeNo, ctx.Err())
	}
	d.mu.Lock()
	acked, n := d.acked, len(d.log)
	d.mu.Unlock()
	if !acked {
		return fmt.Errorf("sandbox %s: notify of %q not acknowledged after %d attempts", provider, outTradeNo, n)
	}
	return nil
}

// PayOptions are the test knobs of a simulated payment; providers ignore the
// ones that make no sense for them.
type PayOptions struct {
	// Duplicates is how many copies of the notify are delivered concurrently,
	// each with its own retry chain (values below 1 mean 1).
	Duplicates int
	// ForgeSignature alters the notify after signing, so its signature is wrong.
	ForgeSignature bool
	// AmountCents, when positive, is the amount the notify claims, correctly
	// signed, instead of the trade's: it exercises the merchant's amount check.
	AmountCents int64
	// SignTestProbe (WeChat) sends a WECHATPAY/SIGNTEST/ probe in place of
	// the notify's signature: the merchant must refuse it as a payment.
	SignTestProbe bool
	// NoNotify (Alipay) pays without ever sending the notify, as when every
	// delivery is lost: the merchant learns of the payment only by asking.
	NoNotify bool
	// StaleTimestamp (WeChat) signs the notify with a timestamp 10 minutes
	// old, beyond the 5-minute window a merchant accepts.
	StaleTimestamp bool
}

// PayOption sets one of the PayOptions.
type PayOption func(*PayOptions)

// WithDuplicates delivers n copies of the notify concurrently.
func WithDuplicates(n int) PayOption { return func(o *PayOptions) { o.Duplicates = n } }

// WithoutNotify pays without sending the notify (Alipay).
func WithoutNotify() PayOption { return func(o *PayOptions) { o.NoNotify = true } }

// WithForgedSignature tampers with the notify after signing it.
func WithForgedSignature() PayOption { return func(o *PayOptions) { o.ForgeSignature = true } }

// WithAmountCents makes the notify claim cents, signed correctly.
func WithAmountCents(cents int64) PayOption { return func(o *PayOptions) { o.AmountCents = cents } }

// WithSignTestProbe sends a SIGNTEST probe instead of a validly signed notify (WeChat).
func WithSignTestProbe() PayOption { return func(o *PayOptions) { o.SignTestProbe = true } }

// WithStaleTimestamp signs the notify 10 minutes in the past (WeChat).
func WithStaleTimestamp() PayOption { return func(o *PayOptions) { o.StaleTimestamp = true } }

// applyPayOptions folds opts into PayOptions with defaults filled in.
func applyPayOptions(opts []PayOption) PayOptions {
	var o PayOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.Duplicates < 1 {
		o.Duplicates = 1
	}
	return o
}
