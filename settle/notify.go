package settle

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

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

type notice struct {
	Notice
	outcome Outcome
	err     error
	done    chan struct{}
}

// maxGroup bounds how many notifies share one transaction.
const maxGroup = 128

// Paid applies a verified paid notify: it marks the payment and its order
// paid and credits the payee, exactly once however often the notify comes.
// It returns after the commit; only then may the handler acknowledge.
// ErrUnknownTrade and ErrAmountMismatch change nothing.
func (p *Payments) Paid(ctx context.Context, n Notice) (Outcome, error) {
	pay, err := p.books.Payment(ctx, n.OutTradeNo)
	if err != nil {
		return 0, err
	}
	if pay.Channel != n.Channel {
		return 0, fmt.Errorf("trade %s is a %s trade, notified by %s: %w", n.OutTradeNo, pay.Channel, n.Channel, ErrUnknownTrade)
	}
	if pay.AmountCents != n.AmountCents {
		return 0, fmt.Errorf("trade %s: paid %d fen, trade is %d: %w", n.OutTradeNo, n.AmountCents, pay.AmountCents, ErrAmountMismatch)
	}
	w := &notice{Notice: n, done: make(chan struct{})}
	if err := p.enqueue(ctx, w); err != nil {
		return 0, err
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		// The group may still commit it; the provider's retry then finds a
		// duplicate and is acknowledged.
		return 0, ctx.Err()
	}
	if w.err == nil && w.outcome == Refunding {
		p.startRefund(n.OutTradeNo)
	}
	if w.err == nil && w.outcome == Applied && pay.Kind == KindOrder && p.OnPaid != nil {
		pay.Status = PaymentPaid
		p.OnPaid(pay)
	}
	return w.outcome, w.err
}

// enqueue hands a notify to the group committer, starting it on first use.
// The read lock keeps Close from draining the queue while w goes in.
func (p *Payments) enqueue(ctx context.Context, w *notice) error {
	p.startCommitter()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errClosed
	}
	select {
	case p.queue <- w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startCommitter starts the group committer once, unless Close came first.
func (p *Payments) startCommitter() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.closed {
		return
	}
	p.running = true
	p.goroutine.Add(1)
	go p.commitLoop()
}

// startRefund refunds a payment that came too late in the background, on
// the context Close cancels; Close waits for it. A refund not started or
// cut short stays refunding, and RetryRefunds finishes it.
func (p *Payments) startRefund(outTradeNo string) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return
	}
	p.goroutine.Add(1)
	go func() {
		defer p.goroutine.Done()
		p.refund(p.ctx, outTradeNo)
	}()
}

// commitLoop takes the notifies that arrived while the previous group was
// committing and commits them as one group.
func (p *Payments) commitLoop() {
	defer p.goroutine.Done()
	for {
		var group []*notice
		select {
		case w := <-p.queue:
			group = append(group, w)
		case <-p.ctx.Done():
			p.failQueued()
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

// failQueued answers the notifies left in the queue at Close: nothing is
// enqueued any more (Close set closed under the lock enqueue holds).
func (p *Payments) failQueued() {
	for {
		select {
		case w := <-p.queue:
			w.err = errClosed
			close(w.done)
		default:
			return
		}
	}
}

func (p *Payments) commit(ctx context.Context, group []*notice) error {
	var payees []string
	for _, w := range group {
		if pay, err := p.books.Payment(ctx, w.OutTradeNo); err == nil {
			payees = append(payees, pay.PayeeID)
		}
	}
	return p.books.Tx(ctx, func(tx *sql.Tx) error {
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
