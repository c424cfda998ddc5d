package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/flashgrab/flashgrab"
)

// Order statuses in MySQL.
const (
	OrderPending   = "pending"
	OrderPaid      = "paid"
	OrderCancelled = "cancelled"
	OrderRefunded  = "refunded"
)

// OrderState is a settled order with its payment status.
type OrderState struct {
	flashgrab.Order
	Status     string
	Channel    string
	OutTradeNo string
	ExpiresAt  time.Time
	PaidAt     *time.Time
}

// Order returns the settled order; ErrNotFound while it is not settled yet.
func (b *Books) Order(ctx context.Context, id string) (OrderState, error) {
	var o OrderState
	var channel, outTradeNo sql.NullString
	var paidAt sql.NullTime
	err := b.DB.QueryRowContext(ctx, `SELECT id, sale_id, user_id, merchant_id, qty, amount_cents, status,
		channel, out_trade_no, created_at, expires_at, paid_at FROM orders WHERE id = ?`, id).
		Scan(&o.ID, &o.SaleID, &o.UserID, &o.MerchantID, &o.Qty, &o.AmountCents, &o.Status,
			&channel, &outTradeNo, &o.CreatedAt, &o.ExpiresAt, &paidAt)
	if errors.Is(err, sql.ErrNoRows) {
		return OrderState{}, fmt.Errorf("order %s: %w", id, flashgrab.ErrNotFound)
	}
	if err != nil {
		return OrderState{}, fmt.Errorf("get order %s: %w", id, unavailable(err))
	}
	o.Channel, o.OutTradeNo = channel.String, outTradeNo.String
	if paidAt.Valid {
		t := paidAt.Time.UTC()
		o.PaidAt = &t
	}
	o.CreatedAt, o.ExpiresAt = o.CreatedAt.UTC(), o.ExpiresAt.UTC()
	return o, nil
}
