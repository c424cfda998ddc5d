package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/flashgrab/flashgrab/pay/wechat"
)

// wxRefundEscrow holds a refund's money while it is PROCESSING: taken from
// the seller when asked, given to the buyer on SUCCESS, back to the seller
// on ABNORMAL or CLOSED.
const wxRefundEscrow = "wechat refunds in progress"

// wxRefund is one refund, from PROCESSING to where it ends.
type wxRefund struct {
	refundID, outRefundNo, outTradeNo string
	refund, total                     int64
	status                            string
	notifyURL                         string
	created, succeeded                time.Time
	delivery                          *notifyRun
}

var wxRefundSummary = map[string]string{
	wechat.RefundSuccess: "退款成功", wechat.RefundAbnormal: "退款异常", wechat.RefundClosed: "退款关闭",
}

// SetRefundOutcome makes the refunds of a trade end in status (SUCCESS,
// ABNORMAL or CLOSED) instead of SUCCESS; call it before they settle.
func (s *WeChat) SetRefundOutcome(outTradeNo, status string) error {
	if wxRefundSummary[status] == "" {
		return fmt.Errorf("sandbox wechat: a refund cannot end %q; SUCCESS, ABNORMAL or CLOSED", status)
	}
	s.mu.Lock()
	s.refundEnds[outTradeNo] = status
	s.mu.Unlock()
	return nil
}

// HoldRefunds keeps refunds asked from now on PROCESSING until SettleRefund
// (hold true), or lets them settle by themselves after RefundAfter again.
func (s *WeChat) HoldRefunds(hold bool) {
	s.mu.Lock()
	s.holdRefunds = hold
	s.mu.Unlock()
}

// SettleRefund ends a PROCESSING refund now, in SUCCESS unless
// SetRefundOutcome said otherwise, moves the money and starts delivering its
// REFUND.* notify. Options change what is delivered (duplicates, a forged
// signature, a misstated refund amount), not how the refund ends.
func (s *WeChat) SettleRefund(outRefundNo string, opts ...PayOption) error {
	o := applyPayOptions(opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("sandbox wechat: closed")
	}
	rf := s.refunds[outRefundNo]
	if rf == nil {
		return fmt.Errorf("sandbox wechat: settle refund %q: no such refund", outRefundNo)
	}
	if rf.status != wechat.RefundProcessing {
		return fmt.Errorf("sandbox wechat: settle refund %q: refund is %s", outRefundNo, rf.status)
	}
	end := s.refundEnds[rf.outTradeNo]
	if end == "" {
		end = wechat.RefundSuccess
	}
	to := SellerAccount
	if end == wechat.RefundSuccess {
		to = BuyerAccount
	}
	if err := s.wallets.Transfer(wxRefundEscrow, to, rf.refund); err != nil {
		return fmt.Errorf("sandbox wechat: settle refund %q: %w", outRefundNo, err)
	}
	rf.status = end
	if end == wechat.RefundSuccess {
		rf.succeeded = s.now()
	} else {
		s.trades[rf.outTradeNo].refunded -= rf.refund
	}
	j := s.refundJSON(rf)
	notice := struct {
		MchID               string `json:"mchid"`
		OutTradeNo          string `json:"out_trade_no"`
		TransactionID       string `json:"transaction_id"`
		OutRefundNo         string `json:"out_refund_no"`
		RefundID            string `json:"refund_id"`
		RefundStatus        string `json:"refund_status"`
		SuccessTime         string `json:"success_time,omitempty"`
		UserReceivedAccount string `json:"user_received_account"`
		Amount              struct {
			Total       int64 `json:"total"`
			Refund      int64 `json:"refund"`
			PayerTotal  int64 `json:"payer_total"`
			PayerRefund int64 `json:"payer_refund"`
		} `json:"amount"`
	}{MchID: s.cfg.MchID, OutTradeNo: j.OutTradeNo, TransactionID: j.TransactionID, OutRefundNo: j.OutRefundNo,
		RefundID: j.RefundID, RefundStatus: j.Status, SuccessTime: j.SuccessTime, UserReceivedAccount: j.UserReceivedAccount}
	notice.Amount.Total, notice.Amount.Refund, notice.Amount.PayerTotal, notice.Amount.PayerRefund = rf.total, rf.refund, rf.total, rf.refund
	if o.AmountCents > 0 {
		notice.Amount.Refund, notice.Amount.PayerRefund = o.AmountCents, o.AmountCents
	}
	plain, err := json.Marshal(notice)
	if err != nil {
		return fmt.Errorf("sandbox wechat: refund notify %s: %w", outRefundNo, err)
	}
	signed, err := s.sealNotify(plain, "REFUND."+end, "refund", wxRefundSummary[end])
	if err != nil {
		return err
	}
	rf.delivery = s.startNotify(o.Duplicates, s.notifyPoster(rf.notifyURL, signed, o))
	return nil
}

// RefundStatus returns where a refund stands ("" for an unknown one).
func (s *WeChat) RefundStatus(outRefundNo string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rf := s.refunds[outRefundNo]; rf != nil {
		return rf.status
	}
	return ""
}

// RefundDeliveries returns every attempt to deliver a refund's notify so far.
func (s *WeChat) RefundDeliveries(outRefundNo string) []Delivery {
	return s.refundRun(outRefundNo).deliveries()
}

// WaitRefund blocks until the delivery of a refund's notify has finished:
// nil when the merchant acknowledged it (see Wait).
func (s *WeChat) WaitRefund(ctx context.Context, outRefundNo string) error {
	return s.refundRun(outRefundNo).wait(ctx, "wechat", "refund "+outRefundNo)
}

func (s *WeChat) refundRun(outRefundNo string) *notifyRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rf := s.refunds[outRefundNo]; rf != nil {
		return rf.delivery
	}
	return nil
}

type wxRefundJSON struct {
	RefundID            string `json:"refund_id"`
	OutRefundNo         string `json:"out_refund_no"`
	TransactionID       string `json:"transaction_id"`
	OutTradeNo          string `json:"out_trade_no"`
	Channel             string `json:"channel"`
	UserReceivedAccount string `json:"user_received_account"`
	SuccessTime         string `json:"success_time,omitempty"`
	CreateTime          string `json:"create_time"`
	Status              string `json:"status"`
	FundsAccount        string `json:"funds_account"`
	Amount              struct {
		Total            int64  `json:"total"`
		Refund           int64  `json:"refund"`
		PayerTotal       int64  `json:"payer_total"`
		PayerRefund      int64  `json:"payer_refund"`
		SettlementRefund int64  `json:"settlement_refund"`
		SettlementTotal  int64  `json:"settlement_total"`
		DiscountRefund   int64  `json:"discount_refund"`
		Currency         string `json:"currency"`
	} `json:"amount"`
}

// refundJSON describes a refund as the API answers it; success_time only
// once it succeeded.
func (s *WeChat) refundJSON(rf *wxRefund) wxRefundJSON {
	tr := s.trades[rf.outTradeNo]
	j := wxRefundJSON{RefundID: rf.refundID, OutRefundNo: rf.outRefundNo, TransactionID: tr.transactionID,
		OutTradeNo: rf.outTradeNo, Channel: "ORIGINAL", UserReceivedAccount: "支付用户零钱",
		CreateTime: rf.created.In(wxCST).Format(time.RFC3339), Status: rf.status, FundsAccount: "AVAILABLE"}
	if !rf.succeeded.IsZero() {
		j.SuccessTime = rf.succeeded.In(wxCST).Format(time.RFC3339)
	}
	j.Amount.Total, j.Amount.Refund, j.Amount.PayerTotal, j.Amount.PayerRefund = rf.total, rf.refund, rf.total, rf.refund
	j.Amount.SettlementTotal, j.Amount.SettlementRefund, j.Amount.Currency = rf.total, rf.refund, "CNY"
	return j
}

// refund accepts a refund PROCESSING, idempotently by out_refund_no: a
// repeat answers the refund as it stands and moves nothing. The money leaves
// the seller now and reaches the buyer when the refund settles.
func (s *WeChat) refund(r *http.Request, body []byte) (int, any) {
	var req struct {
		OutTradeNo  string `json:"out_trade_no"`
		OutRefundNo string `json:"out_refund_no"`
		NotifyURL   string `json:"notify_url"`
		Amount      *struct {
			Refund   int64  `json:"refund"`
			Total    int64  `json:"total"`
			Currency string `json:"currency"`
		} `json:"amount"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return wxParamError("body is not valid JSON: %v", err)
	}
	if !wxOutTradeNoRe.MatchString(req.OutTradeNo) || !wxOutRefundNoRe.MatchString(req.OutRefundNo) {
		return wxParamError("out_trade_no and out_refund_no are required")
	}
	if req.Amount == nil || req.Amount.Refund <= 0 || req.Amount.Total <= 0 || (req.Amount.Currency != "" && req.Amount.Currency != "CNY") {
		return wxParamError("amount.refund and amount.total must be positive numbers of fen in CNY")
	}
	if req.NotifyURL != "" {
		if u, err := url.Parse(req.NotifyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return wxParamError("notify_url %q must be an absolute URL without query", req.NotifyURL)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rf := s.refunds[req.OutRefundNo]; rf != nil {
		if rf.outTradeNo != req.OutTradeNo || rf.refund != req.Amount.Refund || rf.total != req.Amount.Total {
			return http.StatusBadRequest, wxError{"INVALID_REQUEST", "同一退款单号的参数与之前不一致"}
		}
		return http.StatusOK, s.refundJSON(rf)
	}
	tr := s.trades[req.OutTradeNo]
	if tr == nil {
		return http.StatusNotFound, wxError{"RESOURCE_NOT_EXISTS", "订单不存在"}
	}
	if tr.paidAt.IsZero() {
		return http.StatusBadRequest, wxError{"INVALID_REQUEST", "订单未支付，不能退款: " + tr.status}
	}
	if req.Amount.Total != tr.amount {
		return http.StatusBadRequest, wxError{"INVALID_REQUEST", fmt.Sprintf("amount.total %d is not the order's %d", req.Amount.Total, tr.amount)}
	}
	if tr.refunded+req.Amount.Refund > tr.amount {
		return http.StatusForbidden, wxError{"NOT_ENOUGH", "退款金额超过订单可退金额"}
	}
	if err := s.wallets.Transfer(SellerAccount, wxRefundEscrow, req.Amount.Refund); err != nil {
		return http.StatusForbidden, wxError{"NOT_ENOUGH", "基本账户余额不足"}
	}
	notifyURL := req.NotifyURL
	if notifyURL == "" { // the merchant platform's configured URL; here the trade's
		notifyURL = tr.notifyURL
	}
	rf := &wxRefund{refundID: "5030" + fmt.Sprintf("%025d", s.nextSeq()), outRefundNo: req.OutRefundNo, outTradeNo: tr.outTradeNo,
		refund: req.Amount.Refund, total: req.Amount.Total, status: wechat.RefundProcessing, notifyURL: notifyURL,
		created: s.now()}
	s.refunds[rf.outRefundNo] = rf
	tr.refunded += rf.refund
	tr.status = wechat.TradeRefund
	if !s.holdRefunds && !s.closed {
		s.wg.Add(1)
		go s.settleLater(rf.outRefundNo)
	}
	return http.StatusOK, s.refundJSON(rf)
}

// settleLater settles a refund after RefundAfter, unless the simulator
// closes first or a test settled it already.
func (s *WeChat) settleLater(outRefundNo string) {
	defer s.wg.Done()
	t := time.NewTimer(s.cfg.RefundAfter)
	defer t.Stop()
	select {
	case <-t.C:
		_ = s.SettleRefund(outRefundNo)
	case <-s.ctx.Done():
	}
}

func (s *WeChat) queryRefund(outRefundNo string) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf := s.refunds[outRefundNo]
	if rf == nil {
		return http.StatusNotFound, wxError{"RESOURCE_NOT_EXISTS", "退款单不存在"}
	}
	return http.StatusOK, s.refundJSON(rf)
}
