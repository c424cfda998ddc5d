package alipay

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Notification is a verified async notify. Raw keeps every parameter as
// received, for logging and for fields not copied here.
type Notification struct {
	NotifyID    string
	AppID       string
	SellerID    string
	OutTradeNo  string
	TradeNo     string
	TradeStatus string
	TotalCents  int64
	// Paid is true for TRADE_SUCCESS and TRADE_FINISHED.
	Paid bool
	// GmtPayment is zero when the notify carries no gmt_payment (unpaid states).
	GmtPayment time.Time
	Raw        url.Values
}

// ParseNotify verifies and decodes the raw form body of an async notify.
//
// The order matters: the body is form-decoded once (a '+' inside sign arrives
// as %2B and must not be decoded again), the signature is checked on the raw
// parameter map exactly as decoded, and only then are app_id and seller_id
// compared with ours and the fields read. Errors wrap ErrMalformed,
// ErrBadSignature or ErrWrongApp; answer AckFail to all of them. The caller
// still has to check that OutTradeNo is one of its orders and that TotalCents
// equals the order's amount, and must treat repeats idempotently.
func (c *Client) ParseNotify(body []byte) (*Notification, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: notify body: %v", ErrMalformed, err)
	}
	for k, v := range vals {
		// A repeated key could be verified in one copy and read in another.
		if len(v) != 1 {
			return nil, fmt.Errorf("%w: notify repeats parameter %q", ErrMalformed, k)
		}
	}
	sign := vals.Get("sign")
	if sign == "" {
		return nil, fmt.Errorf("%w: notify carries no sign", ErrBadSignature)
	}
	if st := vals.Get("sign_type"); st != "" && st != "RSA2" {
		return nil, fmt.Errorf("%w: notify sign_type %q, only RSA2 is accepted", ErrBadSignature, st)
	}
	if err := VerifyBytes([]byte(NotifyContent(vals)), sign, c.cfg.AlipayPublicKey); err != nil {
		return nil, fmt.Errorf("notify for out_trade_no %q: %w", vals.Get("out_trade_no"), err)
	}
	n := &Notification{
		NotifyID:    vals.Get("notify_id"),
		AppID:       vals.Get("app_id"),
		SellerID:    vals.Get("seller_id"),
		OutTradeNo:  vals.Get("out_trade_no"),
		TradeNo:     vals.Get("trade_no"),
		TradeStatus: vals.Get("trade_status"),
		Raw:         vals,
	}
	n.Paid = IsPaid(n.TradeStatus)
	if n.AppID != c.cfg.AppID {
		return nil, fmt.Errorf("%w: app_id %q", ErrWrongApp, n.AppID)
	}
	if c.cfg.SellerID != "" && n.SellerID != c.cfg.SellerID {
		return nil, fmt.Errorf("%w: seller_id %q", ErrWrongApp, n.SellerID)
	}
	if cs := vals.Get("charset"); cs != "" && !strings.EqualFold(cs, "utf-8") {
		return nil, fmt.Errorf("%w: notify charset %q, only utf-8 is supported", ErrMalformed, cs)
	}
	for name, v := range map[string]string{"out_trade_no": n.OutTradeNo, "trade_no": n.TradeNo,
		"trade_status": n.TradeStatus, "notify_id": n.NotifyID} {
		if v == "" {
			return nil, fmt.Errorf("%w: notify lacks %s", ErrMalformed, name)
		}
	}
	if n.TotalCents, err = ParseYuan(vals.Get("total_amount")); err != nil {
		return nil, fmt.Errorf("%w: notify total_amount: %v", ErrMalformed, err)
	}
	if gp := vals.Get("gmt_payment"); gp != "" {
		if n.GmtPayment, err = ParseTime(gp); err != nil {
			return nil, fmt.Errorf("%w: notify gmt_payment: %v", ErrMalformed, err)
		}
	}
	return n, nil
}
