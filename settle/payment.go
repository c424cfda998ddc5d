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

	"github.com/flashgrab/flashgrab/engine"
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
)

// RefundState is where a provider refund stands.
type RefundState string

// Refund states. Only RefundSucceeded means the buyer has the money back.
const (
	RefundProcessing RefundState = "processing" // asked; the provider has not finished (WeChat PROCESSING)
	RefundSucceeded  RefundState = "succeeded"  // the money went back (WeChat SUCCESS, Alipay fund_change or query)
	RefundFailed     RefundState = "failed"     // the provider gave up (WeChat ABNORMAL or CLOSED)
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
	// Create opens a provider trade and returns the URL the payer opens
	// (Alipay's pay_url) or encodes as a QR code (WeChat's code_url).
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
	// QueryRefund asks where the refund refundNo of a trade stands.
	QueryRefund(ctx context.Context, outTradeNo, refundNo string) (RefundState, error)
}

// Trade is what a provider needs to open a trade.
type Trade struct {
	OutTradeNo  string
	AmountCents int64
	Subject     string
	Expire      time.Time
}

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
	PayURL      string
}

// Notice is a verified paid notify from a provider.
type Notice struct {
	Channel     string
	OutTradeNo  string
	TradeNo     string
	AmountCents int64
	PaidAt      time.Time
}

// Outcome is what applying a Notice did.
type Outcome int

// Outcomes of Payments.Paid.
const (
	Applied   Outcome = iota // marked paid and credited, just now
	Duplicate                // seen before; nothing changed
	Refunding                // paid too late (order cancelled or paid otherwise): being refunded
)

// Payments creates provider trades, applies paid notifies with group commit
// (notifies arriving together share one MySQL transaction), expires unpaid
// orders and refunds payments that came too late. A notify is acknowledged
// only after Paid returns, that is after the commit.
type Payments struct {
	Books     *Books
	Providers map[string]Provider // by channel name (pay.Channels.Providers)
	Logger    *slog.Logger
	Metrics   *Metrics // optional: counts finished refunds

	once    sync.Once
	queue   chan *notice
	stop    chan struct{}
	stopped sync.WaitGroup
}

type notice struct {
	Notice
	outcome Outcome
	err     error
	done    chan struct{}
}

// maxGroup bounds how many notifies share one transaction.
const maxGroup = 128

// OutTradeNo is the provider trade number of an order or top-up on a channel:
// one per (order, channel), so asking to pay again returns the same trade.
// Alipay allows only letters, digits and '_' in it.
func OutTradeNo(orderID, channel string) string {
	return strings.ReplaceAll(orderID, "-", "_") + "_" + channel[:1]
}

func (p *Payments) provider(channel string) (Provider, error) {
	pr, ok := p.Providers[channel]
	if !ok || pr == nil {
		return nil, fmt.Errorf("channel %q: %w", channel, ErrNoChannel)
	}
	return pr, nil
}

// PayOrder opens (or returns the already open) trade for an order on a
// channel. The order comes from Redis; if the settler has not written it to
// MySQL yet, it is written now (the same idempotent insert).
func (p *Payments) PayOrder(ctx context.Context, o engine.Order, channel string) (Payment, error) {
	pr, err := p.provider(channel)
	if err != nil {
		return Payment{}, err
	}
	if err := p.Books.ensureOrder(ctx, o); err != nil {
		return Payment{}, err
	}
	st, err := p.Books.Order(ctx, o.ID)
	if err != nil {
		return Payment{}, err
	}
	if st.Status != OrderPending || !time.Now().Before(st.ExpiresAt) {
		return Payment{}, fmt.Errorf("order %s is %s: %w", o.ID, st.Status, engine.ErrNotPayable)
	}
	pay := Payment{OutTradeNo: OutTradeNo(o.ID, channel), Kind: KindOrder, OrderID: o.ID, UserID: o.UserID,
		PayeeID: o.MerchantID, Channel: channel, AmountCents: o.AmountCents, Status: PaymentCreated}
	return p.open(ctx, pr, pay, "flashgrab order "+o.ID, st.ExpiresAt)
}

// Topup opens a trade that, once paid, credits the payer's own account.
func (p *Payments) Topup(ctx context.Context, topupID, user string, amount int64, channel string) (Payment, error) {
	pr, err := p.provider(channel)
	if err != nil {
		return Payment{}, err
	}
	pay := Payment{OutTradeNo: OutTradeNo(topupID, channel), Kind: KindTopup, OrderID: topupID, UserID: user,
		PayeeID: user, Channel: channel, AmountCents: amount, Status: PaymentCreated}
	return p.open(ctx, pr, pay, "flashgrab top-up", time.Now().Add(p.Books.orderTTL()))
}

// open records the payment before asking the provider, so that a notify
// racing the answer always finds it; a payment opened before is returned as
// it is.
func (p *Payments) open(ctx context.Context, pr Provider, pay Payment, subject string, expire time.Time) (Payment, error) {
	_, err := p.Books.DB.ExecContext(ctx, `INSERT IGNORE INTO payments (out_trade_no, kind, order_id, user_id, payee_id,
		channel, amount_cents, status, created_at) VALUES (?,?,?,?,?,?,?,?,?)`, pay.OutTradeNo, pay.Kind, pay.OrderID,
		pay.UserID, pay.PayeeID, pay.Channel, pay.AmountCents, PaymentCreated, time.Now().UTC())
	if err != nil {
		return Payment{}, fmt.Errorf("record payment %s: %w", pay.OutTradeNo, unavailable(err))
	}
	cur, err := p.Books.Payment(ctx, pay.OutTradeNo)
	if err != nil {
		return Payment{}, err
	}
	if cur.Status != PaymentCreated {
		return Payment{}, fmt.Errorf("payment %s is %s: %w", pay.OutTradeNo, cur.Status, engine.ErrNotPayable)
	}
	if cur.PayURL != "" {
		return cur, nil
	}
	url, err := pr.Create(ctx, Trade{OutTradeNo: pay.OutTradeNo, AmountCents: pay.AmountCents, Subject: subject, Expire: expire})
	if err != nil {
		return Payment{}, fmt.Errorf("open %s trade %s: %w: %v", pay.Channel, pay.OutTradeNo, engine.ErrUnavailable, err)
	}
	if _, err := p.Books.DB.ExecContext(ctx, `UPDATE payments SET pay_url = ? WHERE out_trade_no = ?`, url, pay.OutTradeNo); err != nil {
		return Payment{}, fmt.Errorf("record payment %s: %w", pay.OutTradeNo, unavailable(err))
	}
	if pay.Kind == KindOrder {
		if _, err := p.Books.DB.ExecContext(ctx, `UPDATE orders SET channel = ?, out_trade_no = ? WHERE id = ? AND status = ?`,
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
func (b *Books) ensureOrder(ctx context.Context, o engine.Order) error {
	_, err := b.DB.ExecContext(ctx, `INSERT IGNORE INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents,
		created_at, expires_at) VALUES (?,?,?,?,?,?,?,?)`, o.ID, o.SaleID, o.UserID, o.MerchantID, o.Qty, o.AmountCents,
		o.CreatedAt, o.CreatedAt.Add(b.orderTTL()))
	if err != nil {
		return fmt.Errorf("write order %s: %w", o.ID, unavailable(err))
	}
	if err := checkOrders(ctx, b.DB, []engine.Order{o}); err != nil {
		return fmt.Errorf("write order %s: %w", o.ID, err)
	}
	return nil
}

// Paid applies a verified paid notify: it marks the payment and its order
// paid and credits the payee, exactly once however often the notify comes.
// It returns after the commit; only then may the handler acknowledge.
// ErrUnknownTrade and ErrAmountMismatch change nothing.
func (p *Payments) Paid(ctx context.Context, n Notice) (Outcome, error) {
	pay, err := p.Books.Payment(ctx, n.OutTradeNo)
	if err != nil {
		return 0, err
	}
	if pay.Channel != n.Channel {
		return 0, fmt.Errorf("trade %s is a %s trade, notified by %s: %w", n.OutTradeNo, pay.Channel, n.Channel, ErrUnknownTrade)
	}
	if pay.AmountCents != n.AmountCents {
		return 0, fmt.Errorf("trade %s: paid %d fen, trade is %d: %w", n.OutTradeNo, n.AmountCents, pay.AmountCents, ErrAmountMismatch)
	}
	p.once.Do(p.start)
	w := &notice{Notice: n, done: make(chan struct{})}
	select {
	case p.queue <- w:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		// The group may still commit it; the provider's retry then finds a
		// duplicate and is acknowledged.
		return 0, ctx.Err()
	}
	if w.err == nil && w.outcome == Refunding {
		go p.refund(context.Background(), n.OutTradeNo)
	}
	return w.outcome, w.err
}

func (p *Payments) start() {
	p.queue = make(chan *notice, 4*maxGroup)
	p.stop = make(chan struct{})
	p.stopped.Add(1)
	go p.commitLoop()
}

// Close stops the group committer after the group in flight.
func (p *Payments) Close() {
	p.once.Do(p.start)
	close(p.stop)
	p.stopped.Wait()
}

// commitLoop takes the notifies that arrived while the previous group was
// committing and commits them as one group.
func (p *Payments) commitLoop() {
	defer p.stopped.Done()
	for {
		var group []*notice
		select {
		case w := <-p.queue:
			group = append(group, w)
		case <-p.stop:
			return
		}
	fill:
		for len(group) < maxGroup {
			select {
			case w := <-p.queue:
				group = append(group, w)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.commit(ctx, group)
		cancel()
		for _, w := range group {
			if err != nil {
				w.err = err
			}
			close(w.done)
		}
	}
}

func (p *Payments) commit(ctx context.Context, group []*notice) error {
	var payees []string
	for _, w := range group {
		if pay, err := p.Books.Payment(ctx, w.OutTradeNo); err == nil {
			payees = append(payees, pay.PayeeID)
		}
	}
	return p.Books.Tx(ctx, func(tx *sql.Tx) error {
		var postings []Posting
		for _, w := range group {
			ps, outcome, err := applyPaid(ctx, tx, w.Notice)
			if err != nil {
				return err
			}
			w.outcome = outcome
			postings = append(postings, ps...)
		}
		_, err := post(ctx, tx, postings, false)
		return err
	}, payees)
}

// applyPaid moves one payment to paid inside the group's transaction. The
// payment row is locked first, so two instances handling duplicates of one
// notify take turns and the second sees it paid.
func applyPaid(ctx context.Context, tx *sql.Tx, n Notice) ([]Posting, Outcome, error) {
	var kind, orderID, payee, status string
	var amount int64
	err := tx.QueryRowContext(ctx, `SELECT kind, order_id, payee_id, amount_cents, status FROM payments
		WHERE out_trade_no = ? FOR UPDATE`, n.OutTradeNo).Scan(&kind, &orderID, &payee, &amount, &status)
	if err != nil {
		return nil, 0, unavailable(err)
	}
	if status != PaymentCreated && status != PaymentClosed {
		return nil, Duplicate, nil
	}
	paidAt := n.PaidAt
	if paidAt.IsZero() {
		paidAt = time.Now()
	}
	newStatus := PaymentPaid
	var postings []Posting
	switch kind {
	case KindTopup:
		postings = append(postings, Posting{EventID: "pay:" + n.OutTradeNo, Account: payee, Delta: amount, Kind: "topup", Ref: n.OutTradeNo})
	case KindOrder:
		res, err := tx.ExecContext(ctx, `UPDATE orders SET status = ?, paid_at = ?, channel = ?, out_trade_no = ?
			WHERE id = ? AND status = ?`, OrderPaid, paidAt.UTC(), n.Channel, n.OutTradeNo, orderID, OrderPending)
		if err != nil {
			return nil, 0, unavailable(err)
		}
		if rows, _ := res.RowsAffected(); rows == 1 {
			postings = append(postings, Posting{EventID: "pay:" + n.OutTradeNo, Account: payee, Delta: amount, Kind: "sale", Ref: orderID})
		} else {
			newStatus = PaymentRefunding // cancelled by expiry, or paid on the other channel
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE payments SET status = ?, trade_no = ?, paid_at = ? WHERE out_trade_no = ?`,
		newStatus, n.TradeNo, paidAt.UTC(), n.OutTradeNo); err != nil {
		return nil, 0, unavailable(err)
	}
	if newStatus == PaymentRefunding {
		return nil, Refunding, nil
	}
	return postings, Applied, nil
}

// refund returns a payment that came too late. The payment stays refunding
// until the provider reports the refund finished: a refund already asked is
// queried first (QueryRefund), and asked (again: idempotent by refundNo) when
// the query fails, e.g. because the provider does not know it yet. A
// failure is left in status refunding for RetryRefunds.
func (p *Payments) refund(ctx context.Context, outTradeNo string) error {
	pay, err := p.Books.Payment(ctx, outTradeNo)
	if err != nil {
		return err
	}
	if pay.Status != PaymentRefunding {
		return nil
	}
	pr, err := p.provider(pay.Channel)
	if err != nil {
		return err
	}
	refundNo := RefundNo(outTradeNo)
	state, qerr := pr.QueryRefund(ctx, outTradeNo, refundNo)
	if qerr != nil {
		state, err = pr.Refund(ctx, outTradeNo, pay.AmountCents, pay.AmountCents, refundNo)
		if err != nil {
			p.logger().Warn("refund failed; will retry", "out_trade_no", outTradeNo, "err", err, "query_err", qerr)
			return err
		}
	}
	_, err = p.applyRefund(ctx, pay, state)
	return err
}

// RefundNo is the provider refund number of a payment's refund: one per
// payment, so asking again never refunds twice.
func RefundNo(outTradeNo string) string { return "R" + outTradeNo }

// RefundNotice is a verified refund notify from a provider.
type RefundNotice struct {
	Channel     string
	OutTradeNo  string
	RefundNo    string
	AmountCents int64 // what the provider says was (or was to be) refunded
	State       RefundState
}

// Refunded applies a verified refund notify: the same transition as a
// refund query. A notify for a refund flashgrab never asked (unknown trade,
// another channel, another refund number, a payment not being refunded) or
// for another amount changes nothing and gives ErrUnknownTrade or
// ErrAmountMismatch. A repeat of a finished refund's notify changes nothing
// and gives Duplicate. It returns after the commit.
func (p *Payments) Refunded(ctx context.Context, n RefundNotice) (Outcome, error) {
	pay, err := p.Books.Payment(ctx, n.OutTradeNo)
	if err != nil {
		return 0, err
	}
	if pay.Channel != n.Channel || n.RefundNo != RefundNo(pay.OutTradeNo) {
		return 0, fmt.Errorf("refund %s of %s trade %s notified by %s: %w", n.RefundNo, pay.Channel, n.OutTradeNo, n.Channel, ErrUnknownTrade)
	}
	if pay.AmountCents != n.AmountCents {
		return 0, fmt.Errorf("refund %s: notified %d fen, refund is %d: %w", n.RefundNo, n.AmountCents, pay.AmountCents, ErrAmountMismatch)
	}
	switch pay.Status {
	case PaymentRefunding:
	case PaymentRefunded, PaymentRefundFailed:
		return Duplicate, nil
	default:
		return 0, fmt.Errorf("refund %s: payment %s is %s, no refund was asked: %w", n.RefundNo, n.OutTradeNo, pay.Status, ErrUnknownTrade)
	}
	return p.applyRefund(ctx, pay, n.State)
}

// applyRefund records where a refunding payment's refund stands:
// succeeded → payment and order refunded; failed (WeChat ABNORMAL, CLOSED)
// → payment refund_failed, for an operator (reconcile reports it);
// processing → nothing yet. The status change is a compare-and-set from
// refunding, so a query and a notify racing each other apply it once.
func (p *Payments) applyRefund(ctx context.Context, pay Payment, state RefundState) (Outcome, error) {
	var to string
	switch state {
	case RefundSucceeded:
		to = PaymentRefunded
	case RefundFailed:
		to = PaymentRefundFailed
	case RefundProcessing:
		return Refunding, nil
	default:
		return 0, fmt.Errorf("refund %s: unknown refund state %q", RefundNo(pay.OutTradeNo), state)
	}
	won := false
	err := p.Books.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE payments SET status = ? WHERE out_trade_no = ? AND status = ?`,
			to, pay.OutTradeNo, PaymentRefunding)
		if err != nil {
			return unavailable(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil // finished by a racing query or notify
		}
		won = true
		if pay.Kind == KindOrder && to == PaymentRefunded {
			if _, err := tx.ExecContext(ctx, `UPDATE orders SET status = ? WHERE id = ? AND status = ?`,
				OrderRefunded, pay.OrderID, OrderCancelled); err != nil {
				return unavailable(err)
			}
		}
		return nil
	}, nil)
	if err != nil {
		return 0, err
	}
	if !won {
		return Duplicate, nil
	}
	if p.Metrics != nil {
		p.Metrics.Refunds.WithLabelValues(pay.Channel, string(state)).Inc()
	}
	if to == PaymentRefundFailed {
		p.logger().Error("refund failed at the provider; the buyer was not paid back, an operator must act",
			"out_trade_no", pay.OutTradeNo, "refund_no", RefundNo(pay.OutTradeNo), "channel", pay.Channel, "amount_cents", pay.AmountCents)
	}
	return Applied, nil
}

// RetryRefunds follows every payment still refunding: a refund not yet
// asked is asked, one asked is queried, so a PROCESSING refund is followed
// to its end even when its notify never comes.
func (p *Payments) RetryRefunds(ctx context.Context) error {
	rows, err := p.Books.DB.QueryContext(ctx, `SELECT out_trade_no FROM payments WHERE status = ? LIMIT 200`, PaymentRefunding)
	if err != nil {
		return unavailable(err)
	}
	var nos []string
	for rows.Next() {
		var no string
		if err := rows.Scan(&no); err != nil {
			rows.Close()
			return unavailable(err)
		}
		nos = append(nos, no)
	}
	rows.Close()
	var first error
	for _, no := range nos {
		if err := p.refund(ctx, no); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ExpireOrders cancels unpaid orders past their deadline, returns their stock
// to the sale through release (engine.ReleaseOrder), and closes their
// provider trades. The cancel is a compare-and-set on the order's status, the
// same one a paid notify makes, so an order ends either paid or cancelled,
// never both. A crash after the cancel is finished by the next sweep
// (released = 0).
func (p *Payments) ExpireOrders(ctx context.Context, release func(context.Context, engine.Order) error) (int, error) {
	now := time.Now().UTC()
	rows, err := p.Books.DB.QueryContext(ctx, `SELECT id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, status
		FROM orders WHERE (status = ? AND expires_at <= ?) OR (status IN (?, ?) AND released = 0) LIMIT 500`,
		OrderPending, now, OrderCancelled, OrderRefunded)
	if err != nil {
		return 0, unavailable(err)
	}
	type due struct {
		engine.Order
		status string
	}
	var orders []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.ID, &d.SaleID, &d.UserID, &d.MerchantID, &d.Qty, &d.AmountCents, &d.CreatedAt, &d.status); err != nil {
			rows.Close()
			return 0, unavailable(err)
		}
		orders = append(orders, d)
	}
	rows.Close()
	cancelled := 0
	for _, o := range orders {
		var toClose []Payment
		if o.status == OrderPending {
			won := false
			err := p.Books.Tx(ctx, func(tx *sql.Tx) error {
				toClose = toClose[:0]
				res, err := tx.ExecContext(ctx, `UPDATE orders SET status = ? WHERE id = ? AND status = ? AND expires_at <= ?`,
					OrderCancelled, o.ID, OrderPending, now)
				if err != nil {
					return unavailable(err)
				}
				if n, _ := res.RowsAffected(); n != 1 {
					return nil // paid meanwhile
				}
				won = true
				prow, err := tx.QueryContext(ctx, `SELECT out_trade_no, channel FROM payments WHERE order_id = ? AND status = ?`,
					o.ID, PaymentCreated)
				if err != nil {
					return unavailable(err)
				}
				for prow.Next() {
					var pay Payment
					prow.Scan(&pay.OutTradeNo, &pay.Channel)
					toClose = append(toClose, pay)
				}
				prow.Close()
				_, err = tx.ExecContext(ctx, `UPDATE payments SET status = ? WHERE order_id = ? AND status = ?`,
					PaymentClosed, o.ID, PaymentCreated)
				return unavailable(err)
			}, nil)
			if err != nil {
				return cancelled, err
			}
			if !won {
				continue
			}
			cancelled++
		}
		released := 1
		if err := release(ctx, o.Order); errors.Is(err, engine.ErrSaleGone) {
			// Stranded: nothing in Redis to return the stock to; reconcile reports released = 2.
			released = 2
			p.logger().Error("expired order's stock stranded", "order", o.ID, "sale", o.SaleID, "user", o.UserID, "qty", o.Qty, "err", err)
		} else if err != nil && !errors.Is(err, engine.ErrNotFound) {
			return cancelled, err
		}
		if _, err := p.Books.DB.ExecContext(ctx, `UPDATE orders SET released = ? WHERE id = ?`, released, o.ID); err != nil {
			return cancelled, unavailable(err)
		}
		for _, pay := range toClose {
			pr, err := p.provider(pay.Channel)
			if err != nil {
				continue
			}
			err = pr.Close(ctx, pay.OutTradeNo)
			if errors.Is(err, ErrTradePaid) {
				// Paid, and its notify not applied yet: settle it from a
				// query now, which refunds it, instead of trusting a notify
				// that may never arrive.
				_, err = p.settleFromQuery(ctx, pr, pay.Channel, pay.OutTradeNo)
			}
			if err != nil {
				// A payment that still arrives is refunded by Paid, and
				// QueryStale asks about the trade again later.
				p.logger().Warn("close trade failed", "out_trade_no", pay.OutTradeNo, "err", err)
			}
		}
	}
	return cancelled, nil
}

func (p *Payments) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}
