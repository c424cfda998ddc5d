package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flashgrab/flashgrab/pay/alipay"
)

// Identities the sandbox plays in its Alipay half.
const (
	// DevAlipayAppID and DevAlipaySellerID are the app and seller ids DevAlipay wires up.
	DevAlipayAppID    = "2021000000000000"
	DevAlipaySellerID = "2088000000000001"

	alipayBuyerID       = "2088102177846875" // the buyer's 2088… user id, the account 15911111111
	alipayBuyerLogonID  = "159****1111"      // how Alipay masks the buyer's phone
	alipayNotifyTimeout = 15 * time.Second
)

// AlipayConfig configures the simulated Alipay gateway.
type AlipayConfig struct {
	AppID, SellerID string
	// AppPublicKey verifies the merchant's requests.
	AppPublicKey *rsa.PublicKey
	// PrivateKey is the sandbox's "Alipay" key: it signs responses, notifies
	// and return redirects. The client's AlipayPublicKey is its public half.
	PrivateKey *rsa.PrivateKey
	// Retry is the notify retry schedule; zero means Alipay's real one.
	Retry Schedule
	// HTTPClient delivers notifies; defaults to one with a 15 s timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now.
	Now func() time.Time
}

// DevAlipay generates a fresh key pair for each side and returns a client
// configuration and a sandbox configuration that trust each other. gateway is
// where the sandbox is reachable (…/alipay/gateway.do when mounted under
// /alipay/), notifyURL the merchant's notify endpoint. The sandbox retries
// notifies on Alipay's schedule compressed a hundredfold (4 min → 2.4 s).
func DevAlipay(gateway, notifyURL string) (alipay.Config, AlipayConfig, error) {
	appKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return alipay.Config{}, AlipayConfig{}, fmt.Errorf("dev alipay: generate app key: %w", err)
	}
	aliKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return alipay.Config{}, AlipayConfig{}, fmt.Errorf("dev alipay: generate sandbox key: %w", err)
	}
	client, sb := devAlipayConfigs(appKey, aliKey, gateway, notifyURL)
	return client, sb, nil
}

func devAlipayConfigs(appKey, aliKey *rsa.PrivateKey, gateway, notifyURL string) (alipay.Config, AlipayConfig) {
	return alipay.Config{
			AppID: DevAlipayAppID, SellerID: DevAlipaySellerID,
			PrivateKey: appKey, AlipayPublicKey: &aliKey.PublicKey,
			Gateway: gateway, NotifyURL: notifyURL,
		}, AlipayConfig{
			AppID: DevAlipayAppID, SellerID: DevAlipaySellerID,
			AppPublicKey: &appKey.PublicKey, PrivateKey: aliKey,
			Retry: Schedule{Delays: AlipayRetries, Scale: 0.01},
		}
}

// Alipay simulates the Alipay OpenAPI gateway and cashier. It is an
// http.Handler serving, relative to wherever it is mounted (use
// http.StripPrefix("/alipay", a) to serve it under /alipay/):
//
//	GET|POST /gateway.do  the OpenAPI gateway; page.pay and wap.pay show a cashier page
//	GET      /cashier?out_trade_no=…  the cashier a precreate qr_code points to
//	POST     /pay?out_trade_no=…      pays the trade from the buyer wallet (what the cashier button does)
//	POST     /sdk/app                 order_string=…: the Alipay SDK pays an app trade (PayOrderString)
//
// Trades live in memory only.
type Alipay struct {
	simulator[*aliTrade]
	cfg AlipayConfig
}

// alipayWays returns Alipay's trade states, retry schedule and acknowledgement.
func alipayWays() provider {
	return provider{
		name: "alipay",
		open: alipay.StatusWaitBuyerPay, paid: alipay.StatusTradeSuccess, closed: alipay.StatusTradeClosed,
		retries:       AlipayRetries,
		notifyTimeout: alipayNotifyTimeout,
		// Alipay stops only on the exact body; "success\n" or " success" retry.
		acked: func(status int, body string) bool { return status == http.StatusOK && body == alipay.AckSuccess },
	}
}

type aliTrade struct {
	trade
	tradeNo   string
	subject   string
	returnURL string
	quitURL   string
	// scanned: the buyer opened the cashier (scanned the QR code). Alipay
	// creates a precreate trade only then: before it, query and close answer
	// ACQ.TRADE_NOT_EXIST.
	scanned bool
	refunds map[string]int64 // out_request_no → fen
}

// NewAlipay returns a simulator moving money between the buyer and seller in
// w. It fails when cfg lacks its identity or keys, or w is nil.
func NewAlipay(cfg AlipayConfig, w *Wallets) (*Alipay, error) {
	switch {
	case cfg.AppID == "":
		return nil, errors.New("sandbox alipay: AppID is required")
	case cfg.AppPublicKey == nil || cfg.PrivateKey == nil:
		return nil, errors.New("sandbox alipay: AppPublicKey and PrivateKey are required")
	}
	a := &Alipay{cfg: cfg}
	if err := a.init(alipayWays(), w, cfg.Retry, cfg.HTTPClient, cfg.Now); err != nil {
		return nil, err
	}
	return a, nil
}

// ---- paying and notify delivery ----

// Pay pays a trade as the buyer 15911111111 would: it moves the amount from
// the buyer's wallet to the seller's, marks the trade TRADE_SUCCESS and starts
// delivering the signed notify to the trade's notify_url, retrying on the
// configured schedule until the merchant answers exactly "success". Options
// send duplicates or a forged or misstated notify. Paying an unknown, closed,
// expired or already paid trade fails and moves nothing.
func (a *Alipay) Pay(outTradeNo string, opts ...PayOption) error {
	scan := func(tr *aliTrade) { tr.scanned = true } // paying starts with scanning
	return a.pay(outTradeNo, opts, scan, func(tr *aliTrade, o PayOptions) (func() Delivery, error) {
		if tr.notifyURL == "" || o.NoNotify {
			return nil, nil
		}
		body, err := a.notifyBody(tr, o)
		if err != nil {
			return nil, err
		}
		notifyURL := tr.notifyURL
		return func() Delivery { return a.postNotify(notifyURL, []byte(body), aliNotifyHeader) }, nil
	})
}

// notifyBody builds the form a trade_status_sync notify carries, signed the
// rsaCheckV1 way, with no empty values.
func (a *Alipay) notifyBody(tr *aliTrade, o PayOptions) (string, error) {
	claimed := tr.amount
	if o.AmountCents > 0 {
		claimed = o.AmountCents
	}
	yuan := alipay.FormatYuan(claimed)
	fundBills, err := json.Marshal([]map[string]string{{"amount": yuan, "fundChannel": "ALIPAYACCOUNT"}})
	if err != nil {
		return "", fmt.Errorf("sandbox alipay: notify %s: %w", tr.outTradeNo, err)
	}
	p := url.Values{}
	set := func(k, v string) {
		if v != "" {
			p.Set(k, v)
		}
	}
	set("notify_time", alipay.FormatTime(a.now()))
	set("notify_type", "trade_status_sync")
	set("notify_id", randomHex(16))
	set("app_id", a.cfg.AppID)
	set("auth_app_id", a.cfg.AppID)
	set("charset", "utf-8")
	set("version", "1.0")
	set("sign_type", "RSA2")
	set("trade_no", tr.tradeNo)
	set("out_trade_no", tr.outTradeNo)
	set("buyer_id", alipayBuyerID)
	set("buyer_logon_id", alipayBuyerLogonID)
	set("seller_id", a.cfg.SellerID)
	set("trade_status", tr.status)
	set("total_amount", yuan)
	set("receipt_amount", yuan)
	set("invoice_amount", yuan)
	set("buyer_pay_amount", yuan)
	set("point_amount", "0.00")
	set("subject", tr.subject)
	set("gmt_create", alipay.FormatTime(tr.created))
	set("gmt_payment", alipay.FormatTime(tr.paidAt))
	set("fund_bill_list", string(fundBills))
	sig, err := alipay.SignBytes([]byte(alipay.NotifyContent(p)), a.cfg.PrivateKey)
	if err != nil {
		return "", fmt.Errorf("sandbox alipay: notify %s: %w", tr.outTradeNo, err)
	}
	p.Set("sign", sig)
	if o.ForgeSignature {
		// Changed after signing: the signature no longer covers the amount.
		p.Set("total_amount", alipay.FormatYuan(claimed+1))
	}
	return p.Encode(), nil
}

// aliNotifyHeader is the header of every notify Alipay posts.
func aliNotifyHeader(time.Time) (http.Header, error) {
	return http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}}, nil
}

// ---- HTTP ----

// ServeHTTP routes the gateway, the cashier page and the pay endpoint.
func (a *Alipay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	switch r.URL.Path {
	case "/gateway.do":
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			http.Error(w, "gateway accepts GET and POST", http.StatusMethodNotAllowed)
			return
		}
		a.serveGateway(w, r)
	case "/cashier":
		a.serveCashier(w, r)
	case "/pay":
		if r.Method != http.MethodPost {
			http.Error(w, "pay with POST", http.StatusMethodNotAllowed)
			return
		}
		a.servePay(w, r)
	case "/sdk/app":
		a.serveSDK(w, r)
	default:
		http.NotFound(w, r)
	}
}

// aliBizContent is every biz_content field the simulated methods read.
type aliBizContent struct {
	OutTradeNo   string   `json:"out_trade_no"`
	TradeNo      string   `json:"trade_no"`
	TotalAmount  aliMoney `json:"total_amount"`
	Subject      string   `json:"subject"`
	ProductCode  string   `json:"product_code"`
	QuitURL      string   `json:"quit_url"`
	TimeExpire   string   `json:"time_expire"`
	RefundAmount aliMoney `json:"refund_amount"`
	OutRequestNo string   `json:"out_request_no"`
}

// aliMoney is a biz_content amount, which Alipay accepts as a JSON string or
// number; it keeps the text so that ParseYuan decides exactly.
type aliMoney string

func (m *aliMoney) UnmarshalJSON(b []byte) error {
	s := string(b)
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	*m = aliMoney(s)
	return nil
}

func aliErr(code, msg, subCode, subMsg string) *alipay.Error {
	return &alipay.Error{Code: code, Msg: msg, SubCode: subCode, SubMsg: subMsg}
}

func aliBizErr(subCode, subMsg string) *alipay.Error {
	return aliErr(alipay.CodeBusinessError, "Business Failed", subCode, subMsg)
}

func aliInvalidArg(subCode, subMsg string) *alipay.Error {
	return aliErr("40002", "Invalid Arguments", subCode, subMsg)
}

var aliAPIMethods = map[string]bool{
	"alipay.trade.precreate": true, "alipay.trade.query": true, "alipay.trade.close": true,
	"alipay.trade.refund": true, "alipay.trade.page.pay": true, "alipay.trade.wap.pay": true,
	"alipay.trade.fastpay.refund.query": true,
	methodAppPay:                        true, // checked as any request, but only from the SDK (PayOrderString)
}

func (a *Alipay) serveGateway(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "unreadable form: "+err.Error(), http.StatusBadRequest)
		return
	}
	method := r.Form.Get("method")
	browser := method == "alipay.trade.page.pay" || method == "alipay.trade.wap.pay"
	fail := func(e *alipay.Error) {
		if browser {
			a.renderError(w, e)
			return
		}
		key := "error_response"
		if aliAPIMethods[method] {
			key = strings.ReplaceAll(method, ".", "_") + "_response"
		}
		a.writeSigned(w, key, e)
	}
	params, biz, e := a.checkRequest(r.Form)
	if e != nil {
		fail(e)
		return
	}
	var resp map[string]string
	switch method {
	case methodAppPay:
		fail(aliInvalidArg("isv.invalid-method", "alipay.trade.app.pay 由支付宝 SDK 发起, 不经网关"))
		return
	case "alipay.trade.precreate":
		resp, e = a.precreate(r, params, biz)
	case "alipay.trade.page.pay", "alipay.trade.wap.pay":
		tr, e := a.createTrade(params, biz)
		if e != nil {
			fail(e)
			return
		}
		a.scan(tr)
		a.renderCashier(w, tr)
		return
	case "alipay.trade.query":
		resp, e = a.onTrade(biz, a.queryLocked)
	case "alipay.trade.close":
		resp, e = a.onTrade(biz, a.closeLocked)
	case "alipay.trade.refund":
		resp, e = a.onTrade(biz, a.refundLocked)
	case "alipay.trade.fastpay.refund.query":
		resp, e = a.onTrade(biz, a.refundQueryLocked)
	}
	if e != nil {
		fail(e)
		return
	}
	resp["code"], resp["msg"] = alipay.CodeSuccess, "Success"
	a.writeSigned(w, strings.ReplaceAll(method, ".", "_")+"_response", resp)
}

// checkRequest applies the gateway's common checks, the merchant signature
// among them, and decodes biz_content.
func (a *Alipay) checkRequest(form url.Values) (url.Values, *aliBizContent, *alipay.Error) {
	for k, v := range form {
		if len(v) != 1 {
			return nil, nil, aliInvalidArg("isv.invalid-parameter", "参数重复: "+k)
		}
	}
	method := form.Get("method")
	switch {
	case method == "":
		return nil, nil, aliErr("40001", "Missing Required Arguments", "isv.missing-method", "缺少方法名参数")
	case !aliAPIMethods[method]:
		return nil, nil, aliInvalidArg("isv.invalid-method", "不存在的方法名")
	case form.Get("app_id") == "":
		return nil, nil, aliErr("40001", "Missing Required Arguments", "isv.missing-app-id", "缺少AppID参数")
	case form.Get("app_id") != a.cfg.AppID:
		return nil, nil, aliInvalidArg("isv.invalid-app-id", "无效的AppID参数")
	case form.Get("sign") == "":
		return nil, nil, aliErr("40001", "Missing Required Arguments", "isv.missing-signature", "缺少签名参数")
	case form.Get("sign_type") != "RSA2":
		return nil, nil, aliInvalidArg("isv.invalid-signature-type", "无效的签名类型")
	case form.Get("charset") != "" && !strings.EqualFold(form.Get("charset"), "utf-8"):
		return nil, nil, aliInvalidArg("isv.invalid-charset", "字符集错误")
	case form.Get("format") != "" && !strings.EqualFold(form.Get("format"), "JSON"):
		return nil, nil, aliInvalidArg("isv.invalid-format", "无效的数据格式")
	case form.Get("version") != "1.0":
		return nil, nil, aliInvalidArg("isv.invalid-version", "无效的版本")
	}
	if _, err := alipay.ParseTime(form.Get("timestamp")); err != nil {
		return nil, nil, aliInvalidArg("isv.invalid-timestamp", "非法的时间戳参数")
	}
	if err := alipay.VerifyBytes([]byte(alipay.RequestContent(form)), form.Get("sign"), a.cfg.AppPublicKey); err != nil {
		return nil, nil, aliInvalidArg(alipay.SubCodeInvalidSign, "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配")
	}
	var biz aliBizContent
	if err := json.Unmarshal([]byte(form.Get("biz_content")), &biz); err != nil {
		return nil, nil, aliBizErr("ACQ.INVALID_PARAMETER", "biz_content 不是合法的JSON: "+err.Error())
	}
	return form, &biz, nil
}

// writeSigned answers {"<key>":<value>,"sign":"…"}, signing exactly the
// value bytes it writes.
func (a *Alipay) writeSigned(w http.ResponseWriter, key string, value any) {
	raw, err := json.Marshal(value)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	sig, err := alipay.SignBytes(raw, a.cfg.PrivateKey)
	if err != nil {
		http.Error(w, "sign response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	keyJSON, _ := json.Marshal(key)
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	var b strings.Builder
	b.WriteString("{")
	b.Write(keyJSON)
	b.WriteString(":")
	b.Write(raw)
	b.WriteString(`,"sign":"`)
	b.WriteString(sig)
	b.WriteString(`"}`)
	_, _ = io.WriteString(w, b.String())
}

// ---- trade methods ----

// createTrade registers a trade, or returns the existing one when the
// merchant repeats the same order (Alipay lets an unpaid trade be created
// again with the same content).
func (a *Alipay) createTrade(params url.Values, biz *aliBizContent) (*aliTrade, *alipay.Error) {
	if biz.OutTradeNo == "" || biz.Subject == "" || biz.TotalAmount == "" {
		return nil, aliBizErr("ACQ.INVALID_PARAMETER", "out_trade_no, total_amount and subject are required")
	}
	amount, err := alipay.ParseYuan(string(biz.TotalAmount))
	if err != nil || amount < 1 || amount > alipay.MaxAmountCents {
		return nil, aliBizErr("ACQ.INVALID_PARAMETER", "total_amount 不合法: "+string(biz.TotalAmount))
	}
	var expire time.Time
	if biz.TimeExpire != "" {
		if expire, err = alipay.ParseTime(biz.TimeExpire); err != nil {
			return nil, aliBizErr("ACQ.INVALID_PARAMETER", "time_expire 不合法: "+biz.TimeExpire)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if tr := a.trades[biz.OutTradeNo]; tr != nil {
		a.expireLocked(tr)
		switch {
		case alipay.IsPaid(tr.status):
			return nil, aliBizErr(alipay.SubCodeTradeHasPaid, "交易已被支付")
		case tr.status == alipay.StatusTradeClosed:
			return nil, aliBizErr(alipay.SubCodeTradeHasClose, "交易已经关闭")
		case tr.amount != amount || tr.subject != biz.Subject:
			return nil, aliBizErr(alipay.SubCodeContextChanged, "交易信息被篡改")
		}
		return tr, nil
	}
	now := a.now()
	tr := &aliTrade{
		trade: trade{outTradeNo: biz.OutTradeNo, amount: amount, status: alipay.StatusWaitBuyerPay,
			notifyURL: params.Get("notify_url"), created: now, expire: expire},
		// Alipay's shape: Shanghai date, "22001", 15 digits.
		tradeNo:   strings.ReplaceAll(alipay.FormatTime(now)[:10], "-", "") + "22001" + fmt.Sprintf("%015d", a.nextSeq()),
		subject:   biz.Subject,
		returnURL: params.Get("return_url"),
		quitURL:   biz.QuitURL,
		refunds:   map[string]int64{},
	}
	a.trades[tr.outTradeNo] = tr
	return tr, nil
}

func (a *Alipay) precreate(r *http.Request, params url.Values, biz *aliBizContent) (map[string]string, *alipay.Error) {
	tr, e := a.createTrade(params, biz)
	if e != nil {
		return nil, e
	}
	qr := externalBase(r) + "/cashier?" + url.Values{"out_trade_no": {tr.outTradeNo}}.Encode()
	return map[string]string{"out_trade_no": tr.outTradeNo, "qr_code": qr}, nil
}

// lookupLocked finds the trade a query, close or refund names.
func (a *Alipay) lookupLocked(biz *aliBizContent) (*aliTrade, *alipay.Error) {
	if biz.OutTradeNo == "" && biz.TradeNo == "" {
		return nil, aliBizErr("ACQ.INVALID_PARAMETER", "out_trade_no 和 trade_no 不能同时为空")
	}
	var tr *aliTrade
	if biz.OutTradeNo != "" {
		tr = a.trades[biz.OutTradeNo]
	} else {
		for _, t := range a.trades {
			if t.tradeNo == biz.TradeNo {
				tr = t
				break
			}
		}
	}
	if tr == nil || !tr.scanned || (biz.TradeNo != "" && tr.tradeNo != biz.TradeNo) {
		return nil, aliBizErr(alipay.SubCodeTradeNotExist, "交易不存在")
	}
	a.expireLocked(tr)
	return tr, nil
}

// onTrade runs a query, close or refund method on the trade biz names,
// under the lock; an unknown trade answers ACQ.TRADE_NOT_EXIST.
func (a *Alipay) onTrade(biz *aliBizContent, method func(*aliTrade, *aliBizContent) (map[string]string, *alipay.Error)) (map[string]string, *alipay.Error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tr, e := a.lookupLocked(biz)
	if e != nil {
		return nil, e
	}
	return method(tr, biz)
}

func (a *Alipay) queryLocked(tr *aliTrade, biz *aliBizContent) (map[string]string, *alipay.Error) {
	resp := map[string]string{
		"out_trade_no": tr.outTradeNo, "trade_no": tr.tradeNo, "trade_status": tr.status,
		"total_amount": alipay.FormatYuan(tr.amount), "buyer_logon_id": alipayBuyerLogonID,
		"buyer_pay_amount": "0.00", "receipt_amount": "0.00",
	}
	if !tr.paidAt.IsZero() {
		resp["send_pay_date"] = alipay.FormatTime(tr.paidAt)
		resp["buyer_user_id"] = alipayBuyerID
		resp["buyer_pay_amount"] = alipay.FormatYuan(tr.amount)
		resp["receipt_amount"] = alipay.FormatYuan(tr.amount)
	}
	return resp, nil
}

func (a *Alipay) closeLocked(tr *aliTrade, biz *aliBizContent) (map[string]string, *alipay.Error) {
	if tr.status != alipay.StatusWaitBuyerPay {
		return nil, aliBizErr(alipay.SubCodeTradeStatus, "交易状态不合法: "+tr.status)
	}
	tr.status = alipay.StatusTradeClosed
	return map[string]string{"out_trade_no": tr.outTradeNo, "trade_no": tr.tradeNo}, nil
}

// refundLocked returns money from the seller to the buyer. out_request_no makes it
// idempotent: a repeat answers the earlier result with fund_change N.
func (a *Alipay) refundLocked(tr *aliTrade, biz *aliBizContent) (map[string]string, *alipay.Error) {
	amount, err := alipay.ParseYuan(string(biz.RefundAmount))
	if err != nil || amount < 1 {
		return nil, aliBizErr("ACQ.INVALID_PARAMETER", "refund_amount 不合法: "+string(biz.RefundAmount))
	}
	reqNo := biz.OutRequestNo
	if reqNo == "" {
		reqNo = tr.outTradeNo // Alipay's default: the whole refund is keyed by the trade
	}
	resp := func(fundChange string) map[string]string {
		return map[string]string{
			"out_trade_no": tr.outTradeNo, "trade_no": tr.tradeNo, "buyer_logon_id": alipayBuyerLogonID,
			"buyer_user_id": alipayBuyerID, "fund_change": fundChange, "refund_fee": alipay.FormatYuan(tr.refunded),
			"gmt_refund_pay": alipay.FormatTime(a.now()),
		}
	}
	if prev, ok := tr.refunds[reqNo]; ok {
		if prev != amount {
			return nil, aliBizErr(alipay.SubCodeContextChanged, "同一退款请求号的退款金额不一致")
		}
		return resp("N"), nil
	}
	// A fully refunded trade is TRADE_CLOSED but has been paid.
	if tr.paidAt.IsZero() {
		return nil, aliBizErr(alipay.SubCodeTradeStatus, "交易状态不合法: "+tr.status)
	}
	if tr.refunded+amount > tr.amount {
		return nil, aliBizErr("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
	}
	if err := a.wallets.Transfer(SellerAccount, BuyerAccount, amount); err != nil {
		return nil, aliBizErr("ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足")
	}
	tr.refunds[reqNo] = amount
	tr.refunded += amount
	if tr.refunded == tr.amount {
		tr.status = alipay.StatusTradeClosed
	}
	return resp("Y"), nil
}

// refundQueryLocked answers alipay.trade.fastpay.refund.query: a refund it made
// carries refund_status REFUND_SUCCESS; one it never received answers
// success without refund_status or amounts, as Alipay does.
func (a *Alipay) refundQueryLocked(tr *aliTrade, biz *aliBizContent) (map[string]string, *alipay.Error) {
	if biz.OutRequestNo == "" {
		return nil, aliBizErr("ACQ.INVALID_PARAMETER", "out_request_no 不能为空")
	}
	resp := map[string]string{"out_trade_no": tr.outTradeNo, "trade_no": tr.tradeNo, "out_request_no": biz.OutRequestNo}
	if amount, ok := tr.refunds[biz.OutRequestNo]; ok {
		resp["total_amount"] = alipay.FormatYuan(tr.amount)
		resp["refund_amount"] = alipay.FormatYuan(amount)
		resp["refund_status"] = alipay.RefundStatusSuccess
	}
	return resp, nil
}

// ---- cashier and pay endpoint ----

// scan marks a trade as opened by the buyer: from now on the gateway knows it.
func (a *Alipay) scan(tr *aliTrade) {
	a.mu.Lock()
	tr.scanned = true
	a.mu.Unlock()
}

var aliCashierPage = template.Must(template.New("cashier").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sandbox Alipay cashier</title></head>
<body style="font-family:sans-serif;max-width:28em;margin:2em auto">
<h1>Sandbox Alipay</h1>
{{if .Error}}<p><strong>{{.Error}}</strong></p>{{else}}
<p>{{.Subject}}</p>
<p style="font-size:2em">¥{{.Amount}}</p>
<p>Order {{.OutTradeNo}} · {{.Status}}</p>
<p>Paying from {{.Buyer}} (balance ¥{{.Balance}})</p>
{{if .Payable}}<form method="post" action="pay">
<input type="hidden" name="out_trade_no" value="{{.OutTradeNo}}">
<input type="hidden" name="browser" value="1">
<button type="submit">Pay ¥{{.Amount}}</button>
</form>{{end}}
{{if .QuitURL}}<p><a href="{{.QuitURL}}">Cancel</a></p>{{end}}
{{end}}
</body></html>
`))

type aliCashierView struct {
	Error                               string
	Subject, Amount, OutTradeNo, Status string
	Buyer, Balance                      string
	Payable                             bool
	QuitURL                             string
}

func (a *Alipay) renderCashier(w http.ResponseWriter, tr *aliTrade) {
	a.mu.Lock()
	a.expireLocked(tr)
	v := aliCashierView{Subject: tr.subject, Amount: alipay.FormatYuan(tr.amount), OutTradeNo: tr.outTradeNo,
		Status: tr.status, Buyer: BuyerAccount, Payable: tr.status == alipay.StatusWaitBuyerPay, QuitURL: tr.quitURL}
	a.mu.Unlock()
	v.Balance = alipay.FormatYuan(a.wallets.Balance(BuyerAccount))
	a.writePage(w, http.StatusOK, v)
}

func (a *Alipay) renderError(w http.ResponseWriter, e *alipay.Error) {
	a.writePage(w, http.StatusBadRequest, aliCashierView{Error: e.Error()})
}

func (a *Alipay) writePage(w http.ResponseWriter, status int, v aliCashierView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = aliCashierPage.Execute(w, v)
}

func (a *Alipay) serveCashier(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	tr := a.trades[r.URL.Query().Get("out_trade_no")]
	a.mu.Unlock()
	if tr == nil {
		a.renderError(w, aliBizErr(alipay.SubCodeTradeNotExist, "交易不存在"))
		return
	}
	a.scan(tr)
	a.renderCashier(w, tr)
}

// servePay pays a trade for a person or a script. A browser (the cashier
// form) is redirected to the trade's return_url with signed parameters, as
// Alipay does; anything else gets a line of text.
func (a *Alipay) servePay(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "unreadable form: "+err.Error(), http.StatusBadRequest)
		return
	}
	no := r.Form.Get("out_trade_no")
	if no == "" {
		http.Error(w, "out_trade_no is required", http.StatusBadRequest)
		return
	}
	if err := a.Pay(no); err != nil {
		writePayError(w, err)
		return
	}
	if r.Form.Get("browser") == "1" {
		if target, ok := a.returnURL(no); ok {
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
	}
	writePaid(w, no)
}

// returnURL is the synchronous return redirect: the trade's return_url with
// parameters signed the rsaCheckV1 way.
func (a *Alipay) returnURL(outTradeNo string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tr := a.trades[outTradeNo]
	if tr == nil || tr.returnURL == "" {
		return "", false
	}
	p := url.Values{
		"app_id": {a.cfg.AppID}, "auth_app_id": {a.cfg.AppID}, "charset": {"utf-8"}, "version": {"1.0"},
		"method": {"alipay.trade.page.pay.return"}, "sign_type": {"RSA2"},
		"out_trade_no": {tr.outTradeNo}, "trade_no": {tr.tradeNo}, "total_amount": {alipay.FormatYuan(tr.amount)},
		"timestamp": {alipay.FormatTime(a.now())},
	}
	if a.cfg.SellerID != "" {
		p.Set("seller_id", a.cfg.SellerID)
	}
	sig, err := alipay.SignBytes([]byte(alipay.NotifyContent(p)), a.cfg.PrivateKey)
	if err != nil {
		return "", false
	}
	p.Set("sign", sig)
	sep := "?"
	if strings.Contains(tr.returnURL, "?") {
		sep = "&"
	}
	return tr.returnURL + sep + p.Encode(), true
}
