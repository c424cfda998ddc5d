package pay

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/settle"
)

// Alipay is the Alipay channel. By QR, alipay.trade.precreate: the payer
// opens (or scans) the returned qr_code URL; precreate rather than page pay,
// because it makes the trade exist at once, so an expired order's trade can
// be closed. By app, alipay.trade.app.pay: the signed order string the app
// hands the Alipay SDK; the trade exists once the SDK sent it, and until
// then a close finds none (which is fine: time_expire bounds it anyway).
type Alipay struct{ Client *alipay.Client }

// Create precreates a QR trade and returns its qr_code URL, or signs an app
// trade's order string and returns it.
func (a Alipay) Create(ctx context.Context, t settle.Trade) (string, error) {
	at := alipay.Trade{OutTradeNo: t.OutTradeNo, AmountCents: t.AmountCents, Subject: t.Subject, Expire: t.Expire}
	switch t.Method {
	case "", settle.MethodQR:
		return a.Client.Precreate(ctx, at)
	case settle.MethodApp:
		return a.Client.AppPayOrderString(at)
	}
	return "", fmt.Errorf("alipay trade %s: method %q is not supported", t.OutTradeNo, t.Method)
}

// ClientParams is the order string itself for the app method, nothing for QR.
func (Alipay) ClientParams(method, created string) (ClientParams, error) {
	switch method {
	case settle.MethodQR:
		return ClientParams{}, nil
	case settle.MethodApp:
		return ClientParams{OrderString: created}, nil
	}
	return ClientParams{}, fmt.Errorf("alipay: method %q is not supported", method)
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

// ParseNotify verifies Alipay's form-encoded notify (RSA2 signature, app_id,
// seller_id). Only TRADE_SUCCESS and TRADE_FINISHED are paid; the other
// states (WAIT_BUYER_PAY, TRADE_CLOSED) ask for nothing. Alipay sends no
// header that matters.
func (a Alipay) ParseNotify(_ func(string) string, body []byte) (Notify, error) {
	n, err := a.Client.ParseNotify(body)
	if err != nil {
		return Notify{}, badNotify{err}
	}
	if !n.Paid {
		return Notify{}, nil
	}
	return Notify{Paid: &settle.Notice{Channel: ChannelAlipay, OutTradeNo: n.OutTradeNo, TradeNo: n.TradeNo,
		AmountCents: n.TotalCents, PaidAt: n.GmtPayment}}, nil
}

// Ack answers Alipay as it requires: always 200, plain text, exactly
// "success" to acknowledge and "fail" for anything refused (forged, unknown,
// mismatched, channel off, or not committed), after which Alipay retries.
func (Alipay) Ack(err error) Reply { return alipayAck(err) }

func alipayAck(err error) Reply {
	body := alipay.AckSuccess
	if err != nil {
		body = alipay.AckFail
	}
	return Reply{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte(body)}
}
