package settle_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// fakeProvider opens trades and records closes and refunds; the provider
// protocols themselves are tested against the sandbox in api/.
type fakeProvider struct {
	mu      sync.Mutex
	refunds map[string]int64
	closed  map[string]bool
}

func (f *fakeProvider) Create(_ context.Context, t settle.Trade) (string, error) {
	return "https://pay.example/" + t.OutTradeNo, nil
}

func (f *fakeProvider) Close(_ context.Context, no string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed[no] = true
	return nil
}

func (f *fakeProvider) Query(_ context.Context, no string) (settle.TradeState, error) {
	return settle.TradeState{}, nil
}

func (f *fakeProvider) Refund(_ context.Context, no string, cents, _ int64, _ string) (settle.RefundState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refunds[no] += cents
	return settle.RefundSucceeded, nil
}

// QueryRefund knows only refunds asked before, as providers do (WeChat
// answers 404 RESOURCE_NOT_EXISTS for others).
func (f *fakeProvider) QueryRefund(_ context.Context, no, refundNo string) (settle.RefundState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refunds[no] == 0 {
		return "", fmt.Errorf("refund %s of %s: not found", refundNo, no)
	}
	return settle.RefundSucceeded, nil
}

func newPayments(t *testing.T, r *rig) (*settle.Payments, *fakeProvider) {
	fp := &fakeProvider{refunds: map[string]int64{}, closed: map[string]bool{}}
	p := settle.NewPayments(r.books, map[string]settle.Provider{"alipay": fp})
	t.Cleanup(p.Close)
	return p, fp
}

// TestPaidIsIdempotentAndChecked: the same notify applied again, from many
// goroutines at once and later, credits once; unknown trades, other
// channels and wrong amounts change nothing.
func TestPaidIsIdempotentAndChecked(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, _ := newPayments(t, r)
	o := flashgrab.Order{ID: "1-0", SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1, AmountCents: 300, CreatedAt: time.Now().UTC()}
	pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []settle.Notice{
		{Channel: "alipay", OutTradeNo: "nope", AmountCents: 300},
		{Channel: "wechat", OutTradeNo: pm.OutTradeNo, AmountCents: 300},
		{Channel: "alipay", OutTradeNo: pm.OutTradeNo, AmountCents: 299},
	} {
		if _, err := p.Paid(ctx, bad); !errors.Is(err, settle.ErrUnknownTrade) && !errors.Is(err, settle.ErrAmountMismatch) {
			t.Fatalf("bad notice %+v: %v", bad, err)
		}
	}
	if _, err := r.books.Account(ctx, "m"); !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("bad notices touched the merchant: %v", err)
	}
	n := settle.Notice{Channel: "alipay", OutTradeNo: pm.OutTradeNo, TradeNo: "T1", AmountCents: 300}
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[settle.Outcome]int{}
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := p.Paid(ctx, n)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			outcomes[out]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if outcomes[settle.Applied] != 1 || outcomes[settle.Duplicate] != 19 {
		t.Fatalf("outcomes %v, want 1 applied and 19 duplicates", outcomes)
	}
	if out, err := p.Paid(ctx, n); err != nil || out != settle.Duplicate {
		t.Fatalf("late replay: %v %v", out, err)
	}
	if a, _ := r.books.Account(ctx, "m"); a.BalanceCents != 300 || a.Version != 1 {
		t.Fatalf("merchant %+v, want 300 at version 1", a)
	}
}

// TestExpiryRacesPayment: the expirer and a paid notify race for the same
// order many times; each order ends either paid and credited or cancelled
// (stock released) and refunded — never both, never neither.
func TestExpiryRacesPayment(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, fp := newPayments(t, r)
	const orders = 40
	var nos []string
	for i := 0; i < orders; i++ {
		o := flashgrab.Order{ID: fmt.Sprintf("%d-0", 1000+i), SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1,
			AmountCents: 100, CreatedAt: time.Now().UTC()}
		pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
		if err != nil {
			t.Fatal(err)
		}
		nos = append(nos, pm.OutTradeNo)
	}
	if _, err := r.db.Exec("UPDATE orders SET expires_at = ?", time.Now().Add(-time.Second).UTC()); err != nil {
		t.Fatal(err)
	}
	var released sync.Map
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if _, err := p.ExpireOrders(ctx, func(_ context.Context, o flashgrab.Order) error { released.Store(o.ID, true); return nil }); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		// From the other end, so that the two meet somewhere in the middle.
		for i := len(nos) - 1; i >= 0; i-- {
			if _, err := p.Paid(ctx, settle.Notice{Channel: "alipay", OutTradeNo: nos[i], AmountCents: 100}); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	if err := p.RetryRefunds(ctx); err != nil {
		t.Fatal(err)
	}
	var paid, refunded int
	rows, _ := r.db.Query("SELECT id, status FROM orders")
	for rows.Next() {
		var id, status string
		rows.Scan(&id, &status)
		_, rel := released.Load(id)
		switch {
		case status == settle.OrderPaid && !rel:
			paid++
		case status == settle.OrderRefunded && rel:
			refunded++
		default:
			t.Errorf("order %s ended %s (released %v)", id, status, rel)
		}
	}
	rows.Close()
	a, _ := r.books.Account(ctx, "m")
	fp.mu.Lock()
	nrefunds := len(fp.refunds)
	fp.mu.Unlock()
	t.Logf("%d orders paid, %d cancelled and refunded", paid, refunded)
	if paid == 0 || refunded == 0 {
		t.Logf("the race was one-sided this time; the invariant below holds either way")
	}
	if paid+refunded != orders || a.BalanceCents != int64(paid*100) || nrefunds != refunded {
		t.Fatalf("%d paid + %d refunded of %d; merchant %d fen; %d refunds", paid, refunded, orders, a.BalanceCents, nrefunds)
	}
}

// TestExpiryOfOrderWithGoneSaleIsStranded is issue 13 item 11 on the MySQL
// side: an expired order whose sale Redis no longer has cannot get its stock
// back; it is cancelled and marked released = 2 (stranded, for reconcile),
// not 1, and the next sweep does not pick it up again.
func TestExpiryOfOrderWithGoneSaleIsStranded(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, _ := newPayments(t, r)
	now := time.Now()
	if _, err := r.eng.CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m", PriceCents: 100, Stock: 5, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var orders []flashgrab.Order
	for _, u := range []string{"alice", "bob"} {
		won, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: u, Qty: 1})
		if err != nil {
			t.Fatal(err)
		}
		o, err := r.eng.Order(ctx, won.OrderID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR); err != nil { // writes the order to MySQL
			t.Fatal(err)
		}
		orders = append(orders, o)
	}
	// bob's record is gone (released from MySQL's facts); then the whole sale.
	pt := r.keys.Partition("s1")
	if err := r.rdb.HDel(ctx, r.keys.Orders(pt, orders[1].ID), orders[1].ID).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.db.Exec("UPDATE orders SET expires_at = ?", now.Add(-time.Second).UTC()); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.Del(ctx, r.keys.Sale(pt, "s1"), r.keys.Buyers(pt, "s1")).Err(); err != nil {
		t.Fatal(err)
	}
	release := func(ctx context.Context, o flashgrab.Order) error { _, err := r.eng.ReleaseOrder(ctx, o); return err }
	if n, err := p.ExpireOrders(ctx, release); err != nil || n != 2 {
		t.Fatalf("expire: %d %v, want 2 cancelled", n, err)
	}
	if n, err := p.ExpireOrders(ctx, release); err != nil || n != 0 {
		t.Fatalf("second sweep: %d %v, want nothing", n, err)
	}
	for _, o := range orders {
		var status string
		var released int
		if err := r.db.QueryRow("SELECT status, released FROM orders WHERE id = ?", o.ID).Scan(&status, &released); err != nil {
			t.Fatal(err)
		}
		if status != settle.OrderCancelled || released != 2 {
			t.Errorf("order %s of %s: %s released=%d, want cancelled and released=2", o.ID, o.UserID, status, released)
		}
	}
}
