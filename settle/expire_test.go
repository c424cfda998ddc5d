package settle_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// TestExpireOrdersFailsOnUnreadablePayment: a payment row of an expiring
// order that cannot be read (a NULL channel, made possible here by relaxing
// the column in the test's own database) fails the expiry, naming the
// order, and cancels nothing; it used to be skipped silently, leaving its
// trade open at the provider.
func TestExpireOrdersFailsOnUnreadablePayment(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, fp := newPayments(t, r)
	o := flashgrab.Order{ID: "9-0", SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1, AmountCents: 300, CreatedAt: time.Now().UTC()}
	if _, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"ALTER TABLE payments MODIFY channel VARCHAR(8) NULL", "UPDATE payments SET channel = NULL"} {
		if _, err := r.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.db.Exec("UPDATE orders SET expires_at = ?", time.Now().Add(-time.Second).UTC()); err != nil {
		t.Fatal(err)
	}
	released := 0
	n, err := p.ExpireOrders(ctx, func(context.Context, flashgrab.Order) error { released++; return nil })
	if err == nil || !strings.Contains(err.Error(), "expire order 9-0: read its payments") || n != 0 {
		t.Fatalf("ExpireOrders: %d, %v; want 0 and an error naming order 9-0", n, err)
	}
	if s := orderStatus(t, r, o.ID); s != settle.OrderPending || released != 0 || len(fp.closed) != 0 {
		t.Fatalf("order %s, released %d times, %d trades closed; want pending, 0, 0", s, released, len(fp.closed))
	}
}
