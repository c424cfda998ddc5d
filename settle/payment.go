package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/flashgrab/flashgrab"
)

// Payment kinds and statuses.
const (
	KindOrder = "order" // pays a sale order; credits the merchant
	KindTopup = "topup" // tops up the payer's own account

	PaymentCreated   = "created"
	PaymentPaid      = "paid"
	PaymentClosed    = "closed"    // the order expired and the trade was closed
	PaymentRefunding = "refunding" // paid when it could no longer be honoured; refund asked, not yet confirmed
	PaymentRefunded  = "refunded"  // the provider confirmed the money went back
	// PaymentRefundFailed: the provider ended the refund ABNORMAL or CLOSED;
	// the buyer was not paid back and an operator must act. reconcile fails on it.
	PaymentRefundFailed = "refund_failed"
)

// Payment errors a notify handler answers with failure.
var (
	ErrUnknownTrade   = errors.New("unknown out_trade_no")
	ErrAmountMismatch = errors.New("paid amount differs from the trade's")
	ErrNoChannel      = errors.New("payment channel not configured")
	// ErrTradePaid is what Provider.Close wraps when the provider refuses to
	// close because the buyer has paid (WeChat ORDERPAID, Alipay TRADE_SUCCESS).
	ErrTradePaid = errors.New("trade is paid")
	// ErrRefundNotFound is what Provider.QueryRefund wraps when the provider
	// does not know the refund.
	ErrRefundNotFound = errors.New("refund not found")
)

// TradeState is what a provider reports of a trade when asked.
type TradeState struct {
	Paid        bool
	TradeNo     string // the provider's own trade id; empty until paid
	AmountCents int64
	PaidAt      time.Time // zero unless paid
}

// Provider is what settlement needs of a payment channel (pay.Alipay and
// pay.WeChat implement it).
type Provider interface {
	// Create opens a provider trade paid by t.Method and returns what the
	// payer's client needs of it, as one string recorded with the payment:
	// for MethodQR the URL the payer opens (Alipay's pay_url) or encodes as
	// a QR code (WeChat's code_url); for the SDK methods what the channel
	// turns into the SDK's parameters (Alipay's order string, WeChat's
	// prepay_id).
	Create(ctx context.Context, t Trade) (string, error)
	// Close closes an unpaid trade; closing a trade that does not exist or is
	// closed already succeeds. A trade the buyer paid gives an error wrapping
	// ErrTradePaid.
	Close(ctx context.Context, outTradeNo string) error
	// Query asks the provider for the trade's state; it settles a trade whose
	// notify never came.
	Query(ctx context.Context, outTradeNo string) (TradeState, error)
	// Refund asks to return refundCents of a paid trade of totalCents;
	// refundNo makes it idempotent. The answer is often RefundProcessing.
	Refund(ctx context.Context, outTradeNo string, refundCents, totalCents int64, refundNo string) (RefundState, error)
	// QueryRefund asks where the refund refundNo of a trade stands. A refund
	// the provider does not know (never asked, or lost) gives an error
	// wrapping ErrRefundNotFound, never RefundProcessing: the caller then
	// asks for it, which refundNo makes safe.
	QueryRefund(ctx context.Context, outTradeNo, refundNo string) (RefundState, error)
}

// Trade is what a provider needs to open a trade.
type Trade struct {
	OutTradeNo  string
	AmountCents int64
	Subject     string
	Expire      time.Time
	// Method is how the payer pays (MethodQR, MethodApp, MethodJSAPI; empty
	// means MethodQR); PayerID is the payer's id on the channel, set for
	// MethodJSAPI only (a WeChat openid).
	Method, PayerID string
}

// Payment methods: how the payer's client pays a trade. A channel supports
// some of them (pay.Supports).
const (
	MethodQR    = "qr"    // a URL the payer opens or scans (Alipay precreate, WeChat Native)
	MethodApp   = "app"   // the provider's SDK inside the merchant's app
	MethodJSAPI = "jsapi" // inside the provider's own app: a WeChat mini program or page; needs the payer's id
)

// ErrNoPayerID is what paying by MethodJSAPI gives before the payer logged
// in with the channel (SetPayerID): the trade must name the payer.
var ErrNoPayerID = errors.New("payer has not logged in with the channel")

// Payment is one provider trade for an order or a top-up.
type Payment struct {
	OutTradeNo  string
	Kind        string
	OrderID     string
	UserID      string // the payer
	PayeeID     string // credited when paid: the merchant, or the payer for a top-up
	Channel     string
	AmountCents int64
	Status      string
	PayURL      string // what Provider.Create returned: a URL for MethodQR, the SDK methods' credential otherwise
}

// Payments creates provider trades, applies paid notifies with group commit
// (notifies arriving together share one MySQL transaction), expires unpaid
// orders and refunds payments that came too late. A notify is acknowledged
// only after Paid returns, that is after the commit.
//
// Payments owns its goroutines: the group committer, started by the first
// Paid, and the refunds Paid starts for payments that came too late. Close
// stops them and waits for them; after Close, Paid fails with
// flashgrab.ErrUnavailable, so the provider retries the notify elsewhere.
// Make one with NewPayments: the zero value is not ready for use.
type Payments struct {
	books     *Books
	providers map[string]Provider // by channel name (pay.Channels.Providers)

	// The options below are set by NewPayments; change them before the
	// first call.

	Logger  *slog.Logger // default slog.Default()
	Metrics *Metrics     // optional: counts finished refunds
	// OnPaid, when set, is called with each order payment just applied (not
	// a duplicate, not one paid too late), after its commit, from the
	// notify's goroutine: it must not block. pay.PaidMessages tells the
	// buyer.
	OnPaid func(Payment)

	ctx    context.Context // cancelled by Close: ends the committer and the refunds
	cancel context.CancelFunc
	queue  chan *notice

	mu        sync.RWMutex // closed and running; held (read) while enqueueing or starting a refund
	closed    bool
	running   bool // the committer was started
	goroutine sync.WaitGroup
}

// NewPayments returns Payments that record trades in books and open them
// with providers (by channel name, as pay.Channels.Providers gives them; a
// channel missing there fails with ErrNoChannel). It starts no goroutine:
// the group committer starts with the first Paid. Close it when done.
func NewPayments(books *Books, providers map[string]Provider) *Payments {
	ctx, cancel := context.WithCancel(context.Background())
	return &Payments{
		books:     books,
		providers: providers,
		Logger:    slog.Default(),
		ctx:       ctx,
		cancel:    cancel,
		queue:     make(chan *notice, 4*maxGroup),
	}
}

// Close stops the group committer after the group in flight, fails the
// notifies still queued with flashgrab.ErrUnavailable, cancels the refunds in
// progress and waits for all of them. A second Close does nothing.
func (p *Payments) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.goroutine.Wait()
}

// errClosed is what a notify gets once Close has begun.
var errClosed = fmt.Errorf("payments closed: %w", flashgrab.ErrUnavailable)

// OutTradeNo is the provider trade number of an order or top-up on a channel
// and method: one per (order, channel, method), so asking to pay again the
// same way returns the same trade, while another method (which the provider
// records as another trade type) gets a trade of its own. A QR trade keeps
// the form trades had before methods existed (<order>_<channel initial>);
// the others add the method's initial. Alipay allows only letters, digits
// and '_' in it.
func OutTradeNo(orderID, channel, method string) string {
	no := strings.ReplaceAll(orderID, "-", "_") + "_" + channel[:1]
	if method != "" && method != MethodQR {
		no += method[:1]
	}
	return no
}

func (p *Payments) provider(channel string) (Provider, error) {
	pr, ok := p.providers[channel]
	if !ok || pr == nil {
		return nil, fmt.Errorf("channel %q: %w", channel, ErrNoChannel)
	}
	return pr, nil
}

// PayOrder opens (or returns the already open) trade for an order on a
// channel, paid by method (see MethodQR). The order comes from Redis; if the
// settler has not written it to MySQL yet, it is written now (the same
// idempotent insert). MethodJSAPI needs the buyer's id on the channel
// (SetPayerID), else ErrNoPayerID.
func (p *Payments) PayOrder(ctx context.Context, o flashgrab.Order, channel, method string) (Payment, error) {
	pr, err := p.provider(channel)
	if err != nil {
		return Payment{}, err
	}
	var payer string
	if method == MethodJSAPI {
		if payer, err = p.books.PayerID(ctx, o.UserID, channel); err != nil {
			return Payment{}, err
		}
	}
	if err := p.books.ensureOrder(ctx, o); err != nil {
		return Payment{}, err
	}
	st, err := p.books.Order(ctx, o.ID)
	if err != nil {
		return Payment{}, err
	}
	if st.Status != OrderPending || !time.Now().Before(st.ExpiresAt) {
		return Payment{}, fmt.Errorf("order %s is %s: %w", o.ID, st.Status, flashgrab.ErrNotPayable)
	}
	pay := Payment{OutTradeNo: OutTradeNo(o.ID, channel, method), Kind: KindOrder, OrderID: o.ID, UserID: o.UserID,
		PayeeID: o.MerchantID, Channel: channel, AmountCents: o.AmountCents, Status: PaymentCreated}
	return p.open(ctx, pr, pay, Trade{Subject: "flashgrab order " + o.ID, Expire: st.ExpiresAt, Method: method, PayerID: payer})
}

// Topup opens a trade that, once paid, credits the payer's own account.
func (p *Payments) Topup(ctx context.Context, topupID, user string, amount int64, channel string) (Payment, error) {
	pr, err := p.provider(channel)
	if err != nil {
		return Payment{}, err
	}
	pay := Payment{OutTradeNo: OutTradeNo(topupID, channel, MethodQR), Kind: KindTopup, OrderID: topupID, UserID: user,
		PayeeID: user, Channel: channel, AmountCents: amount, Status: PaymentCreated}
	return p.open(ctx, pr, pay, Trade{Subject: "flashgrab top-up", Expire: time.Now().Add(p.books.orderTTL()), Method: MethodQR})
}

// open records the payment before asking the provider, so that a notify
// racing the answer always finds it; a payment opened before is returned as
// it is. t gives the trade's subject, expiry, method and payer; the rest
// comes from pay.
func (p *Payments) open(ctx context.Context, pr Provider, pay Payment, t Trade) (Payment, error) {
	_, err := p.books.DB.ExecContext(ctx, `INSERT IGNORE INTO payments (out_trade_no, kind, order_id, user_id, payee_id,
		channel, amount_cents, status, created_at) VALUES (?,?,?,?,?,?,?,?,?)`, pay.OutTradeNo, pay.Kind, pay.OrderID,
		pay.UserID, pay.PayeeID, pay.Channel, pay.AmountCents, PaymentCreated, time.Now().UTC())
	if err != nil {
		return Payment{}, fmt.Errorf("record payment %s: %w", pay.OutTradeNo, unavailable(err))
	}
	cur, err := p.books.Payment(ctx, pay.OutTradeNo)
	if err != nil {
		return Payment{}, err
	}
	if cur.Status != PaymentCreated {
		return Payment{}, fmt.Errorf("payment %s is %s: %w", pay.OutTradeNo, cur.Status, flashgrab.ErrNotPayable)
	}
	if cur.PayURL != "" {
		return cur, nil
	}
	t.OutTradeNo, t.AmountCents = pay.OutTradeNo, pay.AmountCents
	url, err := pr.Create(ctx, t)
	if err != nil {
		return Payment{}, fmt.Errorf("open %s trade %s: %w: %v", pay.Channel, pay.OutTradeNo, flashgrab.ErrUnavailable, err)
	}
	if _, err := p.books.DB.ExecContext(ctx, `UPDATE payments SET pay_url = ? WHERE out_trade_no = ?`, url, pay.OutTradeNo); err != nil {
		return Payment{}, fmt.Errorf("record payment %s: %w", pay.OutTradeNo, unavailable(err))
	}
	if pay.Kind == KindOrder {
		if _, err := p.books.DB.ExecContext(ctx, `UPDATE orders SET channel = ?, out_trade_no = ? WHERE id = ? AND status = ?`,
			pay.Channel, pay.OutTradeNo, pay.OrderID, OrderPending); err != nil {
			return Payment{}, fmt.Errorf("record payment %s: %w", pay.OutTradeNo, unavailable(err))
		}
	}
	cur.PayURL = url
	return cur, nil
}

// Payment returns a payment by its provider trade number.
func (b *Books) Payment(ctx context.Context, outTradeNo string) (Payment, error) {
	var p Payment
	err := b.DB.QueryRowContext(ctx, `SELECT out_trade_no, kind, order_id, user_id, payee_id, channel, amount_cents,
		status, pay_url FROM payments WHERE out_trade_no = ?`, outTradeNo).
		Scan(&p.OutTradeNo, &p.Kind, &p.OrderID, &p.UserID, &p.PayeeID, &p.Channel, &p.AmountCents, &p.Status, &p.PayURL)
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, fmt.Errorf("payment %s: %w", outTradeNo, ErrUnknownTrade)
	}
	if err != nil {
		return Payment{}, fmt.Errorf("get payment %s: %w", outTradeNo, unavailable(err))
	}
	return p, nil
}

// ensureOrder writes an order the settler has not written yet; it is the
// settler's own idempotent insert, and like it fails with ErrOrderConflict
// when the id already holds a different order.
func (b *Books) ensureOrder(ctx context.Context, o flashgrab.Order) error {
	_, err := b.DB.ExecContext(ctx, `INSERT IGNORE INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents,
		created_at, expires_at, idem_key) VALUES (?,?,?,?,?,?,?,?,?)`, o.ID, o.SaleID, o.UserID, o.MerchantID, o.Qty, o.AmountCents,
		o.CreatedAt, o.CreatedAt.Add(b.orderTTL()), idemKey(o))
	if err != nil {
		return fmt.Errorf("write order %s: %w", o.ID, unavailable(err))
	}
	if err := checkOrders(ctx, b.DB, []flashgrab.Order{o}); err != nil {
		return fmt.Errorf("write order %s: %w", o.ID, err)
	}
	return nil
}
