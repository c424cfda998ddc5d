package settle

import (
	"context"
	"database/sql"
	"fmt"
)

// RefundState is where a provider refund stands.
type RefundState string

// Refund states. Only RefundSucceeded means the buyer has the money back.
const (
	RefundProcessing RefundState = "processing" // asked; the provider has not finished (WeChat PROCESSING)
	RefundSucceeded  RefundState = "succeeded"  // the money went back (WeChat SUCCESS, Alipay fund_change or query)
	RefundFailed     RefundState = "failed"     // the provider gave up (WeChat ABNORMAL or CLOSED)
)

// refund returns a payment that came too late. The payment stays refunding
// until the provider reports the refund finished: a refund already asked is
// queried first (QueryRefund), and asked (again: idempotent by refundNo) when
// the query fails, e.g. because the provider does not know it yet. A
// failure is left in status refunding for RetryRefunds.
func (p *Payments) refund(ctx context.Context, outTradeNo string) error {
	pay, err := p.books.Payment(ctx, outTradeNo)
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
			p.Logger.Warn("refund failed; will retry", "out_trade_no", outTradeNo, "err", err, "query_err", qerr)
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
	pay, err := p.books.Payment(ctx, n.OutTradeNo)
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
	err := p.books.Tx(ctx, func(tx *sql.Tx) error {
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
		p.Logger.Error("refund failed at the provider; the buyer was not paid back, an operator must act",
			"out_trade_no", pay.OutTradeNo, "refund_no", RefundNo(pay.OutTradeNo), "channel", pay.Channel, "amount_cents", pay.AmountCents)
	}
	return Applied, nil
}

// RetryRefunds follows every payment still refunding: a refund not yet
// asked is asked, one asked is queried, so a PROCESSING refund is followed
// to its end even when its notify never comes.
func (p *Payments) RetryRefunds(ctx context.Context) error {
	rows, err := p.books.DB.QueryContext(ctx, `SELECT out_trade_no FROM payments WHERE status = ? LIMIT 200`, PaymentRefunding)
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
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("retry refunds: read refunding payments: %w", unavailable(err))
	}
	var first error
	for _, no := range nos {
		if err := p.refund(ctx, no); err != nil && first == nil {
			first = err
		}
	}
	return first
}
