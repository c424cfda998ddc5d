package wechat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Refund states as WeChat Pay reports them. A refund is asked PROCESSING as a
// rule and ends SUCCESS, or ABNORMAL (the buyer's account could not take it;
// the merchant must act) or CLOSED. Only RefundSuccess means the buyer has
// the money back.
const (
	RefundSuccess    = "SUCCESS"
	RefundProcessing = "PROCESSING"
	RefundAbnormal   = "ABNORMAL"
	RefundClosed     = "CLOSED"
)

// RefundRequest refunds part or all of a paid trade. OutRefundNo is the
// idempotency key: repeating a request with the same one refunds once.
type RefundRequest struct {
	OutTradeNo  string
	OutRefundNo string
	RefundCents int64 // this refund, in fen
	TotalCents  int64 // the trade's total, in fen
	Reason      string
}

// RefundResult is a refund as WeChat Pay reports it: in the answer to
// Refund and QueryRefund, and decrypted from a REFUND.* notify.
type RefundResult struct {
	MchID         string // only in notifies
	RefundID      string
	OutRefundNo   string
	OutTradeNo    string
	TransactionID string
	Status        string // one of the Refund* constants
	RefundCents   int64
	TotalCents    int64
	CreateTime    time.Time
	SuccessTime   time.Time
}

// wireRefund is both the API's refund object and the refund notify's
// resource; the notify names the state refund_status, the API status.
type wireRefund struct {
	MchID         string `json:"mchid"`
	RefundID      string `json:"refund_id"`
	OutRefundNo   string `json:"out_refund_no"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	Status        string `json:"status"`
	RefundStatus  string `json:"refund_status"`
	CreateTime    string `json:"create_time"`
	SuccessTime   string `json:"success_time"`
	Amount        struct {
		Refund *int64 `json:"refund"`
		Total  *int64 `json:"total"`
	} `json:"amount"`
}

// parseRefund converts a refund object. Amounts decode into int64 directly:
// a fractional or missing amount is an error, never rounded or read as 0.
func parseRefund(b []byte) (*RefundResult, error) {
	var w wireRefund
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: refund: %v", ErrMalformed, err)
	}
	status := w.Status
	if status == "" {
		status = w.RefundStatus
	}
	if w.RefundID == "" || w.OutRefundNo == "" || w.OutTradeNo == "" || status == "" || w.Amount.Refund == nil || w.Amount.Total == nil {
		return nil, fmt.Errorf("%w: refund %q lacks refund_id, out_trade_no, status or amount", ErrMalformed, w.OutRefundNo)
	}
	switch status {
	case RefundSuccess, RefundProcessing, RefundAbnormal, RefundClosed:
	default:
		return nil, fmt.Errorf("%w: refund %s has unknown status %q", ErrMalformed, w.OutRefundNo, status)
	}
	res := &RefundResult{
		MchID: w.MchID, RefundID: w.RefundID, OutRefundNo: w.OutRefundNo, OutTradeNo: w.OutTradeNo,
		TransactionID: w.TransactionID, Status: status, RefundCents: *w.Amount.Refund, TotalCents: *w.Amount.Total,
	}
	for _, f := range []struct {
		s   string
		dst *time.Time
	}{{w.CreateTime, &res.CreateTime}, {w.SuccessTime, &res.SuccessTime}} {
		if f.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, f.s)
		if err != nil {
			return nil, fmt.Errorf("%w: refund %s time %q: %v", ErrMalformed, w.OutRefundNo, f.s, err)
		}
		*f.dst = t
	}
	return res, nil
}

// Refund asks for a refund and returns its (often still PROCESSING) state.
// The request names Config.NotifyURL, so the outcome also arrives as a
// REFUND.* notify (see ParseEvent).
func (c *Client) Refund(ctx context.Context, r RefundRequest) (*RefundResult, error) {
	if !outTradeNoRe.MatchString(r.OutTradeNo) {
		return nil, fmt.Errorf("wechat: refund: out_trade_no %q must be 6-32 of [0-9A-Za-z_-|*]", r.OutTradeNo)
	}
	if !outRefundNoRe.MatchString(r.OutRefundNo) {
		return nil, fmt.Errorf("wechat: refund %s: out_refund_no %q must be 1-64 of [0-9A-Za-z_-|*@]", r.OutTradeNo, r.OutRefundNo)
	}
	if r.RefundCents <= 0 || r.TotalCents <= 0 || r.RefundCents > r.TotalCents {
		return nil, fmt.Errorf("wechat: refund %s: need 0 < refund %d <= total %d fen", r.OutTradeNo, r.RefundCents, r.TotalCents)
	}
	body := struct {
		OutTradeNo  string `json:"out_trade_no"`
		OutRefundNo string `json:"out_refund_no"`
		Reason      string `json:"reason,omitempty"`
		NotifyURL   string `json:"notify_url"`
		Amount      struct {
			Refund   int64  `json:"refund"`
			Total    int64  `json:"total"`
			Currency string `json:"currency"`
		} `json:"amount"`
	}{OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo, Reason: r.Reason, NotifyURL: c.cfg.NotifyURL}
	body.Amount.Refund, body.Amount.Total, body.Amount.Currency = r.RefundCents, r.TotalCents, "CNY"
	_, raw, err := c.do(ctx, http.MethodPost, "/v3/refund/domestic/refunds", body)
	if err != nil {
		return nil, err
	}
	res, err := parseRefund(raw)
	if err != nil {
		return nil, fmt.Errorf("wechat: refund %s/%s: %w", r.OutTradeNo, r.OutRefundNo, err)
	}
	if res.OutRefundNo != r.OutRefundNo || res.OutTradeNo != r.OutTradeNo {
		return nil, fmt.Errorf("wechat: refund %s/%s: %w: answer is about %s/%s", r.OutTradeNo, r.OutRefundNo, ErrMalformed, res.OutTradeNo, res.OutRefundNo)
	}
	return res, nil
}

// QueryRefund returns where a refund stands
// (GET /v3/refund/domestic/refunds/{out_refund_no}). A refund WeChat Pay does
// not know gives an *Error with Code "RESOURCE_NOT_EXISTS".
func (c *Client) QueryRefund(ctx context.Context, outRefundNo string) (*RefundResult, error) {
	if !outRefundNoRe.MatchString(outRefundNo) {
		return nil, fmt.Errorf("wechat: query refund: out_refund_no %q must be 1-64 of [0-9A-Za-z_-|*@]", outRefundNo)
	}
	_, raw, err := c.do(ctx, http.MethodGet, "/v3/refund/domestic/refunds/"+url.PathEscape(outRefundNo), nil)
	if err != nil {
		return nil, err
	}
	res, err := parseRefund(raw)
	if err != nil {
		return nil, fmt.Errorf("wechat: query refund %s: %w", outRefundNo, err)
	}
	if res.OutRefundNo != outRefundNo {
		return nil, fmt.Errorf("wechat: query refund %s: %w: answer is about %s", outRefundNo, ErrMalformed, res.OutRefundNo)
	}
	return res, nil
}
