package alipay

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Limits Alipay puts on trade fields.
const (
	maxOutTradeNoLen = 64
	maxSubjectLen    = 256
	// MaxAmountCents is Alipay's per-trade ceiling, 100,000,000 yuan.
	MaxAmountCents = 100_000_000_00
)

// Trade is what the merchant asks Alipay to collect.
type Trade struct {
	OutTradeNo  string // the merchant's order number: letters, digits, underscore, up to 64
	AmountCents int64
	Subject     string
	// Expire, when set, is the latest moment the buyer may pay (time_expire).
	// Set it to the order's expiry so a trade cannot be paid after the order
	// was cancelled: closing an unscanned precreate trade is not enough.
	Expire time.Time
}

func (t Trade) validate() error {
	if err := validateOutTradeNo(t.OutTradeNo); err != nil {
		return err
	}
	if t.AmountCents < 1 || t.AmountCents > MaxAmountCents {
		return fmt.Errorf("alipay trade %s: amount %d fen outside [1, %d]", t.OutTradeNo, t.AmountCents, int64(MaxAmountCents))
	}
	if t.Subject == "" || len(t.Subject) > maxSubjectLen {
		return fmt.Errorf("alipay trade %s: subject must be 1 to %d bytes", t.OutTradeNo, maxSubjectLen)
	}
	// Alipay refuses these in subject.
	if strings.ContainsAny(t.Subject, "/=&") {
		return fmt.Errorf("alipay trade %s: subject must not contain '/', '=' or '&'", t.OutTradeNo)
	}
	return nil
}

func validateOutTradeNo(no string) error {
	if no == "" || len(no) > maxOutTradeNoLen {
		return fmt.Errorf("alipay: out_trade_no %q must be 1 to %d characters", no, maxOutTradeNoLen)
	}
	for _, c := range no {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_') {
			return fmt.Errorf("alipay: out_trade_no %q may hold only letters, digits and '_'", no)
		}
	}
	return nil
}

// tradeBiz is the biz_content shared by the trade-creating methods.
type tradeBiz struct {
	OutTradeNo  string `json:"out_trade_no"`
	TotalAmount string `json:"total_amount"`
	Subject     string `json:"subject"`
	ProductCode string `json:"product_code,omitempty"`
	QuitURL     string `json:"quit_url,omitempty"`
	TimeExpire  string `json:"time_expire,omitempty"`
}

func newTradeBiz(t Trade, productCode string) tradeBiz {
	b := tradeBiz{OutTradeNo: t.OutTradeNo, TotalAmount: FormatYuan(t.AmountCents), Subject: t.Subject, ProductCode: productCode}
	if !t.Expire.IsZero() {
		b.TimeExpire = FormatTime(t.Expire)
	}
	return b
}

// Precreate creates a trade paid by scanning a QR code and returns the code's
// content (alipay.trade.precreate).
func (c *Client) Precreate(ctx context.Context, t Trade) (string, error) {
	if err := t.validate(); err != nil {
		return "", err
	}
	var out struct {
		OutTradeNo string `json:"out_trade_no"`
		QRCode     string `json:"qr_code"`
	}
	if err := c.call(ctx, "alipay.trade.precreate", newTradeBiz(t, ""), true, &out); err != nil {
		return "", fmt.Errorf("alipay precreate %s: %w", t.OutTradeNo, err)
	}
	if out.QRCode == "" {
		return "", fmt.Errorf("alipay precreate %s: %w: no qr_code in a successful answer", t.OutTradeNo, ErrMalformed)
	}
	if out.OutTradeNo != "" && out.OutTradeNo != t.OutTradeNo {
		return "", fmt.Errorf("alipay precreate %s: %w: answer is for out_trade_no %q", t.OutTradeNo, ErrMalformed, out.OutTradeNo)
	}
	return out.QRCode, nil
}

// PagePayURL returns the signed gateway URL of a desktop cashier
// (alipay.trade.page.pay). It makes no call: the browser is sent there.
func (c *Client) PagePayURL(t Trade) (string, error) {
	if err := t.validate(); err != nil {
		return "", err
	}
	return c.signedURL("alipay.trade.page.pay", newTradeBiz(t, "FAST_INSTANT_TRADE_PAY"))
}

// WapPayURL returns the signed gateway URL of a mobile web cashier
// (alipay.trade.wap.pay); quitURL is where the buyer lands on giving up.
func (c *Client) WapPayURL(t Trade, quitURL string) (string, error) {
	if err := t.validate(); err != nil {
		return "", err
	}
	b := newTradeBiz(t, "QUICK_WAP_WAY")
	b.QuitURL = quitURL
	return c.signedURL("alipay.trade.wap.pay", b)
}

// Trade statuses.
const (
	StatusWaitBuyerPay  = "WAIT_BUYER_PAY"
	StatusTradeClosed   = "TRADE_CLOSED"
	StatusTradeSuccess  = "TRADE_SUCCESS"
	StatusTradeFinished = "TRADE_FINISHED"
)

// IsPaid reports whether a trade_status means the buyer paid.
func IsPaid(status string) bool { return status == StatusTradeSuccess || status == StatusTradeFinished }

// TradeStatus is the answer to Query.
type TradeStatus struct {
	OutTradeNo string
	TradeNo    string
	Status     string // WAIT_BUYER_PAY, TRADE_CLOSED, TRADE_SUCCESS or TRADE_FINISHED
	TotalCents int64
	Paid       bool
	PaidAt     time.Time // send_pay_date; zero when unpaid
}

// Query asks for a trade's status (alipay.trade.query). A trade Alipay does
// not know yields an error matching ErrTradeNotExist.
func (c *Client) Query(ctx context.Context, outTradeNo string) (*TradeStatus, error) {
	if err := validateOutTradeNo(outTradeNo); err != nil {
		return nil, err
	}
	var out struct {
		OutTradeNo  string `json:"out_trade_no"`
		TradeNo     string `json:"trade_no"`
		TradeStatus string `json:"trade_status"`
		TotalAmount string `json:"total_amount"`
		SendPayDate string `json:"send_pay_date"`
	}
	if err := c.call(ctx, "alipay.trade.query", struct {
		OutTradeNo string `json:"out_trade_no"`
	}{outTradeNo}, false, &out); err != nil {
		return nil, fmt.Errorf("alipay query %s: %w", outTradeNo, err)
	}
	if out.OutTradeNo != outTradeNo {
		return nil, fmt.Errorf("alipay query %s: %w: answer is for out_trade_no %q", outTradeNo, ErrMalformed, out.OutTradeNo)
	}
	total, err := ParseYuan(out.TotalAmount)
	if err != nil {
		return nil, fmt.Errorf("alipay query %s: %w: total_amount: %v", outTradeNo, ErrMalformed, err)
	}
	st := &TradeStatus{OutTradeNo: out.OutTradeNo, TradeNo: out.TradeNo, Status: out.TradeStatus,
		TotalCents: total, Paid: IsPaid(out.TradeStatus)}
	if out.SendPayDate != "" {
		if st.PaidAt, err = ParseTime(out.SendPayDate); err != nil {
			return nil, fmt.Errorf("alipay query %s: %w: send_pay_date: %v", outTradeNo, ErrMalformed, err)
		}
	}
	return st, nil
}

// Close closes an unpaid trade (alipay.trade.close). Closing a paid or closed
// trade yields an error matching ErrTradeStatus; an unknown one (including a
// precreate trade never scanned) ErrTradeNotExist.
func (c *Client) Close(ctx context.Context, outTradeNo string) error {
	if err := validateOutTradeNo(outTradeNo); err != nil {
		return err
	}
	var out struct {
		OutTradeNo string `json:"out_trade_no"`
	}
	if err := c.call(ctx, "alipay.trade.close", struct {
		OutTradeNo string `json:"out_trade_no"`
	}{outTradeNo}, false, &out); err != nil {
		return fmt.Errorf("alipay close %s: %w", outTradeNo, err)
	}
	return nil
}

// RefundResult is the answer to Refund.
type RefundResult struct {
	OutTradeNo string
	TradeNo    string
	// FundChange is false when this call moved no money, e.g. a repeat of an
	// out_request_no Alipay already processed.
	FundChange bool
	// RefundedCents is the trade's cumulative refunded amount (refund_fee).
	RefundedCents int64
}

// Refund returns refundCents of a paid trade to the buyer
// (alipay.trade.refund). outRequestNo is the idempotency key: repeating a
// call with the same one refunds once.
func (c *Client) Refund(ctx context.Context, outTradeNo string, refundCents int64, outRequestNo string) (*RefundResult, error) {
	if err := validateOutTradeNo(outTradeNo); err != nil {
		return nil, err
	}
	if refundCents < 1 || refundCents > MaxAmountCents {
		return nil, fmt.Errorf("alipay refund %s: amount %d fen outside [1, %d]", outTradeNo, refundCents, int64(MaxAmountCents))
	}
	if outRequestNo == "" || len(outRequestNo) > maxOutTradeNoLen {
		return nil, fmt.Errorf("alipay refund %s: out_request_no must be 1 to %d characters", outTradeNo, maxOutTradeNoLen)
	}
	var out struct {
		OutTradeNo string `json:"out_trade_no"`
		TradeNo    string `json:"trade_no"`
		FundChange string `json:"fund_change"`
		RefundFee  string `json:"refund_fee"`
	}
	if err := c.call(ctx, "alipay.trade.refund", struct {
		OutTradeNo   string `json:"out_trade_no"`
		RefundAmount string `json:"refund_amount"`
		OutRequestNo string `json:"out_request_no"`
	}{outTradeNo, FormatYuan(refundCents), outRequestNo}, false, &out); err != nil {
		return nil, fmt.Errorf("alipay refund %s/%s: %w", outTradeNo, outRequestNo, err)
	}
	fee, err := ParseYuan(out.RefundFee)
	if err != nil {
		return nil, fmt.Errorf("alipay refund %s: %w: refund_fee: %v", outTradeNo, ErrMalformed, err)
	}
	return &RefundResult{OutTradeNo: out.OutTradeNo, TradeNo: out.TradeNo, FundChange: out.FundChange == "Y", RefundedCents: fee}, nil
}

// RefundStatusSuccess is the refund_status of a refund that has finished.
const RefundStatusSuccess = "REFUND_SUCCESS"

// RefundStatus is the answer to QueryRefund.
type RefundStatus struct {
	OutTradeNo   string
	OutRequestNo string
	// Status is refund_status: REFUND_SUCCESS once the money went back.
	// Alipay leaves it out while it has not received the request or has not
	// finished it, so empty means "not (yet) refunded", never success.
	Status        string
	RefundedCents int64 // refund_amount of this request; 0 when Alipay does not know it
	Succeeded     bool
}

// QueryRefund asks where the refund outRequestNo of a trade stands
// (alipay.trade.fastpay.refund.query). It is how to decide a refund whose
// alipay.trade.refund answered fund_change N: a repeat of a finished refund
// and a refund that moved no money yet look the same there.
func (c *Client) QueryRefund(ctx context.Context, outTradeNo, outRequestNo string) (*RefundStatus, error) {
	if err := validateOutTradeNo(outTradeNo); err != nil {
		return nil, err
	}
	if outRequestNo == "" || len(outRequestNo) > maxOutTradeNoLen {
		return nil, fmt.Errorf("alipay refund query %s: out_request_no must be 1 to %d characters", outTradeNo, maxOutTradeNoLen)
	}
	var out struct {
		OutTradeNo   string `json:"out_trade_no"`
		OutRequestNo string `json:"out_request_no"`
		RefundAmount string `json:"refund_amount"`
		RefundStatus string `json:"refund_status"`
	}
	if err := c.call(ctx, "alipay.trade.fastpay.refund.query", struct {
		OutTradeNo   string `json:"out_trade_no"`
		OutRequestNo string `json:"out_request_no"`
	}{outTradeNo, outRequestNo}, false, &out); err != nil {
		return nil, fmt.Errorf("alipay refund query %s/%s: %w", outTradeNo, outRequestNo, err)
	}
	st := &RefundStatus{OutTradeNo: outTradeNo, OutRequestNo: outRequestNo, Status: out.RefundStatus}
	if out.OutRequestNo != "" && out.OutRequestNo != outRequestNo {
		return nil, fmt.Errorf("alipay refund query %s/%s: %w: answer is for out_request_no %q", outTradeNo, outRequestNo, ErrMalformed, out.OutRequestNo)
	}
	if out.RefundAmount != "" {
		amt, err := ParseYuan(out.RefundAmount)
		if err != nil {
			return nil, fmt.Errorf("alipay refund query %s/%s: %w: refund_amount: %v", outTradeNo, outRequestNo, ErrMalformed, err)
		}
		st.RefundedCents = amt
	}
	st.Succeeded = out.RefundStatus == RefundStatusSuccess
	return st, nil
}

// ProductCodeApp is the product_code of an in-app payment through the
// Alipay SDK (alipay.trade.app.pay).
const ProductCodeApp = "QUICK_MSECURITY_PAY"

// AppPayOrderString returns the signed order string an app hands to the
// Alipay SDK (alipay.trade.app.pay, what Alipay's own server SDKs make with
// sdkExecute). It makes no call: the SDK sends it to Alipay, and the trade
// exists from then on. The signature covers the sorted parameters with raw
// values, biz_content and sign_type included; the string itself is the same
// parameters with sign, each value URL-encoded (so the '+' of a base64
// signature travels as %2B).
func (c *Client) AppPayOrderString(t Trade) (string, error) {
	if err := t.validate(); err != nil {
		return "", err
	}
	p, err := c.signedParams("alipay.trade.app.pay", newTradeBiz(t, ProductCodeApp), true, false)
	if err != nil {
		return "", err
	}
	return p.Encode(), nil
}
