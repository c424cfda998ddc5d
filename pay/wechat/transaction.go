package wechat

import (
	"encoding/json"
	"fmt"
	"time"
)

// Trade states as WeChat Pay reports them. Only TradeSuccess means paid;
// TradeRefund means it was paid and (partly) refunded since.
const (
	TradeSuccess    = "SUCCESS"
	TradeRefund     = "REFUND"
	TradeNotPay     = "NOTPAY"
	TradeClosed     = "CLOSED"
	TradeRevoked    = "REVOKED"
	TradeUserPaying = "USERPAYING"
	TradePayError   = "PAYERROR"
)

// Transaction is a WeChat Pay trade as decrypted from a notify or returned by Query.
type Transaction struct {
	AppID, MchID   string
	OutTradeNo     string
	TransactionID  string // WeChat's own id; empty until paid
	TradeType      string // NATIVE, JSAPI, APP, MWEB
	TradeState     string // one of the Trade* constants
	TradeStateDesc string
	SuccessTime    time.Time // zero unless paid
	PayerOpenID    string
	// TotalCents is the order amount in fen; PayerTotalCents what the payer
	// actually paid (lower when a coupon covered part).
	TotalCents, PayerTotalCents int64
	Currency                    string
	Paid                        bool // TradeState == SUCCESS
}

type wireTransaction struct {
	AppID          string `json:"appid"`
	MchID          string `json:"mchid"`
	OutTradeNo     string `json:"out_trade_no"`
	TransactionID  string `json:"transaction_id"`
	TradeType      string `json:"trade_type"`
	TradeState     string `json:"trade_state"`
	TradeStateDesc string `json:"trade_state_desc"`
	SuccessTime    string `json:"success_time"`
	Payer          *struct {
		OpenID string `json:"openid"`
	} `json:"payer"`
	Amount *struct {
		Total      *int64 `json:"total"`
		PayerTotal *int64 `json:"payer_total"`
		Currency   string `json:"currency"`
	} `json:"amount"`
}

// parseTransaction converts the provider's JSON. Amounts decode into int64
// directly: a fractional or out-of-range amount is an error, never rounded.
func parseTransaction(b []byte) (*Transaction, error) {
	var w wireTransaction
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: transaction: %v", ErrMalformed, err)
	}
	if w.OutTradeNo == "" || w.TradeState == "" {
		return nil, fmt.Errorf("%w: transaction lacks out_trade_no or trade_state", ErrMalformed)
	}
	tx := &Transaction{
		AppID: w.AppID, MchID: w.MchID, OutTradeNo: w.OutTradeNo, TransactionID: w.TransactionID,
		TradeType: w.TradeType, TradeState: w.TradeState, TradeStateDesc: w.TradeStateDesc,
		Paid: w.TradeState == TradeSuccess,
	}
	if w.Payer != nil {
		tx.PayerOpenID = w.Payer.OpenID
	}
	if w.Amount != nil {
		tx.Currency = w.Amount.Currency
		if w.Amount.Total != nil {
			tx.TotalCents = *w.Amount.Total
		}
		if w.Amount.PayerTotal != nil {
			tx.PayerTotalCents = *w.Amount.PayerTotal
		}
	}
	if w.SuccessTime != "" {
		t, err := time.Parse(time.RFC3339, w.SuccessTime)
		if err != nil {
			return nil, fmt.Errorf("%w: trade %s success_time %q: %v", ErrMalformed, w.OutTradeNo, w.SuccessTime, err)
		}
		tx.SuccessTime = t
	}
	if tx.Paid {
		// A paid trade without an amount cannot be checked against the order,
		// so it is refused rather than read as 0.
		if w.Amount == nil || w.Amount.Total == nil || *w.Amount.Total <= 0 || w.TransactionID == "" {
			return nil, fmt.Errorf("%w: paid trade %s lacks amount.total or transaction_id", ErrMalformed, w.OutTradeNo)
		}
	}
	return tx, nil
}

// checkOurs refuses a verified message that names another merchant or app.
func (c *Client) checkOurs(tx *Transaction) error {
	if tx.MchID != c.cfg.MchID || tx.AppID != c.cfg.AppID {
		return fmt.Errorf("%w: trade %s has mchid %q appid %q", ErrWrongMerchant, tx.OutTradeNo, tx.MchID, tx.AppID)
	}
	return nil
}
