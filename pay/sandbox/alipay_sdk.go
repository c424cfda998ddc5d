package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/flashgrab/flashgrab/pay/alipay"
)

// methodAppPay is the method of the order string an app hands the Alipay
// SDK; it never comes to the gateway.
const methodAppPay = "alipay.trade.app.pay"

// PayOrderString pays an app trade as the Alipay SDK does with the order
// string the merchant's server signed: it must parse as a query string, pass
// the gateway's checks (app_id, RSA2 signature by the app key over the
// sorted raw parameters, timestamp, version), name alipay.trade.app.pay with
// product_code QUICK_MSECURITY_PAY and a valid trade. The trade is created
// (or found, when the SDK sends the same string again) and paid as Pay does:
// same notify path, same options. It returns the trade's out_trade_no.
func (a *Alipay) PayOrderString(orderString string, opts ...PayOption) (string, error) {
	form, err := url.ParseQuery(orderString)
	if err != nil {
		return "", fmt.Errorf("sandbox alipay: app pay: %w: order string is not a query string: %v", errClientParams, err)
	}
	if m := form.Get("method"); m != methodAppPay {
		return "", fmt.Errorf("sandbox alipay: app pay: %w: method %q, want %s", errClientParams, m, methodAppPay)
	}
	params, biz, e := a.checkRequest(form)
	if e != nil {
		return "", fmt.Errorf("sandbox alipay: app pay: %w: %w", errClientParams, e)
	}
	if biz.ProductCode != alipay.ProductCodeApp {
		return "", fmt.Errorf("sandbox alipay: app pay: %w: product_code %q, want %s", errClientParams, biz.ProductCode, alipay.ProductCodeApp)
	}
	if params.Get("notify_url") == "" {
		return "", fmt.Errorf("sandbox alipay: app pay: %w: notify_url is missing", errClientParams)
	}
	tr, e := a.createTrade(params, biz)
	if e != nil {
		if e.SubCode == alipay.SubCodeTradeHasPaid || e.SubCode == alipay.SubCodeTradeHasClose {
			return "", fmt.Errorf("sandbox alipay: app pay %s: trade is not payable: %w", biz.OutTradeNo, e)
		}
		return "", fmt.Errorf("sandbox alipay: app pay: %w: %w", errClientParams, e)
	}
	return tr.outTradeNo, a.Pay(tr.outTradeNo, opts...)
}

// serveSDK answers POST /sdk/app with the form field order_string: the
// Alipay SDK's payment, for the demo and for scripts.
func (a *Alipay) serveSDK(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "unreadable form: "+err.Error(), http.StatusBadRequest)
		return
	}
	no, err := a.PayOrderString(r.PostForm.Get("order_string"))
	switch {
	case errors.Is(err, errClientParams):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		writePayError(w, err)
	default:
		writePaid(w, no)
	}
}
