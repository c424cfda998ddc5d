package alipay

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeGateway answers every request with body.
func fakeGateway(t *testing.T, body func() string) *Client {
	t.Helper()
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		_, _ = w.Write([]byte(body()))
	}))
	t.Cleanup(gw.Close)
	return newTestClient(t, loadKeys(t), gw.URL+"/gateway.do")
}

func mustSign(t *testing.T, msg string) string {
	t.Helper()
	sig, err := SignBytes([]byte(msg), loadKeys(t).alipay)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestResponseVerifiedOverRawBytes: the value has spaces, unsorted keys, an
// escaped character and the sign comes first. Re-serialising it would change
// the bytes; verifying the exact substring must succeed.
func TestResponseVerifiedOverRawBytes(t *testing.T) {
	value := `{ "trade_status" : "TRADE_SUCCESS", "code":"10000","msg":"Success",
		"out_trade_no":"O1", "trade_no":"2024010222001", "total_amount":"12.30",
		"send_pay_date":"2024-01-02 11:04:59", "buyer_logon_id":"159\u002a\u002a\u002a\u002a1111" }`
	sig := mustSign(t, value)
	c := fakeGateway(t, func() string {
		return "{\"sign\":\"" + sig + "\",\n \"alipay_trade_query_response\" :  " + value + " \n}\n"
	})
	st, err := c.Query(context.Background(), "O1")
	if err != nil {
		t.Fatal(err)
	}
	wantPaid := time.Date(2024, 1, 2, 3, 4, 59, 0, time.UTC)
	if st.Status != StatusTradeSuccess || !st.Paid || st.TotalCents != 1230 || st.TradeNo != "2024010222001" || !st.PaidAt.Equal(wantPaid) {
		t.Fatalf("Query = %+v; want paid 1230 fen at %v", st, wantPaid)
	}
}

// TestResponseSignatureOverNormalisedFormRejected: a signature over the
// compact form does not cover the spaced bytes actually sent.
func TestResponseSignatureOverNormalisedFormRejected(t *testing.T) {
	compact := `{"code":"10000","msg":"Success","out_trade_no":"O1","trade_status":"TRADE_SUCCESS","total_amount":"12.30"}`
	spaced := `{"code": "10000", "msg": "Success", "out_trade_no": "O1", "trade_status": "TRADE_SUCCESS", "total_amount": "12.30"}`
	sig := mustSign(t, compact)
	c := fakeGateway(t, func() string { return `{"alipay_trade_query_response":` + spaced + `,"sign":"` + sig + `"}` })
	if _, err := c.Query(context.Background(), "O1"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
}

func TestResponseTamperedAmountRejected(t *testing.T) {
	value := `{"code":"10000","msg":"Success","out_trade_no":"O1","trade_status":"TRADE_SUCCESS","total_amount":"12.30"}`
	sig := mustSign(t, value)
	c := fakeGateway(t, func() string {
		return `{"alipay_trade_query_response":` + strings.Replace(value, "12.30", "0.01", 1) + `,"sign":"` + sig + `"}`
	})
	if _, err := c.Query(context.Background(), "O1"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
}

func TestResponseSignedWithWrongKeyRejected(t *testing.T) {
	value := `{"code":"10000","msg":"Success","out_trade_no":"O1","qr_code":"https://qr.alipay.com/x"}`
	sig, err := SignBytes([]byte(value), loadKeys(t).app)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeGateway(t, func() string { return `{"alipay_trade_precreate_response":` + value + `,"sign":"` + sig + `"}` })
	_, err = c.Precreate(context.Background(), Trade{OutTradeNo: "O1", AmountCents: 1, Subject: "s"})
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
}

func TestUnsignedSuccessRejected(t *testing.T) {
	c := fakeGateway(t, func() string {
		return `{"alipay_trade_precreate_response":{"code":"10000","msg":"Success","out_trade_no":"O1","qr_code":"x"}}`
	})
	_, err := c.Precreate(context.Background(), Trade{OutTradeNo: "O1", AmountCents: 1, Subject: "s"})
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
}

func TestBusinessErrorIsTyped(t *testing.T) {
	value := `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}`
	sig := mustSign(t, value)
	c := fakeGateway(t, func() string { return `{"alipay_trade_close_response":` + value + `,"sign":"` + sig + `"}` })
	err := c.Close(context.Background(), "O1")
	if !errors.Is(err, ErrTradeNotExist) {
		t.Fatalf("err = %v, want ErrTradeNotExist", err)
	}
	if errors.Is(err, ErrTradeHasClose) {
		t.Fatal("TRADE_NOT_EXIST also matches ErrTradeHasClose")
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "40004" || ae.SubMsg != "交易不存在" {
		t.Fatalf("errors.As = %+v", ae)
	}
}

// TestUnsignedErrorResponse: Alipay answers some failures under
// error_response and without sign; they surface as *Error, never success.
func TestUnsignedErrorResponse(t *testing.T) {
	c := fakeGateway(t, func() string {
		return `{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}}`
	})
	_, err := c.Query(context.Background(), "O1")
	var ae *Error
	if !errors.As(err, &ae) || ae.SubCode != "isv.invalid-app-id" {
		t.Fatalf("err = %v, want *Error isv.invalid-app-id", err)
	}
}

func TestMalformedResponses(t *testing.T) {
	value := `{"code":"10000","msg":"Success","out_trade_no":"O1","trade_status":"TRADE_SUCCESS","total_amount":"12.30"}`
	sig := mustSign(t, value)
	for name, body := range map[string]string{
		"not json":      `<html>busy</html>`,
		"array":         `[1]`,
		"other method":  `{"alipay_trade_close_response":` + value + `,"sign":"` + sig + `"}`,
		"duplicate key": `{"alipay_trade_query_response":` + value + `,"alipay_trade_query_response":{"code":"10000"},"sign":"` + sig + `"}`,
		"trailing data": `{"alipay_trade_query_response":` + value + `,"sign":"` + sig + `"}{}`,
		"sign number":   `{"alipay_trade_query_response":` + value + `,"sign":5}`,
	} {
		c := fakeGateway(t, func() string { return body })
		if _, err := c.Query(context.Background(), "O1"); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestRefundAndCloseDecode(t *testing.T) {
	refund := `{"code":"10000","msg":"Success","buyer_logon_id":"159****1111","fund_change":"Y","out_trade_no":"O1","refund_fee":"12.30","trade_no":"T1"}`
	closeV := `{"code":"10000","msg":"Success","out_trade_no":"O1","trade_no":"T1"}`
	var body string
	c := fakeGateway(t, func() string { return body })
	body = `{"alipay_trade_refund_response":` + refund + `,"sign":"` + mustSign(t, refund) + `"}`
	rr, err := c.Refund(context.Background(), "O1", 1230, "R1")
	if err != nil || !rr.FundChange || rr.RefundedCents != 1230 || rr.TradeNo != "T1" {
		t.Fatalf("Refund = %+v, %v", rr, err)
	}
	body = `{"alipay_trade_close_response":` + closeV + `,"sign":"` + mustSign(t, closeV) + `"}`
	if err := c.Close(context.Background(), "O1"); err != nil {
		t.Fatal(err)
	}
}

func TestTradeValidation(t *testing.T) {
	c := newTestClient(t, loadKeys(t), "https://gw.example.com/gateway.do")
	for name, tr := range map[string]Trade{
		"no out_trade_no": {AmountCents: 1, Subject: "s"},
		"bad chars":       {OutTradeNo: "O-1/2", AmountCents: 1, Subject: "s"},
		"zero amount":     {OutTradeNo: "O1", AmountCents: 0, Subject: "s"},
		"over ceiling":    {OutTradeNo: "O1", AmountCents: MaxAmountCents + 1, Subject: "s"},
		"no subject":      {OutTradeNo: "O1", AmountCents: 1},
		"ampersand":       {OutTradeNo: "O1", AmountCents: 1, Subject: "a&b"},
	} {
		if _, err := c.PagePayURL(tr); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPagePayURLIsSignedAndCarriesReturnURL(t *testing.T) {
	k := loadKeys(t)
	c := newTestClient(t, k, "https://gw.example.com/gateway.do")
	raw, err := c.WapPayURL(Trade{OutTradeNo: "O1", AmountCents: 1, Subject: "a b+c", Expire: fixedNow.Add(15 * time.Minute)}, "https://m.example.com/quit")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(raw, "https://gw.example.com/gateway.do?") {
		t.Fatalf("URL %s", raw)
	}
	u, _ := parseURLQuery(raw)
	if u.Get("method") != "alipay.trade.wap.pay" || u.Get("return_url") != "https://m.example.com/paid" || u.Get("notify_url") == "" {
		t.Fatalf("params %v", u)
	}
	if !strings.Contains(u.Get("biz_content"), `"time_expire":"2024-01-02 11:19:05"`) || !strings.Contains(u.Get("biz_content"), `"product_code":"QUICK_WAP_WAY"`) {
		t.Fatalf("biz_content %s", u.Get("biz_content"))
	}
	if err := VerifyBytes([]byte(RequestContent(u)), u.Get("sign"), &k.app.PublicKey); err != nil {
		t.Fatal(err)
	}
}

// TestRefundQueryDecode: only refund_status REFUND_SUCCESS is a finished
// refund. Alipay answers code 10000 without refund_status for a refund it has
// not received or not finished, and one for another out_request_no or with
// an unreadable amount is refused.
func TestRefundQueryDecode(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		succeeded   bool
		cents       int64
		wantErr     bool
	}{
		{"done", `{"code":"10000","msg":"Success","out_trade_no":"O1","trade_no":"T1","out_request_no":"R1","total_amount":"12.30","refund_amount":"12.30","refund_status":"REFUND_SUCCESS"}`, true, 1230, false},
		{"unknown", `{"code":"10000","msg":"Success","out_trade_no":"O1","trade_no":"T1"}`, false, 0, false},
		{"no status", `{"code":"10000","msg":"Success","out_trade_no":"O1","out_request_no":"R1","refund_amount":"12.30"}`, false, 1230, false},
		{"other request", `{"code":"10000","msg":"Success","out_trade_no":"O1","out_request_no":"R2","refund_amount":"12.30","refund_status":"REFUND_SUCCESS"}`, false, 0, true},
		{"bad amount", `{"code":"10000","msg":"Success","out_trade_no":"O1","out_request_no":"R1","refund_amount":"12.3x","refund_status":"REFUND_SUCCESS"}`, false, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := mustSign(t, tc.value)
			c := fakeGateway(t, func() string {
				return `{"alipay_trade_fastpay_refund_query_response":` + tc.value + `,"sign":"` + sig + `"}`
			})
			st, err := c.QueryRefund(context.Background(), "O1", "R1")
			if tc.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("QueryRefund = %+v, %v; want ErrMalformed", st, err)
				}
				return
			}
			if err != nil || st.Succeeded != tc.succeeded || st.RefundedCents != tc.cents {
				t.Fatalf("QueryRefund = %+v, %v; want succeeded %v, %d fen", st, err, tc.succeeded, tc.cents)
			}
		})
	}
}
