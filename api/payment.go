package api

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

type payRequest struct {
	Channel string `json:"channel"`
	Method  string `json:"method"` // empty: qr
}

type payResponse struct {
	OrderID    string `json:"order_id,omitempty"`
	Channel    string `json:"channel"`
	Method     string `json:"method"`
	OutTradeNo string `json:"out_trade_no"`
	// qr: the URL to open (Alipay) or encode as a QR code (WeChat).
	PayURL  string `json:"pay_url,omitempty"`
	CodeURL string `json:"code_url,omitempty"`
	// The SDK methods: what the provider's SDK takes, as it names the fields.
	OrderString string                 `json:"order_string,omitempty"` // Alipay app
	AppParams   *wechat.AppPayParams   `json:"app_params,omitempty"`   // WeChat app
	JSAPIParams *wechat.JSAPIPayParams `json:"jsapi_params,omitempty"` // WeChat jsapi
}

// payOut is the answer for a payment opened by method; the SDK methods'
// parameters come from the channel (WeChat signs them anew each time).
func (s *Server) payOut(p settle.Payment, method string, withOrder bool) (payResponse, error) {
	out := payResponse{Channel: p.Channel, Method: method, OutTradeNo: p.OutTradeNo}
	if withOrder {
		out.OrderID = p.OrderID
	}
	if method == settle.MethodQR {
		if p.Channel == pay.ChannelWeChat {
			out.CodeURL = p.PayURL
		} else {
			out.PayURL = p.PayURL
		}
		return out, nil
	}
	ch, ok := s.Channels[p.Channel]
	if !ok {
		return payResponse{}, settle.ErrNoChannel
	}
	cp, err := ch.ClientParams(method, p.PayURL)
	if err != nil {
		return payResponse{}, fmt.Errorf("%s %s parameters of %s: %w", p.Channel, method, p.OutTradeNo, err)
	}
	out.OrderString, out.AppParams, out.JSAPIParams = cp.OrderString, cp.WeChatApp, cp.WeChatJSAPI
	return out, nil
}

// allMethods are the method names any channel has.
var allMethods = []string{settle.MethodQR, settle.MethodApp, settle.MethodJSAPI}

// checkMethod refuses a method no channel has (400 bad_request) and one the
// chosen channel lacks (400 method_unsupported); empty is qr.
func checkMethod(channel, method string) (string, error) {
	if method == "" {
		method = settle.MethodQR
	}
	if !slices.Contains(allMethods, method) {
		return "", flashgrab.Invalid("method", "must be "+quoteJoin(allMethods))
	}
	if !pay.Supports(channel, method) {
		return "", &apiError{fasthttp.StatusBadRequest, "method_unsupported",
			fmt.Sprintf("channel %s has no method %q; it has %s", channel, method, quoteJoin(pay.Methods(channel)))}
	}
	return method, nil
}

func quoteJoin(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// NotifyPath is the path at which the server takes a channel's notifies:
// the providers are given the public URL that ends in it.
func NotifyPath(channel string) string { return "/v1/notify/" + channel }

// checkChannel refuses a channel name flashgrab does not have at all; a
// channel it has but that is off here is settlement's ErrNoChannel.
func checkChannel(name string) error {
	if pay.Known(name) {
		return nil
	}
	names := pay.Names()
	for i, n := range names {
		names[i] = strconv.Quote(n)
	}
	return flashgrab.Invalid("channel", "must be "+strings.Join(names, " or "))
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
	if err := checkChannel(req.Channel); err != nil {
		return err
	}
	method, err := checkMethod(req.Channel, req.Method)
	if err != nil {
		return err
	}
	pm, err := s.Payments.PayOrder(c, o, req.Channel, method)
	if err != nil {
		return err
	}
	out, err := s.payOut(pm, method, false)
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, out)
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
	if err := checkChannel(req.Channel); err != nil {
		return err
	}
	pm, err := s.Payments.Topup(c, "T"+id, p.UserID, req.AmountCents, req.Channel)
	if err != nil {
		return err
	}
	out, err := s.payOut(pm, settle.MethodQR, true)
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, out)
}

// notify answers the named channel's notifies in its provider's format
// (pay.Notifier.Ack): acknowledged once what the notify says is committed
// (or was before, or there is nothing to settle), refused for anything
// forged, stale, unknown or mismatched, a channel that is off, or a failed
// commit, so that the provider retries.
func (s *Server) notify(channel string) func(*fasthttp.RequestCtx, params) error {
	return func(ctx *fasthttp.RequestCtx, _ params) error {
		nf, _ := s.Channels.Notifier(channel) // the routes are pay.Names()
		out, applied, err := s.applyNotify(nf, ctx)
		r := nf.Ack(err)
		if err != nil {
			s.reqLogger(ctx).Warn(channel+" notify refused", "status", r.Status, "err", err)
			s.metrics.notifies.WithLabelValues(channel, "refused").Inc()
		} else if applied {
			s.metrics.notifies.WithLabelValues(channel, outcomeName(out)).Inc()
		}
		ctx.SetStatusCode(r.Status)
		if r.ContentType != "" {
			ctx.Response.Header.SetContentType(r.ContentType)
		}
		if r.Body != nil {
			ctx.SetBody(r.Body)
		}
		return nil
	}
}

// applyNotify verifies the request as a notify and has settlement apply
// what it says. applied is false for a notify that asks for nothing.
func (s *Server) applyNotify(nf pay.Notifier, ctx *fasthttp.RequestCtx) (out settle.Outcome, applied bool, err error) {
	if s.Payments == nil {
		return 0, false, settle.ErrNoChannel
	}
	n, err := nf.ParseNotify(func(k string) string { return string(ctx.Request.Header.Peek(k)) }, ctx.PostBody())
	if err != nil {
		return 0, false, err
	}
	c, cancel := s.reqContext()
	defer cancel()
	switch {
	case n.Paid != nil:
		out, err = s.Payments.Paid(c, *n.Paid)
	case n.Refund != nil:
		out, err = s.Payments.Refunded(c, *n.Refund)
	default:
		return 0, false, nil
	}
	return out, err == nil, err
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
