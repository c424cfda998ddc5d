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
