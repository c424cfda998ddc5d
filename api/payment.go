package api

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

type payRequest struct {
	Channel string `json:"channel"`
}

type payResponse struct {
	OrderID    string `json:"order_id,omitempty"`
	Channel    string `json:"channel"`
	OutTradeNo string `json:"out_trade_no"`
	PayURL     string `json:"pay_url,omitempty"`
	CodeURL    string `json:"code_url,omitempty"`
}

func payOut(p settle.Payment, withOrder bool) payResponse {
	out := payResponse{Channel: p.Channel, OutTradeNo: p.OutTradeNo}
	if withOrder {
		out.OrderID = p.OrderID
	}
	if p.Channel == "wechat" {
		out.CodeURL = p.PayURL
	} else {
		out.PayURL = p.PayURL
	}
	return out
}

// payOrder opens the provider trade for the caller's own order.
func (s *Server) payOrder(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	var req payRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	if s.Payments == nil {
		return settle.ErrNoChannel
	}
	c, cancel := s.reqContext()
	defer cancel()
	o, err := s.Engine.Order(c, ps[0])
	if err != nil {
		return err
	}
	if o.UserID != p.UserID {
		return flashgrab.ErrNotFound // only the buyer pays, and others' orders stay unseen
	}
	pay, err := s.Payments.PayOrder(c, o, req.Channel)
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, payOut(pay, false))
}

type topupRequest struct {
	AmountCents int64  `json:"amount_cents"`
	Channel     string `json:"channel"`
}

// maxTopupCents bounds one top-up (50,000 yuan).
const maxTopupCents = 5_000_000

// topup opens a trade whose payment credits the caller's own account.
func (s *Server) topup(ctx *fasthttp.RequestCtx, _ params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	var req topupRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	if req.AmountCents < 1 || req.AmountCents > maxTopupCents {
		return flashgrab.Invalid("amount_cents", "must be in [1, 5000000]")
	}
	if s.Payments == nil {
		return settle.ErrNoChannel
	}
	c, cancel := s.reqContext()
	defer cancel()
	id, err := s.Engine.NewID()
	if err != nil {
		return err
	}
	pay, err := s.Payments.Topup(c, "T"+id, p.UserID, req.AmountCents, req.Channel)
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, payOut(pay, true))
}

// notifyAlipay answers exactly "success" once the payment is committed (or
// was before), and "fail" for anything forged, unknown or mismatched, or when
// the commit failed, so that Alipay retries.
func (s *Server) notifyAlipay(ctx *fasthttp.RequestCtx, _ params) error {
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ack := func(ok bool, why error) error {
		if ok {
			ctx.SetBodyString(alipay.AckSuccess)
			return nil
		}
		s.logger().Warn("alipay notify refused", "err", why)
		s.metrics.notifies.WithLabelValues("alipay", "refused").Inc()
		ctx.SetBodyString(alipay.AckFail)
		return nil
	}
	if s.Alipay == nil || s.Payments == nil {
		return ack(false, settle.ErrNoChannel)
	}
	n, err := s.Alipay.ParseNotify(ctx.PostBody())
	if err != nil {
		return ack(false, err)
	}
	if !n.Paid {
		return ack(true, nil) // WAIT_BUYER_PAY, TRADE_CLOSED: nothing to settle
	}
	c, cancel := s.reqContext()
	defer cancel()
	out, err := s.Payments.Paid(c, settle.Notice{Channel: "alipay", OutTradeNo: n.OutTradeNo, TradeNo: n.TradeNo,
		AmountCents: n.TotalCents, PaidAt: n.GmtPayment})
	if err != nil {
		return ack(false, err)
	}
	s.metrics.notifies.WithLabelValues("alipay", outcomeName(out)).Inc()
	return ack(true, nil)
}

// notifyWeChat answers 204 once the payment or refund is committed (or was
// before); a forged, stale, probe, unknown or mismatched notify gets 400, a
// failed commit 500, each with {"code":"FAIL"}, so that WeChat Pay retries.
// Payments (TRANSACTION.*) and refunds (REFUND.*) share the URL; the
// decrypted resource says which it is.
func (s *Server) notifyWeChat(ctx *fasthttp.RequestCtx, _ params) error {
	fail := func(status int, why error) error {
		s.logger().Warn("wechat notify refused", "status", status, "err", why)
		s.metrics.notifies.WithLabelValues("wechat", "refused").Inc()
		ctx.Response.Header.SetContentType("application/json")
		ctx.SetStatusCode(status)
		ctx.SetBody(wechat.FailBody(why.Error()))
		return nil
	}
	if s.WeChat == nil || s.Payments == nil {
		return fail(fasthttp.StatusNotFound, settle.ErrNoChannel)
	}
	h := wechat.NotifyHeaderFrom(func(k string) string { return string(ctx.Request.Header.Peek(k)) })
	ev, err := s.WeChat.ParseEvent(h, ctx.PostBody())
	if err != nil {
		return fail(fasthttp.StatusBadRequest, err)
	}
	var out settle.Outcome
	applied := false
	c, cancel := s.reqContext()
	defer cancel()
	switch {
	case ev.Refund != nil:
		rf := ev.Refund
		out, err = s.Payments.Refunded(c, settle.RefundNotice{Channel: "wechat", OutTradeNo: rf.OutTradeNo,
			RefundNo: rf.OutRefundNo, AmountCents: rf.RefundCents, State: pay.WeChatRefundState(rf.Status)})
		applied = true
	case ev.Transaction.Paid:
		tx := ev.Transaction
		out, err = s.Payments.Paid(c, settle.Notice{Channel: "wechat", OutTradeNo: tx.OutTradeNo, TradeNo: tx.TransactionID,
			AmountCents: tx.TotalCents, PaidAt: tx.SuccessTime})
		applied = true
	}
	switch {
	case errors.Is(err, settle.ErrUnknownTrade) || errors.Is(err, settle.ErrAmountMismatch):
		return fail(fasthttp.StatusBadRequest, err)
	case err != nil:
		return fail(fasthttp.StatusInternalServerError, errors.New("not recorded; retry later"))
	}
	if applied {
		s.metrics.notifies.WithLabelValues("wechat", outcomeName(out)).Inc()
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

func outcomeName(o settle.Outcome) string {
	switch o {
	case settle.Applied:
		return "applied"
	case settle.Duplicate:
		return "duplicate"
	case settle.Refunding:
		return "refunding"
	}
	return "unknown"
}
