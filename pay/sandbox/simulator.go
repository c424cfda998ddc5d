package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxRequestBody bounds what either simulator reads of a request.
const maxRequestBody = 1 << 20

// errNoTrade marks a payment of a trade the simulator never created, so the
// pay endpoint can answer 404 rather than 409.
var errNoTrade = errors.New("no such trade")

// provider is what the simulator core needs to know of one provider's ways;
// everything else about it (signing, request parsing, answers) is its wire
// format, in its own file.
type provider struct {
	name string // "alipay" or "wechat", as errors name it
	// open, paid and closed are the trade states in the provider's words
	// (WAIT_BUYER_PAY, TRADE_SUCCESS, TRADE_CLOSED; NOTPAY, SUCCESS, CLOSED).
	open, paid, closed string
	// retries is the provider's real notify retry schedule, the default.
	retries []time.Duration
	// notifyTimeout is how long the provider waits for a notify's answer.
	notifyTimeout time.Duration
	// acked says whether the merchant's answer to a notify stops its retries.
	acked func(status int, body string) bool
}

// trade is what every simulated trade has, whichever provider's.
type trade struct {
	outTradeNo      string
	amount          int64
	status          string // in the provider's words, see provider
	notifyURL       string
	created, paidAt time.Time
	expire          time.Time // zero: never
	refunded        int64
	delivery        *notifyRun // the payment notify, nil until paid
}

func (t *trade) base() *trade { return t }

// tradeOf is a provider's trade type: a pointer to a struct embedding trade.
type tradeOf interface{ base() *trade }

// simulator is the core both providers' simulators embed: the trades, the
// payment skeleton, notify delivery and the simulator's lifecycle.
type simulator[T tradeOf] struct {
	p       provider
	wallets *Wallets
	retry   Schedule
	client  *http.Client
	now     func() time.Time

	ctx    context.Context // cancelled by Close, stops notify delivery
	cancel context.CancelFunc
	wg     sync.WaitGroup // notify (and WeChat refund) goroutines
	once   sync.Once

	mu     sync.Mutex
	closed bool
	seq    uint64       // numbers the provider's own ids
	trades map[string]T // by out_trade_no
}

// init readies the core; zero retry delays, a nil client or a nil clock take
// the provider's defaults. It fails on missing wallets, a wiring bug the
// constructors report rather than panic on.
func (s *simulator[T]) init(p provider, w *Wallets, retry Schedule, client *http.Client, now func() time.Time) error {
	if w == nil {
		return fmt.Errorf("sandbox %s: wallets are required", p.name)
	}
	if retry.Delays == nil {
		retry.Delays = p.retries
	}
	if client == nil {
		client = &http.Client{Timeout: p.notifyTimeout}
	}
	if now == nil {
		now = time.Now
	}
	s.p, s.wallets, s.retry, s.client, s.now = p, w, retry, client, now
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.trades = map[string]T{}
	return nil
}

// Close stops notify delivery and waits for its goroutines; the simulator
// refuses payments afterwards.
func (s *simulator[T]) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
	})
}

// nextSeq returns the next number for the provider's ids; s.mu must be held.
func (s *simulator[T]) nextSeq() uint64 {
	s.seq++
	return s.seq
}

// expireLocked closes an unpaid trade whose expiry has passed; s.mu must be held.
func (s *simulator[T]) expireLocked(tr T) {
	b := tr.base()
	if b.status == s.p.open && !b.expire.IsZero() && s.now().After(b.expire) {
		b.status = s.p.closed
	}
}

// pay is the skeleton of both providers' Pay. found runs first on the trade
// (Alipay's buyer scans it before paying, whatever happens next); paid then
// completes a paid trade in the provider's way and returns how to post its
// notify, nil for none. Paying an unknown, closed, expired or already paid
// trade fails and moves nothing.
func (s *simulator[T]) pay(outTradeNo string, opts []PayOption, found func(T), paid func(T, PayOptions) (func() Delivery, error)) error {
	o := applyPayOptions(opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("sandbox %s: closed", s.p.name)
	}
	tr, ok := s.trades[outTradeNo]
	if !ok {
		return fmt.Errorf("sandbox %s: pay %q: %w", s.p.name, outTradeNo, errNoTrade)
	}
	if found != nil {
		found(tr)
	}
	s.expireLocked(tr)
	b := tr.base()
	if b.status != s.p.open {
		return fmt.Errorf("sandbox %s: pay %q: trade is %s", s.p.name, outTradeNo, b.status)
	}
	if err := s.wallets.Transfer(BuyerAccount, SellerAccount, b.amount); err != nil {
		return fmt.Errorf("sandbox %s: pay %q: %w", s.p.name, outTradeNo, err)
	}
	b.status, b.paidAt = s.p.paid, s.now()
	post, err := paid(tr, o)
	if err != nil || post == nil {
		return err
	}
	b.delivery = s.startNotify(o.Duplicates, post)
	return nil
}

// Deliveries returns every notify attempt made for a trade so far, in the
// order they completed.
func (s *simulator[T]) Deliveries(outTradeNo string) []Delivery {
	return s.run(outTradeNo).deliveries()
}

// Wait blocks until notify delivery for a trade has finished: nil when the
// merchant acknowledged it, an error when every attempt failed, the simulator
// closed, ctx ended, or no notify was ever sent for the trade.
func (s *simulator[T]) Wait(ctx context.Context, outTradeNo string) error {
	return s.run(outTradeNo).wait(ctx, s.p.name, outTradeNo)
}

// run returns the trade's notify delivery, nil before it is paid.
func (s *simulator[T]) run(outTradeNo string) *notifyRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tr, ok := s.trades[outTradeNo]; ok {
		return tr.base().delivery
	}
	return nil
}

// writePayError answers the pay endpoint's failed payment: 404 for a trade
// never created, 409 for one that cannot be paid (any more).
func writePayError(w http.ResponseWriter, err error) {
	status := http.StatusConflict
	if errors.Is(err, errNoTrade) {
		status = http.StatusNotFound
	}
	http.Error(w, err.Error(), status)
}

// writePaid answers the pay endpoint's payment to a script such as curl.
func writePaid(w http.ResponseWriter, outTradeNo string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "paid %s\n", outTradeNo)
}

// externalBase is the scheme, host and mount prefix the request came in
// through, so the links a simulator hands out (QR codes, cashier URLs) work
// wherever it is mounted. The prefix is what the raw request path has before
// the path the handler sees, so an escaped prefix stays escaped.
func externalBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path, _, _ := strings.Cut(requestTarget(r), "?")
	return scheme + "://" + r.Host + strings.TrimSuffix(path, r.URL.EscapedPath())
}

// requestTarget is the path and query the client put on the wire. Under
// http.StripPrefix r.URL is shortened but r.RequestURI is not.
func requestTarget(r *http.Request) string {
	if r.RequestURI == "" { // a handler called directly, not through a server
		return r.URL.RequestURI()
	}
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	if u, err := url.Parse(r.RequestURI); err == nil { // absolute-form, through a proxy
		return u.RequestURI()
	}
	return r.RequestURI
}
