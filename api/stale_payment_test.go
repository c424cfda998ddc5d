package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/settle"
)

// scan opens the trade's pay_url as the buyer's phone would on scanning the
// QR code: the Alipay sandbox, like Alipay, knows a precreate trade only then.
func (p *payHarness) scan(outTradeNo string) {
	p.t.Helper()
	pm, err := p.books.Payment(context.Background(), outTradeNo)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := http.Get(pm.PayURL)
	if err != nil {
		p.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("scan %s: HTTP %d", pm.PayURL, resp.StatusCode)
	}
}

// TestAlipayPaidWithoutNotifyIsSettled: Alipay payments whose notify is
// never delivered. One order is paid and then expires: the expirer's close
// finds the trade paid, the query confirms it, and the payment is refunded
// (order refunded, stock returned once, buyer's money back). Another order,
// paid and still open, is found by the sweeper's stale-payment query and
// paid: the merchant is credited exactly once however often it sweeps. An
// unscanned trade is closed as the gateway's ACQ.TRADE_NOT_EXIST.
func TestAlipayPaidWithoutNotifyIsSettled(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	ctx := context.Background()
	wallet := p.dev.Wallets.Balance(sandbox.BuyerAccount)

	// Unscanned, then expired: the close answers ACQ.TRADE_NOT_EXIST, which
	// is a closed trade, and the sweep succeeds.
	idle := p.order("idle", 100, 1)
	idleNo := p.pay(idle, pay.ChannelAlipay)
	p.expire(idle)
	if err := p.sweeper.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if pm, err := p.books.Payment(ctx, idleNo); err != nil || pm.Status != settle.PaymentClosed {
		t.Fatalf("unscanned expired payment %+v, %v; want closed", pm, err)
	}

	// Paid without notify, then expired: refunded by the expirer.
	cancelled := p.order("gone", 300, 2)
	goneNo := p.pay(cancelled, pay.ChannelAlipay)
	if err := p.dev.Alipay.Pay(goneNo, sandbox.WithoutNotify()); err != nil {
		t.Fatal(err)
	}
	_, before := p.do("GET", "/v1/sales/gone", "", "")
	p.expire(cancelled)
	for i := 0; i < 3; i++ {
		if err := p.sweeper.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		st := p.orderStatus(cancelled)
		return st == "refunded", "order " + cancelled + " is " + st + ", want refunded"
	})
	if pm, err := p.books.Payment(ctx, goneNo); err != nil || pm.Status != settle.PaymentRefunded {
		t.Fatalf("payment %+v, %v; want refunded", pm, err)
	}
	_, after := p.do("GET", "/v1/sales/gone", "", "")
	if before["stock"].(float64)+2 != after["stock"].(float64) {
		t.Fatalf("stock %v → %v: want the 2 units back exactly once", before["stock"], after["stock"])
	}
	if got := p.dev.Wallets.Balance(sandbox.BuyerAccount); got != wallet {
		t.Fatalf("buyer wallet %d, want %d: the cancelled order's 600 fen back once", got, wallet)
	}

	// Paid without notify, order still open: the stale sweep pays it.
	open := p.order("open", 500, 1)
	openNo := p.pay(open, pay.ChannelAlipay)
	if err := p.dev.Alipay.Pay(openNo, sandbox.WithoutNotify()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.db.Exec("UPDATE payments SET created_at = ? WHERE out_trade_no = ?",
		time.Now().Add(-2*time.Hour).UTC(), openNo); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := p.sweeper.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.payments.QueryStale(ctx, time.Now().Add(-26*time.Hour), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.orderStatus(open); s != "paid" {
		t.Fatalf("order %q, want paid", s)
	}
	if b := p.balance("m"); b != 500 {
		t.Fatalf("merchant balance %v, want 500 (credited once)", b)
	}
	if d := p.dev.Alipay.Deliveries(openNo); d != nil {
		t.Fatalf("the sandbox notified %d times although told not to", len(d))
	}
	rep, err := p.reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("reconcile: %+v", rep.Checks)
	}
}
