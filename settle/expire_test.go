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

// TestExpireOrdersGoesOnPastFencedPartition: an expired order whose
// partition is fenced (its Redis state lost, waiting for the rebuild) keeps
// its stock unreturned (released = 0) without stopping the sweep: the order
// of another partition is released, both are cancelled and both trades
// closed. The next sweep, after the rebuild, returns the first one's stock
// exactly once.
func TestExpireOrdersGoesOnPastFencedPartition(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, fp := newPayments(t, r)
	fenced, other := "9-0", "9-1"
	for _, id := range []string{fenced, other} {
		o := flashgrab.Order{ID: id, SaleID: "s", UserID: "u" + id, MerchantID: "m", Qty: 1, AmountCents: 300, CreatedAt: time.Now().UTC()}
		if _, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.db.Exec("UPDATE orders SET expires_at = ?", time.Now().Add(-time.Second).UTC()); err != nil {
		t.Fatal(err)
	}
	releasedOf := func(id string) (n int) {
		if err := r.db.QueryRow("SELECT released FROM orders WHERE id = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	calls := map[string]int{}
	n, err := p.ExpireOrders(ctx, func(_ context.Context, o flashgrab.Order) error {
		calls[o.ID]++
		if o.ID == fenced {
			return flashgrab.ErrRebuilding
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("ExpireOrders with one partition fenced: %d, %v; want 2 cancelled, no error", n, err)
	}
	if releasedOf(fenced) != 0 || releasedOf(other) != 1 || len(fp.closed) != 2 {
		t.Fatalf("released %d and %d, %d trades closed; want 0 (fenced), 1, 2", releasedOf(fenced), releasedOf(other), len(fp.closed))
	}
	for _, id := range []string{fenced, other} {
		if s := orderStatus(t, r, id); s != settle.OrderCancelled {
			t.Fatalf("order %s is %s, want cancelled", id, s)
		}
	}
	// The partition is back: the next sweep returns the fenced order's stock, once.
	n, err = p.ExpireOrders(ctx, func(_ context.Context, o flashgrab.Order) error { calls[o.ID]++; return nil })
	if err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v; want 0 newly cancelled, no error", n, err)
	}
	if releasedOf(fenced) != 1 || calls[fenced] != 2 || calls[other] != 1 {
		t.Fatalf("after the rebuild: released %d, release called %v; want 1, %s twice and %s once", releasedOf(fenced), calls, fenced, other)
	}
}
