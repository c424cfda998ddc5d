package api_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// refundAsked waits until flashgrab has asked the sandbox to refund the
// payment outTradeNo.
func (p *payHarness) refundAsked(outTradeNo string) {
	p.t.Helper()
	testenv.Eventually(p.t, 30*time.Second, func() (bool, string) {
		return p.dev.WeChat.RefundStatus(settle.RefundNo(outTradeNo)) != "", fmt.Sprintf("no refund of %s asked yet", outTradeNo)
	})
}

// lateWeChatPayment makes an order whose WeChat payment arrives after the
// order expired, so flashgrab refunds it; with refunds held it returns with
// the refund asked and PROCESSING. It returns the order id and out_trade_no.
func (p *payHarness) lateWeChatPayment(sale string, price int) (string, string) {
	p.t.Helper()
	ctx := context.Background()
	oid := p.order(sale, price, 1)
	otn := p.pay(oid, pay.ChannelWeChat)
	p.notify.Down()
	if err := p.dev.WeChat.Pay(otn); err != nil {
		p.t.Fatal(err)
	}
	testenv.Eventually(p.t, 30*time.Second, func() (bool, string) {
		n := len(p.dev.WeChat.Deliveries(otn))
		return n >= 1, fmt.Sprintf("%d notifies of %s delivered, want 1", n, otn)
	})
	p.expire(oid)
	if err := p.sweeper.Sweep(ctx); err != nil {
		p.t.Fatal(err)
	}
	p.notify.Up()
	if err := p.dev.WeChat.Wait(waitCtx(p.t), otn); err != nil {
		p.t.Fatal(err)
	}
	p.refundAsked(otn)
	if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefunding {
		p.t.Fatalf("late payment %s is %q, want refunding", otn, pm.Status)
	}
	return oid, otn
}

// refundCount reads flashgrab_refunds_total{channel="wechat",outcome}.
func (p *payHarness) refundCount(outcome settle.RefundState) float64 {
	var m dto.Metric
	if err := p.payments.Metrics.Refunds.WithLabelValues(pay.ChannelWeChat, string(outcome)).Write(&m); err != nil {
		p.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestWeChatRefundAbnormalEndsRefundFailed: a refund WeChat Pay ends
// ABNORMAL (or CLOSED) leaves the buyer unpaid: the payment ends
// refund_failed, never refunded, the order stays cancelled, and the failure
// is counted.
func TestWeChatRefundAbnormalEndsRefundFailed(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	p.dev.WeChat.HoldRefunds(true)
	ctx := context.Background()
	for i, end := range []string{wechat.RefundAbnormal, wechat.RefundClosed} {
		oid, otn := p.lateWeChatPayment(fmt.Sprintf("ab%d", i), 500)
		if err := p.dev.WeChat.SetRefundOutcome(otn, end); err != nil {
			t.Fatal(err)
		}
		if err := p.dev.WeChat.SettleRefund(settle.RefundNo(otn)); err != nil {
			t.Fatal(err)
		}
		if err := p.dev.WeChat.WaitRefund(waitCtx(t), settle.RefundNo(otn)); err != nil {
			t.Fatal(err)
		}
		if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefundFailed {
			t.Fatalf("%s: payment %q, want refund_failed", end, pm.Status)
		}
		if s := p.orderStatus(oid); s != "cancelled" {
			t.Fatalf("%s: order %q, want cancelled (not refunded)", end, s)
		}
		// The sweeper's retry leaves a failed refund alone.
		if err := p.payments.RetryRefunds(ctx); err != nil {
			t.Fatal(err)
		}
		if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefundFailed {
			t.Fatalf("%s: after RetryRefunds payment %q", end, pm.Status)
		}
	}
	if f, s := p.refundCount(settle.RefundFailed), p.refundCount(settle.RefundSucceeded); f != 2 || s != 0 {
		t.Fatalf("refunds counted failed %v succeeded %v, want 2 and 0", f, s)
	}
	if got := p.dev.Wallets.Balance(sandbox.BuyerAccount); got != 99_999_00-1000 {
		t.Fatalf("buyer wallet %d, want 9998900: neither refund reached the buyer", got)
	}
}

// TestWeChatRefundFollowedByQuery: the refund's notify is lost; the
// sweeper's RetryRefunds queries the PROCESSING refund until it ends SUCCESS.
func TestWeChatRefundFollowedByQuery(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	p.dev.WeChat.HoldRefunds(true)
	ctx := context.Background()
	oid, otn := p.lateWeChatPayment("q", 700)
	if err := p.payments.RetryRefunds(ctx); err != nil { // still PROCESSING: nothing changes
		t.Fatal(err)
	}
	if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefunding {
		t.Fatalf("processing refund, payment %q", pm.Status)
	}
	p.notify.Down()
	if err := p.dev.WeChat.SettleRefund(settle.RefundNo(otn)); err != nil {
		t.Fatal(err)
	}
	if err := p.payments.RetryRefunds(ctx); err != nil {
		t.Fatal(err)
	}
	if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefunded || p.orderStatus(oid) != "refunded" {
		t.Fatalf("after the query: payment %q order %q, want refunded", pm.Status, p.orderStatus(oid))
	}
	// The notify, delivered late, finds it done and is acknowledged.
	p.notify.Up()
	if err := p.dev.WeChat.WaitRefund(waitCtx(t), settle.RefundNo(otn)); err != nil {
		t.Fatal(err)
	}
	if s := p.refundCount(settle.RefundSucceeded); s != 1 {
		t.Fatalf("refunds succeeded counted %v, want 1", s)
	}
	if got := p.dev.Wallets.Balance(sandbox.BuyerAccount); got != 99_999_00 {
		t.Fatalf("buyer wallet %d, want all back", got)
	}
}

// TestWeChatBadRefundNotifiesChangeNothing: forged and mismatched refund
// notifies, and one for a refund flashgrab never asked, are refused (400)
// and change nothing; 5 concurrent duplicates of a good one apply it once.
func TestWeChatBadRefundNotifiesChangeNothing(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	p.dev.WeChat.HoldRefunds(true)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		opt  sandbox.PayOption
	}{{"forged signature", sandbox.WithForgedSignature()}, {"amount mismatch", sandbox.WithAmountCents(1)}} {
		_, otn := p.lateWeChatPayment("bad"+c.name[:1], 600)
		if err := p.dev.WeChat.SettleRefund(settle.RefundNo(otn), c.opt); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			n := len(p.dev.WeChat.RefundDeliveries(settle.RefundNo(otn)))
			return n >= 1, fmt.Sprintf("%s: %d refund notifies delivered, want 1", c.name, n)
		})
		if d := p.dev.WeChat.RefundDeliveries(settle.RefundNo(otn))[0]; d.Status != 400 || d.Acked {
			t.Fatalf("%s: first delivery %+v, want 400 not acknowledged", c.name, d)
		}
		if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefunding {
			t.Fatalf("%s: payment %q, want still refunding", c.name, pm.Status)
		}
	}

	// A refund of a paid trade that flashgrab did not ask for.
	oid := p.order("paid", 300, 1)
	otn := p.pay(oid, pay.ChannelWeChat)
	if err := p.dev.WeChat.Pay(otn); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.WeChat.Wait(waitCtx(t), otn); err != nil {
		t.Fatal(err)
	}
	foreign := pay.WeChat{Client: p.wechatClient(t)}
	if _, err := foreign.Refund(ctx, otn, 300, 300, "Xforeign"); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.WeChat.SettleRefund("Xforeign"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := len(p.dev.WeChat.RefundDeliveries("Xforeign"))
		return n >= 1, fmt.Sprintf("%d notifies of the unknown refund delivered, want 1", n)
	})
	if d := p.dev.WeChat.RefundDeliveries("Xforeign")[0]; d.Status != 400 || d.Acked {
		t.Fatalf("unknown refund: first delivery %+v, want 400", d)
	}
	if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentPaid || p.orderStatus(oid) != "paid" || p.balance("m") != 300 {
		t.Fatalf("unknown refund changed the paid order: payment %q order %q merchant %v", pm.Status, p.orderStatus(oid), p.balance("m"))
	}

	// Duplicates of a good notify apply it once.
	oid, otn = p.lateWeChatPayment("dup", 900)
	if err := p.dev.WeChat.SettleRefund(settle.RefundNo(otn), sandbox.WithDuplicates(5)); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.WeChat.WaitRefund(waitCtx(t), settle.RefundNo(otn)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		acked := 0
		for _, d := range p.dev.WeChat.RefundDeliveries(settle.RefundNo(otn)) {
			if d.Acked {
				acked++
			}
		}
		return acked == 5, fmt.Sprintf("%d refund notifies acknowledged, want 5", acked)
	})
	if pm, _ := p.books.Payment(ctx, otn); pm.Status != settle.PaymentRefunded || p.orderStatus(oid) != "refunded" {
		t.Fatalf("duplicates: payment %q order %q", pm.Status, p.orderStatus(oid))
	}
	// The two refunds whose notifies were refused were found SUCCESS by the
	// query of the sweep inside lateWeChatPayment("dup"): 3 succeeded in all.
	if s, f := p.refundCount(settle.RefundSucceeded), p.refundCount(settle.RefundFailed); s != 3 || f != 0 {
		t.Fatalf("refunds counted succeeded %v failed %v, want 3 and 0", s, f)
	}
}

// TestWeChatClose: closing a trade WeChat Pay never saw succeeds, closing
// twice succeeds (the second answer is 400 ORDER_CLOSED), and closing a
// paid trade reports settle.ErrTradePaid.
func TestWeChatClose(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	ctx := context.Background()
	ch := pay.WeChat{Client: p.wechatClient(t)}
	if err := ch.Close(ctx, "FGNEVERSEEN_w"); err != nil {
		t.Fatalf("close of an unknown trade: %v", err)
	}
	oid := p.order("close", 100, 1)
	otn := p.pay(oid, pay.ChannelWeChat)
	for i := 0; i < 2; i++ {
		if err := ch.Close(ctx, otn); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
	oid = p.order("closepaid", 100, 1)
	otn = p.pay(oid, pay.ChannelWeChat)
	if err := p.dev.WeChat.Pay(otn); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(ctx, otn); !errors.Is(err, settle.ErrTradePaid) {
		t.Fatalf("close of a paid trade: %v, want ErrTradePaid", err)
	}
}

func (p *payHarness) wechatClient(t *testing.T) *wechat.Client {
	c, err := wechat.New(p.dev.WeChatClient)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
