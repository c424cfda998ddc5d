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

// Close closes the trade; a trade Alipay never saw (page pay not yet opened)
// or closed already needs nothing more.
func (a Alipay) Close(ctx context.Context, outTradeNo string) error {
	err := a.Client.Close(ctx, outTradeNo)
	if errors.Is(err, alipay.ErrTradeNotExist) || errors.Is(err, alipay.ErrTradeHasClose) {
		return nil
	}
	return err
}

// Query asks alipay.trade.query for the trade's state.
func (a Alipay) Query(ctx context.Context, outTradeNo string) (settle.TradeState, error) {
	st, err := a.Client.Query(ctx, outTradeNo)
	if err != nil {
		return settle.TradeState{}, err
	}
	return settle.TradeState{Paid: st.Paid, TradeNo: st.TradeNo, AmountCents: st.TotalCents, PaidAt: st.PaidAt}, nil
}

// Refund refunds through alipay.trade.refund, idempotent by refundNo.
// TODO(issue 13.4): check fund_change, query when in doubt.
func (a Alipay) Refund(ctx context.Context, outTradeNo string, refundCents, _ int64, refundNo string) (settle.RefundState, error) {
	_, err := a.Client.Refund(ctx, outTradeNo, refundCents, refundNo)
	if err != nil {
		return "", err
	}
	return settle.RefundSucceeded, nil
}

// QueryRefund asks where a refund stands. TODO(issue 13.4): alipay.trade.fastpay.refund.query.
func (a Alipay) QueryRefund(ctx context.Context, outTradeNo, refundNo string) (settle.RefundState, error) {
	return "", errors.New("alipay: refund query not implemented")
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
