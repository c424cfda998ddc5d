package pay_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/settle"
)

// alipayChannel is the Alipay channel on a local sandbox whose notifies go
// nowhere (the tests pay without notify).
func alipayChannel(t *testing.T) (pay.Alipay, *sandbox.Dev) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	dev, err := sandbox.NewDev(srv.URL, "http://127.0.0.1:1", 0.001)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	mux.Handle("/", dev.Handler())
	c, err := alipay.New(dev.AlipayClient)
	if err != nil {
		t.Fatal(err)
	}
	return pay.Alipay{Client: c}, dev
}

func precreate(t *testing.T, a pay.Alipay, no string, cents int64) string {
	t.Helper()
	url, err := a.Create(context.Background(), settle.Trade{OutTradeNo: no, AmountCents: cents, Subject: "order " + no,
		Expire: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// TestAlipayCloseAndQueryBeforeScan: an unscanned precreate trade is
// ACQ.TRADE_NOT_EXIST to the gateway; the channel treats it as closed and
// unpaid rather than as a failure.
func TestAlipayCloseAndQueryBeforeScan(t *testing.T) {
	a, _ := alipayChannel(t)
	ctx := context.Background()
	precreate(t, a, "C1", 500)
	if err := a.Close(ctx, "C1"); err != nil {
		t.Fatalf("close before scan: %v", err)
	}
	st, err := a.Query(ctx, "C1")
	if err != nil || st.Paid {
		t.Fatalf("query before scan = %+v, %v", st, err)
	}
}

// TestAlipayCloseOfPaidTrade: closing a paid trade (ACQ.TRADE_STATUS_ERROR)
// is decided by a query and reported as settle.ErrTradePaid.
func TestAlipayCloseOfPaidTrade(t *testing.T) {
	a, dev := alipayChannel(t)
	ctx := context.Background()
	precreate(t, a, "C2", 800)
	if err := dev.Alipay.Pay("C2", sandbox.WithoutNotify()); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx, "C2"); !errors.Is(err, settle.ErrTradePaid) {
		t.Fatalf("close of a paid trade: %v, want ErrTradePaid", err)
	}
	st, err := a.Query(ctx, "C2")
	if err != nil || !st.Paid || st.AmountCents != 800 || st.TradeNo == "" || st.PaidAt.IsZero() {
		t.Fatalf("query = %+v, %v", st, err)
	}
}

// TestAlipayRefundRepeatQueries: the first refund moves the money
// (fund_change Y); a repeat answers fund_change N, and the refund query
// confirms it succeeded. The buyer gets the money back once.
func TestAlipayRefundRepeatQueries(t *testing.T) {
	a, dev := alipayChannel(t)
	ctx := context.Background()
	precreate(t, a, "C3", 1200)
	buyer := dev.Wallets.Balance(sandbox.BuyerAccount)
	if err := dev.Alipay.Pay("C3", sandbox.WithoutNotify()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		st, err := a.Refund(ctx, "C3", 1200, 1200, "RC3")
		if err != nil || st != settle.RefundSucceeded {
			t.Fatalf("refund %d = %q, %v", i, st, err)
		}
	}
	if got := dev.Wallets.Balance(sandbox.BuyerAccount); got != buyer {
		t.Fatalf("buyer balance %d after refunds, want %d (refunded exactly once)", got, buyer)
	}
	if st, err := a.QueryRefund(ctx, "C3", "RC3"); err != nil || st != settle.RefundSucceeded {
		t.Fatalf("refund query = %q, %v", st, err)
	}
	// A refund Alipay does not know must not read as processing: the
	// caller would wait for it forever instead of asking for it.
	if st, err := a.QueryRefund(ctx, "C3", "NEVER"); !errors.Is(err, settle.ErrRefundNotFound) {
		t.Fatalf("query of a refund never asked = %q, %v; want ErrRefundNotFound", st, err)
	}
}
