// Package pay adapts the thin provider clients (pay/alipay, pay/wechat) to
// what settlement needs of a payment channel (settle.Provider). The clients
// and the local provider simulator (pay/sandbox) live in the subpackages.
package pay

import (
	"context"
	"errors"
	"fmt"

	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// Channel names, as clients send them.
const (
	ChannelAlipay = "alipay"
	ChannelWeChat = "wechat"
)

// Alipay is the Alipay channel: alipay.trade.precreate, the payer opens (or
// scans) the returned qr_code URL. Precreate rather than page pay, because it
// makes the trade exist at once, so an expired order's trade can be closed.
type Alipay struct{ Client *alipay.Client }

// Create precreates the trade and returns its qr_code URL.
func (a Alipay) Create(ctx context.Context, t settle.Trade) (string, error) {
	return a.Client.Precreate(ctx, alipay.Trade{OutTradeNo: t.OutTradeNo, AmountCents: t.AmountCents, Subject: t.Subject, Expire: t.Expire})
}

// Close closes the trade. A trade Alipay does not know (a precreate trade
// nobody has scanned yet) or closed already needs nothing more. Alipay
// answers ACQ.TRADE_STATUS_ERROR both for a paid trade and for one closed by
// a full refund, so that answer is decided by a query: paid wraps
// settle.ErrTradePaid.
func (a Alipay) Close(ctx context.Context, outTradeNo string) error {
	err := a.Client.Close(ctx, outTradeNo)
	if err == nil || errors.Is(err, alipay.ErrTradeNotExist) || errors.Is(err, alipay.ErrTradeHasClose) {
		return nil
	}
	if !errors.Is(err, alipay.ErrTradeStatus) {
		return err
	}
	st, qerr := a.Client.Query(ctx, outTradeNo)
	if qerr != nil {
		return fmt.Errorf("%w; and the query to decide it: %v", err, qerr)
	}
	if st.Paid {
		return fmt.Errorf("alipay close %s: trade is %s: %w", outTradeNo, st.Status, settle.ErrTradePaid)
	}
	if st.Status == alipay.StatusTradeClosed {
		return nil
	}
	return err
}

// Query asks alipay.trade.query for the trade's state.
func (a Alipay) Query(ctx context.Context, outTradeNo string) (settle.TradeState, error) {
	st, err := a.Client.Query(ctx, outTradeNo)
	if errors.Is(err, alipay.ErrTradeNotExist) {
		// Nobody scanned the QR code: nothing was paid.
		return settle.TradeState{}, nil
	}
	if err != nil {
		return settle.TradeState{}, err
	}
	return settle.TradeState{Paid: st.Paid, TradeNo: st.TradeNo, AmountCents: st.TotalCents, PaidAt: st.PaidAt}, nil
}

// Refund refunds through alipay.trade.refund, idempotent by refundNo.
// fund_change Y means this call moved the money. N means it did not: a
// repeat of a refund already made, or one Alipay has not finished; the
// refund query tells which.
func (a Alipay) Refund(ctx context.Context, outTradeNo string, refundCents, _ int64, refundNo string) (settle.RefundState, error) {
	r, err := a.Client.Refund(ctx, outTradeNo, refundCents, refundNo)
	if err != nil {
		return "", err
	}
	if r.FundChange {
		return settle.RefundSucceeded, nil
	}
	return a.QueryRefund(ctx, outTradeNo, refundNo)
}

// QueryRefund asks alipay.trade.fastpay.refund.query where a refund stands:
// REFUND_SUCCESS is done; anything else is still processing (Alipay has no
// final failure for a refund it accepted, and repeating alipay.trade.refund
// with the same refundNo is safe).
func (a Alipay) QueryRefund(ctx context.Context, outTradeNo, refundNo string) (settle.RefundState, error) {
	st, err := a.Client.QueryRefund(ctx, outTradeNo, refundNo)
	if err != nil {
		return "", err
	}
	// Alipay answers a refund it does not know, or has not done, with no
	// refund data at all; its advice is to ask again with the same number.
	if !st.Succeeded && st.RefundedCents == 0 {
		return "", fmt.Errorf("alipay refund %s of %s: %w", refundNo, outTradeNo, settle.ErrRefundNotFound)
	}
	if st.Succeeded {
		return settle.RefundSucceeded, nil
	}
	return settle.RefundProcessing, nil
}

// WeChat is the WeChat Pay channel: native pay, the payer scans code_url.
type WeChat struct{ Client *wechat.Client }

// Create opens a native trade and returns its code_url.
func (w WeChat) Create(ctx context.Context, t settle.Trade) (string, error) {
	r, err := w.Client.Prepay(ctx, wechat.Native, wechat.PrepayRequest{OutTradeNo: t.OutTradeNo, Description: t.Subject,
		AmountCents: t.AmountCents, TimeExpire: t.Expire})
	if err != nil {
		return "", err
	}
	return r.CodeURL, nil
}

// Close closes the trade (204). A trade WeChat Pay never saw
// (ORDER_NOT_EXIST) or closed before (400 ORDER_CLOSED) needs nothing more; a
// paid one (ORDERPAID) is reported as settle.ErrTradePaid.
func (w WeChat) Close(ctx context.Context, outTradeNo string) error {
	err := w.Client.Close(ctx, outTradeNo)
	switch {
	case wechat.IsCode(err, "ORDER_CLOSED") || wechat.IsCode(err, "ORDER_NOT_EXIST"):
		return nil
	case wechat.IsCode(err, "ORDERPAID"):
		return fmt.Errorf("wechat close %s: %w: %v", outTradeNo, settle.ErrTradePaid, err)
	}
	return err
}

// Query asks WeChat Pay for the trade's state.
func (w WeChat) Query(ctx context.Context, outTradeNo string) (settle.TradeState, error) {
	tx, err := w.Client.Query(ctx, outTradeNo)
	if err != nil {
		return settle.TradeState{}, err
	}
	return settle.TradeState{Paid: tx.Paid, TradeNo: tx.TransactionID, AmountCents: tx.TotalCents, PaidAt: tx.SuccessTime}, nil
}

// Refund refunds through /v3/refund/domestic/refunds, idempotent by
// refundNo. WeChat Pay answers PROCESSING as a rule; the end comes by query
// or by a REFUND.* notify.
func (w WeChat) Refund(ctx context.Context, outTradeNo string, refundCents, totalCents int64, refundNo string) (settle.RefundState, error) {
	r, err := w.Client.Refund(ctx, wechat.RefundRequest{OutTradeNo: outTradeNo, OutRefundNo: refundNo,
		RefundCents: refundCents, TotalCents: totalCents, Reason: "order cancelled before payment arrived"})
	if err != nil {
		return "", err
	}
	if r.RefundCents != refundCents {
		return "", fmt.Errorf("wechat refund %s: answer refunds %d fen, asked %d", refundNo, r.RefundCents, refundCents)
	}
	return WeChatRefundState(r.Status), nil
}

// QueryRefund asks GET /v3/refund/domestic/refunds/{refundNo}.
func (w WeChat) QueryRefund(ctx context.Context, outTradeNo, refundNo string) (settle.RefundState, error) {
	r, err := w.Client.QueryRefund(ctx, refundNo)
	if wechat.IsCode(err, "RESOURCE_NOT_EXISTS") {
		return "", fmt.Errorf("wechat refund %s of %s: %w: %v", refundNo, outTradeNo, settle.ErrRefundNotFound, err)
	}
	if err != nil {
		return "", err
	}
	if r.OutTradeNo != outTradeNo {
		return "", fmt.Errorf("wechat refund %s: is a refund of %s, not %s", refundNo, r.OutTradeNo, outTradeNo)
	}
	return WeChatRefundState(r.Status), nil
}

// WeChatRefundState maps a WeChat Pay refund status: SUCCESS succeeded,
// ABNORMAL and CLOSED failed (the buyer was not paid back), anything else
// is still processing.
func WeChatRefundState(status string) settle.RefundState {
	switch status {
	case wechat.RefundSuccess:
		return settle.RefundSucceeded
	case wechat.RefundAbnormal, wechat.RefundClosed:
		return settle.RefundFailed
	}
	return settle.RefundProcessing
}
