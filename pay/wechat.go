package pay

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// WeChat is the WeChat Pay channel: by QR a native trade, the payer scans
// code_url; by app an APP trade paid through the WeChat SDK; by jsapi a JSAPI
// trade paid inside a mini program by the payer whose openid it names.
type WeChat struct{ Client *wechat.Client }

// wechatKinds are the prepay kinds of the methods.
var wechatKinds = map[string]wechat.Kind{"": wechat.Native, settle.MethodQR: wechat.Native,
	settle.MethodApp: wechat.App, settle.MethodJSAPI: wechat.JSAPI}

// Create opens the trade and returns its code_url (QR) or prepay_id (app,
// jsapi).
func (w WeChat) Create(ctx context.Context, t settle.Trade) (string, error) {
	kind, ok := wechatKinds[t.Method]
	if !ok {
		return "", fmt.Errorf("wechat trade %s: method %q is not supported", t.OutTradeNo, t.Method)
	}
	r, err := w.Client.Prepay(ctx, kind, wechat.PrepayRequest{OutTradeNo: t.OutTradeNo, Description: t.Subject,
		AmountCents: t.AmountCents, TimeExpire: t.Expire, OpenID: t.PayerID})
	if err != nil {
		return "", err
	}
	if kind == wechat.Native {
		return r.CodeURL, nil
	}
	return r.PrepayID, nil
}

// ClientParams signs the SDK parameters of an app or jsapi trade from its
// prepay_id; nothing for QR.
func (w WeChat) ClientParams(method, created string) (ClientParams, error) {
	switch method {
	case settle.MethodQR:
		return ClientParams{}, nil
	case settle.MethodApp:
		p, err := w.Client.AppPayParams(created)
		if err != nil {
			return ClientParams{}, err
		}
		return ClientParams{WeChatApp: &p}, nil
	case settle.MethodJSAPI:
		p, err := w.Client.JSAPIPayParams(created)
		if err != nil {
			return ClientParams{}, err
		}
		return ClientParams{WeChatJSAPI: &p}, nil
	}
	return ClientParams{}, fmt.Errorf("wechat: method %q is not supported", method)
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
	return wechatRefundState(r.Status), nil
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
	return wechatRefundState(r.Status), nil
}

// wechatRefundState maps a WeChat Pay refund status: SUCCESS succeeded,
// ABNORMAL and CLOSED failed (the buyer was not paid back), anything else
// is still processing.
func wechatRefundState(status string) settle.RefundState {
	switch status {
	case wechat.RefundSuccess:
		return settle.RefundSucceeded
	case wechat.RefundAbnormal, wechat.RefundClosed:
		return settle.RefundFailed
	}
	return settle.RefundProcessing
}

// ParseNotify verifies a WeChat Pay APIv3 notify (the Wechatpay-* headers'
// signature over the body, then the AES-256-GCM resource, then app and
// merchant). Payments (TRANSACTION.*) and refunds (REFUND.*) share the URL;
// the decrypted resource says which it is. A transaction not paid asks for
// nothing.
func (w WeChat) ParseNotify(header func(string) string, body []byte) (Notify, error) {
	ev, err := w.Client.ParseEvent(wechat.NotifyHeaderFrom(header), body)
	if err != nil {
		return Notify{}, badNotify{err}
	}
	if rf := ev.Refund; rf != nil {
		return Notify{Refund: &settle.RefundNotice{Channel: ChannelWeChat, OutTradeNo: rf.OutTradeNo,
			RefundNo: rf.OutRefundNo, AmountCents: rf.RefundCents, State: wechatRefundState(rf.Status)}}, nil
	}
	if tx := ev.Transaction; tx.Paid {
		return Notify{Paid: &settle.Notice{Channel: ChannelWeChat, OutTradeNo: tx.OutTradeNo, TradeNo: tx.TransactionID,
			AmountCents: tx.TotalCents, PaidAt: tx.SuccessTime}}, nil
	}
	return Notify{}, nil
}

// Ack answers WeChat Pay: 204 without a body to acknowledge. A refusal is
// {"code":"FAIL","message":…} with 400 when the notify is at fault (forged,
// stale, SIGNTEST probe, unknown trade or refund, amount mismatch), 404 when
// WeChat Pay is off here, and 500 when it was not committed; WeChat Pay
// retries on all of them. The 500 says no more than that: the cause is ours
// to log, not the provider's to read.
func (WeChat) Ack(err error) Reply { return wechatAck(err) }

func wechatAck(err error) Reply {
	fail := func(status int, message string) Reply {
		return Reply{Status: status, ContentType: "application/json", Body: wechat.FailBody(message)}
	}
	switch {
	case err == nil:
		return Reply{Status: http.StatusNoContent}
	case errors.Is(err, settle.ErrNoChannel):
		return fail(http.StatusNotFound, err.Error())
	case isBadNotify(err):
		return fail(http.StatusBadRequest, err.Error())
	}
	return fail(http.StatusInternalServerError, "not recorded; retry later")
}
