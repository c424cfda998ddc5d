package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/flashgrab/flashgrab"
)

// ExpireOrders cancels unpaid orders past their deadline, returns their stock
// to the sale through release (engine.ReleaseOrder), and closes their
// provider trades. The cancel is a compare-and-set on the order's status, the
// same one a paid notify makes, so an order ends either paid or cancelled,
// never both. A crash after the cancel is finished by the next sweep
// (released = 0).
func (p *Payments) ExpireOrders(ctx context.Context, release func(context.Context, flashgrab.Order) error) (int, error) {
	now := time.Now().UTC()
	rows, err := p.books.DB.QueryContext(ctx, `SELECT id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, status
		FROM orders WHERE (status = ? AND expires_at <= ?) OR (status IN (?, ?) AND released = 0) LIMIT 500`,
		OrderPending, now, OrderCancelled, OrderRefunded)
	if err != nil {
		return 0, unavailable(err)
	}
	type due struct {
		flashgrab.Order
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
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("expire orders: read due orders: %w", unavailable(err))
	}
	cancelled := 0
	for _, o := range orders {
		var toClose []Payment
		if o.status == OrderPending {
			won := false
			err := p.books.Tx(ctx, func(tx *sql.Tx) error {
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
					if err := prow.Scan(&pay.OutTradeNo, &pay.Channel); err != nil {
						prow.Close()
						return fmt.Errorf("expire order %s: read its payments: %w", o.ID, unavailable(err))
					}
					toClose = append(toClose, pay)
				}
				err = prow.Err()
				prow.Close()
				if err != nil {
					return fmt.Errorf("expire order %s: read its payments: %w", o.ID, unavailable(err))
				}
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
		switch err := release(ctx, o.Order); {
		case errors.Is(err, flashgrab.ErrRebuilding):
			// Its partition lost its Redis state and is fenced until rebuilt:
			// the order stays released = 0, the rebuild counts its units as
			// held, and a later sweep returns them. Orders of other
			// partitions go on meanwhile, and its trades are still closed.
			released = 0
		case errors.Is(err, flashgrab.ErrSaleGone):
			// Stranded: nothing in Redis to return the stock to; reconcile reports released = 2.
			released = 2
			p.Logger.Error("expired order's stock stranded", "order", o.ID, "sale", o.SaleID, "user", o.UserID, "qty", o.Qty, "err", err)
		case err != nil && !errors.Is(err, flashgrab.ErrNotFound):
			return cancelled, err
		}
		if released != 0 {
			if _, err := p.books.DB.ExecContext(ctx, `UPDATE orders SET released = ? WHERE id = ?`, released, o.ID); err != nil {
				return cancelled, unavailable(err)
			}
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
				p.Logger.Warn("close trade failed", "out_trade_no", pay.OutTradeNo, "err", err)
			}
		}
	}
	return cancelled, nil
}
