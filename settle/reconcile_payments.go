package settle

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// creditsArePaid: every 'sale' and 'topup' ledger row is backed by a paid
// payment: event "pay:<out_trade_no>", a payment of the matching kind in
// status paid, the same payee and amount, and for a sale the same order. A
// credit written without a payment fails here even when its balance was
// changed to match.
func (r *Reconciler) creditsArePaid(ctx context.Context, _ *state) (Check, error) {
	c := Check{Name: "every sale/topup credit is a paid payment (inv. 6)"}
	rows, err := r.DB.QueryContext(ctx, `SELECT l.seq, l.event_id, l.kind, l.account_id, l.delta_cents, l.ref,
		p.out_trade_no, p.kind, p.status, p.payee_id, p.amount_cents, p.order_id
		FROM ledger l LEFT JOIN payments p ON l.event_id LIKE 'pay:%' AND p.out_trade_no = SUBSTRING(l.event_id, 5)
		WHERE l.kind IN ('sale', 'topup')`)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var seq, delta int64
		var event, kind, account, ref string
		var no, pkind, status, payee, order sql.NullString
		var amount sql.NullInt64
		if err := rows.Scan(&seq, &event, &kind, &account, &delta, &ref, &no, &pkind, &status, &payee, &amount, &order); err != nil {
			return c, err
		}
		c.Checked++
		what := fmt.Sprintf("ledger %d: %s credit of %d fen to %s (event %s)", seq, kind, delta, account, event)
		wantKind := KindTopup
		if kind == "sale" {
			wantKind = KindOrder
		}
		switch {
		case !no.Valid:
			c.Diffs = append(c.Diffs, what+" has no payment")
		case status.String != PaymentPaid:
			c.Diffs = append(c.Diffs, fmt.Sprintf("%s: payment %s is %s, not paid", what, no.String, status.String))
		case pkind.String != wantKind:
			c.Diffs = append(c.Diffs, fmt.Sprintf("%s: payment %s is a %s payment", what, no.String, pkind.String))
		case payee.String != account || amount.Int64 != delta:
			c.Diffs = append(c.Diffs, fmt.Sprintf("%s: payment %s pays %d fen to %s", what, no.String, amount.Int64, payee.String))
		case kind == "sale" && ref != order.String:
			c.Diffs = append(c.Diffs, fmt.Sprintf("%s: for order %s, payment %s is for order %s", what, ref, no.String, order.String))
		}
	}
	return c, rows.Err()
}

// paymentsCreditedOnce: every paid payment has its credit, and nothing is
// credited twice: no order or top-up has two credits, no order two paid
// payments (paid on both channels, the second must be refunded).
func (r *Reconciler) paymentsCreditedOnce(ctx context.Context, _ *state) (Check, error) {
	c := Check{Name: "every paid payment credited exactly once (inv. 6)"}
	rows, err := r.DB.QueryContext(ctx, `SELECT p.out_trade_no, p.kind, p.payee_id, p.amount_cents, COUNT(l.seq)
		FROM payments p LEFT JOIN ledger l ON l.event_id = CONCAT('pay:', p.out_trade_no) AND l.kind IN ('sale', 'topup')
		WHERE p.status = ? GROUP BY p.out_trade_no, p.kind, p.payee_id, p.amount_cents`, PaymentPaid)
	if err != nil {
		return c, err
	}
	for rows.Next() {
		var no, kind, payee string
		var amount, credits int64
		if err := rows.Scan(&no, &kind, &payee, &amount, &credits); err != nil {
			rows.Close()
			return c, err
		}
		c.Checked++
		if credits == 0 {
			c.Diffs = append(c.Diffs, fmt.Sprintf("payment %s (%s, %d fen to %s): paid, never credited", no, kind, amount, payee))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, err
	}
	// A sale credit's ref is its order, a top-up's its out_trade_no.
	rows, err = r.DB.QueryContext(ctx, `SELECT kind, ref, COUNT(*), SUM(delta_cents) FROM ledger
		WHERE kind IN ('sale', 'topup') GROUP BY kind, ref HAVING COUNT(*) > 1`)
	if err != nil {
		return c, err
	}
	for rows.Next() {
		var kind, ref string
		var n, sum int64
		if err := rows.Scan(&kind, &ref, &n, &sum); err != nil {
			rows.Close()
			return c, err
		}
		c.Diffs = append(c.Diffs, fmt.Sprintf("%s %s credited %d times, %d fen in all", kind, ref, n, sum))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, err
	}
	rows, err = r.DB.QueryContext(ctx, `SELECT order_id, COUNT(*) FROM payments WHERE kind = ? AND status = ?
		GROUP BY order_id HAVING COUNT(*) > 1`, KindOrder, PaymentPaid)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var order string
		var n int64
		if err := rows.Scan(&order, &n); err != nil {
			return c, err
		}
		c.Diffs = append(c.Diffs, fmt.Sprintf("order %s: %d payments kept as paid", order, n))
	}
	return c, rows.Err()
}

// refundsReachBuyers: a refund the provider gave up on (refund_failed) left
// the buyer unpaid, and one refunding for longer than RefundStuckAfter is
// not progressing; younger ones are only counted as in progress.
func (r *Reconciler) refundsReachBuyers(ctx context.Context, st *state) (Check, error) {
	c := Check{Name: "every refund reached its buyer"}
	rows, err := r.DB.QueryContext(ctx, `SELECT out_trade_no, status, user_id, amount_cents, COALESCE(paid_at, created_at)
		FROM payments WHERE status IN (?, ?, ?)`, PaymentRefunding, PaymentRefunded, PaymentRefundFailed)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	now := time.Now()
	for rows.Next() {
		var no, status, user string
		var amount int64
		var since time.Time
		if err := rows.Scan(&no, &status, &user, &amount, &since); err != nil {
			return c, err
		}
		c.Checked++
		switch age := now.Sub(since); {
		case status == PaymentRefundFailed:
			c.Diffs = append(c.Diffs, fmt.Sprintf("payment %s: refund of %d fen to %s failed; the buyer was not paid back", no, amount, user))
		case status == PaymentRefunding && age > r.RefundStuckAfter:
			c.Diffs = append(c.Diffs, fmt.Sprintf("payment %s: refund of %d fen to %s still not confirmed after %s",
				no, amount, user, age.Round(time.Second)))
		case status == PaymentRefunding:
			st.rep.RefundsInProgress++
		}
	}
	return c, rows.Err()
}

// noStrandedStock: an expired order whose stock could not go back to Redis
// (its sale's keys were gone) is marked released = 2; those units are lost
// to the sale until an operator acts.
func (r *Reconciler) noStrandedStock(ctx context.Context, _ *state) (Check, error) {
	c := Check{Name: "expired orders returned their stock"}
	if err := r.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders WHERE status IN (?, ?) OR released <> 0`,
		OrderCancelled, OrderRefunded).Scan(&c.Checked); err != nil {
		return c, err
	}
	rows, err := r.DB.QueryContext(ctx, `SELECT sale_id, COUNT(*), SUM(qty) FROM orders WHERE released = 2 GROUP BY sale_id`)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var sale string
		var n, qty int64
		if err := rows.Scan(&sale, &n, &qty); err != nil {
			return c, err
		}
		c.Diffs = append(c.Diffs, fmt.Sprintf("sale %s: stranded stock, %d units in %d expired orders not returned to Redis", sale, qty, n))
	}
	return c, rows.Err()
}
