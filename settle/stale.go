package settle

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultStaleAge is how old an unpaid payment must be before QueryStale asks
// its provider about it. A trade's time_expire is its order's expiry (15
// minutes by default), so after an hour it can no longer be paid and one
// query gives its final state; waiting out the providers' notify windows
// (Alipay retries for ~25 h, WeChat ~24 h) would leave a paid order unsettled,
// or a cancelled one unrefunded, for a day. Querying early is harmless:
// Paid is idempotent, so a notify arriving later is a duplicate.
const DefaultStaleAge = time.Hour

// settleFromQuery asks the provider about a trade and, when it was paid,
// applies the payment through Paid as if its notify had come: an order still
// pending is paid, a cancelled one is refunded. It reports whether the trade
// was paid.
func (p *Payments) settleFromQuery(ctx context.Context, pr Provider, channel, outTradeNo string) (bool, error) {
	st, err := pr.Query(ctx, outTradeNo)
	if err != nil {
		return false, fmt.Errorf("query %s trade %s: %w", channel, outTradeNo, err)
	}
	if !st.Paid {
		return false, nil
	}
	out, err := p.Paid(ctx, Notice{Channel: channel, OutTradeNo: outTradeNo, TradeNo: st.TradeNo,
		AmountCents: st.AmountCents, PaidAt: st.PaidAt})
	if err != nil {
		return true, fmt.Errorf("apply queried payment of %s trade %s: %w", channel, outTradeNo, err)
	}
	if out != Duplicate {
		p.Logger.Info("settled a payment whose notify never came", "channel", channel, "out_trade_no", outTradeNo,
			"refunding", out == Refunding)
	}
	return true, nil
}

// QueryStale asks the providers about every payment still created or closed
// that was opened in (createdAfter, createdBefore], and applies the paid ones
// as their notify would have: it settles trades whose notify never arrived.
// The window keeps the sweep from asking about the same old trades forever:
// the sweeper moves it along, so each payment is asked about once or twice
// when it is old enough, then never again. It returns how many turned out
// paid; a provider failure is returned after the others have been asked.
func (p *Payments) QueryStale(ctx context.Context, createdAfter, createdBefore time.Time) (int, error) {
	paid := 0
	var first error
	afterAt, afterNo := createdAfter.UTC(), ""
	for {
		due, err := p.stalePage(ctx, afterAt, afterNo, createdBefore.UTC())
		if err != nil {
			return paid, err
		}
		for _, s := range due {
			pr, err := p.provider(s.channel)
			if errors.Is(err, ErrNoChannel) {
				continue // the channel was switched off; nobody to ask
			}
			if err != nil {
				return paid, err
			}
			ok, err := p.settleFromQuery(ctx, pr, s.channel, s.outTradeNo)
			if ok {
				paid++
			}
			if err != nil && first == nil {
				first = err
			}
		}
		if len(due) < stalePage {
			return paid, first
		}
		afterAt, afterNo = due[len(due)-1].createdAt, due[len(due)-1].outTradeNo
	}
}

const stalePage = 500

type stalePayment struct {
	outTradeNo, channel string
	createdAt           time.Time
}

// stalePage reads the next page of unpaid payments in creation order, after
// (afterAt, afterNo): paging by key, so no payment is skipped or read twice.
func (p *Payments) stalePage(ctx context.Context, afterAt time.Time, afterNo string, before time.Time) ([]stalePayment, error) {
	rows, err := p.books.DB.QueryContext(ctx, `SELECT out_trade_no, channel, created_at FROM payments
		WHERE status IN (?, ?) AND (created_at > ? OR (created_at = ? AND out_trade_no > ?)) AND created_at <= ?
		ORDER BY created_at, out_trade_no LIMIT ?`,
		PaymentCreated, PaymentClosed, afterAt, afterAt, afterNo, before, stalePage)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var due []stalePayment
	for rows.Next() {
		var s stalePayment
		if err := rows.Scan(&s.outTradeNo, &s.channel, &s.createdAt); err != nil {
			return nil, unavailable(err)
		}
		due = append(due, s)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(err)
	}
	return due, nil
}
