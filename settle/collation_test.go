package settle_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// Ids are case-sensitive in Redis and the engine; these tests show MySQL
// keeps ids that differ only in case apart (before, utf8mb4_general_ci made
// them one key).

// balances returns the given accounts' balances; a missing account is -1.
func (r *rig) balances(t *testing.T, ids ...string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, id := range ids {
		a, err := r.books.Account(context.Background(), id)
		if err != nil {
			out[id] = -1
			continue
		}
		out[id] = a.BalanceCents
	}
	return out
}

// TestCaseDistinctGrabsAndSalesSettle: "Bob" grabs a share while "bob"
// already has an account, both grab the same packet, and sales "Promo" and
// "promo" are created; all settle apart, nothing is dead-lettered, and the
// partition goes on settling.
func TestCaseDistinctGrabsAndSalesSettle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.books.Credit(ctx, "bob", 100, "seed-bob"); err != nil {
		t.Fatal(err)
	}
	r.meteredSettler(t, "a", time.Minute)
	now := time.Now().UnixMilli()
	grab := func(pkt, user string, amt, seq int) {
		r.addEvent(t, 0, "k", flashgrab.EventGrab, "pkt", pkt, "sender", "s", "user", user, "amt", amt, "seq", seq, "at", now)
	}
	grab("P", "Bob", 30, 1)
	grab("P", "bob", 20, 2)
	for _, id := range []string{"Promo", "promo"} {
		r.addEvent(t, 0, "k", flashgrab.EventSale, "id", id, "mch", "m", "price", 100, "stock", 5, "limit", 1,
			"start", now, "end", now+3600_000)
	}
	r.addOrder(t, 0, "1-0", "Bob")
	r.addOrder(t, 0, "1-1", "bob")
	r.waitDrained(t)
	grab("Q", "carol", 5, 1) // after: the partition still settles
	r.waitDrained(t)

	if b := r.balances(t, "bob", "Bob", "carol"); b["bob"] != 120 || b["Bob"] != 30 || b["carol"] != 5 {
		t.Fatalf("balances %v, want bob 120, Bob 30, carol 5", b)
	}
	var grabs, sales int
	r.db.QueryRow("SELECT COUNT(*) FROM packet_grabs").Scan(&grabs)
	r.db.QueryRow("SELECT COUNT(*) FROM sales WHERE id IN ('Promo', 'promo')").Scan(&sales)
	if grabs != 3 || sales != 2 {
		t.Fatalf("%d packet grabs and %d sales, want 3 and 2", grabs, sales)
	}
	if users := r.orderUsers(t); len(users) != 2 || users["1-0"] != "Bob" || users["1-1"] != "bob" {
		t.Fatalf("orders %v, want 1-0 Bob's and 1-1 bob's", users)
	}
	if n := len(r.deadLetters(t, 0)); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}

// TestCaseDistinctCreditRefs: credit refs "A" and "a" are two credits.
func TestCaseDistinctCreditRefs(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.books.Credit(ctx, "x", 1, "A"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.books.Credit(ctx, "x", 2, "a"); err != nil {
		t.Fatalf("credit ref a after A: %v", err)
	}
	if b := r.balances(t, "x"); b["x"] != 3 {
		t.Fatalf("balance %d, want 3", b["x"])
	}
}

// TestCaseDistinctPayees: paid notifies for merchants "Apple" and "apple",
// and a top-up by "Bob" while "bob" has an account, each credit their own
// account.
func TestCaseDistinctPayees(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p, _ := newPayments(t, r)
	if _, err := r.books.Credit(ctx, "bob", 100, "seed-bob"); err != nil {
		t.Fatal(err)
	}
	var nos []string
	for i, mch := range []string{"apple", "Apple"} {
		o := flashgrab.Order{ID: []string{"5-0", "6-0"}[i], SaleID: "s", UserID: "u", MerchantID: mch, Qty: 1,
			AmountCents: int64(300 + i), CreatedAt: time.Now().UTC()}
		pm, err := p.PayOrder(ctx, o, "alipay", settle.MethodQR)
		if err != nil {
			t.Fatal(err)
		}
		nos = append(nos, pm.OutTradeNo)
	}
	top, err := p.Topup(ctx, "t1", "Bob", 500, "alipay")
	if err != nil {
		t.Fatal(err)
	}
	for i, no := range append(nos, top.OutTradeNo) {
		amt := []int64{300, 301, 500}[i]
		if out, err := p.Paid(ctx, settle.Notice{Channel: "alipay", OutTradeNo: no, TradeNo: no, AmountCents: amt}); err != nil || out != settle.Applied {
			t.Fatalf("paid %s: %v %v", no, out, err)
		}
	}
	if b := r.balances(t, "apple", "Apple", "bob", "Bob"); b["apple"] != 300 || b["Apple"] != 301 || b["bob"] != 100 || b["Bob"] != 500 {
		t.Fatalf("balances %v, want apple 300, Apple 301, bob 100, Bob 500", b)
	}
}
