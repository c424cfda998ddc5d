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

// queriedProvider is a provider whose trades tests mark paid without any
// notify: Close of a paid trade wraps ErrTradePaid, Query tells the truth,
// and refunds are idempotent by refund number, as the real providers are.
type queriedProvider struct {
	mu      sync.Mutex
	paid    map[string]int64 // out_trade_no → fen
	queries map[string]int
	refunds map[string]int64 // refund number → fen
}

func newQueriedProvider() *queriedProvider {
	return &queriedProvider{paid: map[string]int64{}, queries: map[string]int{}, refunds: map[string]int64{}}
}

func (q *queriedProvider) pay(no string, cents int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.paid[no] = cents
}

func (q *queriedProvider) Create(_ context.Context, t settle.Trade) (string, error) {
	return "https://pay.example/" + t.OutTradeNo, nil
}

func (q *queriedProvider) Close(_ context.Context, no string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.paid[no]; ok {
		return fmt.Errorf("close %s: %w", no, settle.ErrTradePaid)
	}
	return nil
}

func (q *queriedProvider) Query(_ context.Context, no string) (settle.TradeState, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queries[no]++
	cents, ok := q.paid[no]
	if !ok {
		return settle.TradeState{}, nil
	}
	return settle.TradeState{Paid: true, TradeNo: "T" + no, AmountCents: cents, PaidAt: time.Now()}, nil
}

func (q *queriedProvider) Refund(_ context.Context, no string, cents, _ int64, refundNo string) (settle.RefundState, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.refunds[refundNo] = cents
	return settle.RefundSucceeded, nil
}

func (q *queriedProvider) QueryRefund(_ context.Context, _, refundNo string) (settle.RefundState, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.refunds[refundNo]; ok {
		return settle.RefundSucceeded, nil
	}
	return "", fmt.Errorf("refund %s: %w", refundNo, settle.ErrRefundNotFound)
}

func (q *queriedProvider) snapshot() (queries map[string]int, refunded int64, refunds int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	queries = map[string]int{}
	for k, v := range q.queries {
		queries[k] = v
	}
	for _, c := range q.refunds {
		refunded += c
	}
	return queries, refunded, len(q.refunds)
}

func newQueriedPayments(t *testing.T, r *rig) (*settle.Payments, *queriedProvider) {
	q := newQueriedProvider()
	p := settle.NewPayments(r.books, map[string]settle.Provider{"alipay": q})
	t.Cleanup(p.Close)
	return p, q
}

// waitPaymentStatus polls until the payment has the status (the refund of a
// late payment runs in the background) or the deadline passes.
func waitPaymentStatus(t *testing.T, b *settle.Books, no, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pm, err := b.Payment(context.Background(), no)
		if err == nil && pm.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("payment %s is %q (%v), want %s", no, pm.Status, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func orderStatus(t *testing.T, r *rig, id string) string {
	t.Helper()
	var s string
	if err := r.db.QueryRow("SELECT status FROM orders WHERE id = ?", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestExpiredOrderPaidWithoutNotifyIsRefunded: the buyer paid, the notify
// never came, the order expired. Closing the trade finds it paid; the
// expirer queries it and refunds it through the normal paid path: payment
// and order end refunded, the stock is returned once, the merchant gets
// nothing, and the buyer is refunded exactly the amount, once.
func TestExpiredOrderPaidWithoutNotifyIsRefunded(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, q := newQueriedPayments(t, r)
	o := flashgrab.Order{ID: "7-0", SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1, AmountCents: 450, CreatedAt: time.Now().UTC()}
	pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
	if err != nil {
		t.Fatal(err)
	}
	q.pay(pm.OutTradeNo, 450)
	if _, err := r.db.Exec("UPDATE orders SET expires_at = ?", time.Now().Add(-time.Second).UTC()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	released := 0
	release := func(context.Context, flashgrab.Order) error { mu.Lock(); released++; mu.Unlock(); return nil }
	for i := 0; i < 3; i++ { // later sweeps find nothing more to do
		n, err := p.ExpireOrders(ctx, release)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[i == 0]; n != want {
			t.Fatalf("sweep %d cancelled %d orders, want %d", i, n, want)
		}
	}
	waitPaymentStatus(t, r.books, pm.OutTradeNo, settle.PaymentRefunded)
	if s := orderStatus(t, r, o.ID); s != settle.OrderRefunded {
		t.Fatalf("order is %s, want refunded", s)
	}
	queries, refunded, refunds := q.snapshot()
	if queries[pm.OutTradeNo] != 1 || refunded != 450 || refunds != 1 || released != 1 {
		t.Fatalf("%d queries, %d fen refunded in %d refunds, released %d times; want 1, 450, 1, 1",
			queries[pm.OutTradeNo], refunded, refunds, released)
	}
	if a, err := r.books.Account(ctx, "m"); err == nil && a.BalanceCents != 0 || err != nil && !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("the merchant of a cancelled order: %+v, %v; want nothing credited", a, err)
	}
}

// TestQueryStaleSettlesPaymentsWithoutNotify: of three payments, one paid
// without a notify, one unpaid, one too young: the sweep applies the paid
// one (order paid, merchant credited once), leaves the unpaid one created,
// and does not ask about the young one. Asked again, nothing changes.
func TestQueryStaleSettlesPaymentsWithoutNotify(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, q := newQueriedPayments(t, r)
	var nos []string
	for i, id := range []string{"21-0", "22-0", "23-0"} {
		o := flashgrab.Order{ID: id, SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1, AmountCents: int64(100 * (i + 1)),
			CreatedAt: time.Now().UTC()}
		pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
		if err != nil {
			t.Fatal(err)
		}
		nos = append(nos, pm.OutTradeNo)
	}
	q.pay(nos[0], 100)
	q.pay(nos[2], 300) // paid too, but too young to be asked about
	now := time.Now()
	if _, err := r.db.Exec("UPDATE payments SET created_at = ? WHERE out_trade_no IN (?, ?)",
		now.Add(-2*time.Hour).UTC(), nos[0], nos[1]); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		paid, err := p.QueryStale(ctx, now.Add(-26*time.Hour), now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[round == 0]; paid != want {
			t.Fatalf("round %d: %d paid, want %d", round, paid, want)
		}
	}
	queries, _, _ := q.snapshot()
	if queries[nos[0]] != 1 || queries[nos[1]] != 2 || queries[nos[2]] != 0 {
		t.Fatalf("queries %v: want the paid one once, the unpaid one twice, the young one never", queries)
	}
	for no, want := range map[string]string{nos[0]: settle.PaymentPaid, nos[1]: settle.PaymentCreated, nos[2]: settle.PaymentCreated} {
		if pm, err := r.books.Payment(ctx, no); err != nil || pm.Status != want {
			t.Fatalf("payment %s is %q (%v), want %s", no, pm.Status, err, want)
		}
	}
	if s := orderStatus(t, r, "21-0"); s != settle.OrderPaid {
		t.Fatalf("order 21-0 is %s, want paid", s)
	}
	if a, err := r.books.Account(ctx, "m"); err != nil || a.BalanceCents != 100 || a.Version != 1 {
		t.Fatalf("merchant %+v (%v), want 100 fen at version 1", a, err)
	}
}

// TestSweeperQueriesStalePayments: the sweeper asks about payments older
// than StaleAge (default an hour) once per StaleEvery: a trade paid without
// a notify two hours ago is settled by the first sweep, and a second sweep
// right after asks nothing.
func TestSweeperQueriesStalePayments(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, q := newQueriedPayments(t, r)
	o := flashgrab.Order{ID: "31-0", SaleID: "s", UserID: "u", MerchantID: "m", Qty: 1, AmountCents: 250, CreatedAt: time.Now().UTC()}
	pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
	if err != nil {
		t.Fatal(err)
	}
	q.pay(pm.OutTradeNo, 250)
	if _, err := r.db.Exec("UPDATE payments SET created_at = ?", time.Now().Add(-2*time.Hour).UTC()); err != nil {
		t.Fatal(err)
	}
	w := settle.NewSweeper(r.eng, r.books, p)
	for i := 0; i < 2; i++ {
		if err := w.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if queries, _, _ := q.snapshot(); queries[pm.OutTradeNo] != 1 {
		t.Fatalf("%d queries, want 1", queries[pm.OutTradeNo])
	}
	if a, err := r.books.Account(ctx, "m"); err != nil || a.BalanceCents != 250 {
		t.Fatalf("merchant %+v (%v), want 250 fen", a, err)
	}
}
