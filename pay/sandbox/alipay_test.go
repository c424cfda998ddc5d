package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/pay/alipay"
)

// aliFastRetry compresses Alipay's 25 hours of retries into about 90 ms.
var aliFastRetry = fast(AlipayRetries)

var (
	aliKeysOnce                  sync.Once
	aliAppKey, aliKey, aliOthKey *rsa.PrivateKey
)

// aliTestKeys generates the app, "Alipay" and an unrelated key once per test binary.
func aliTestKeys(t *testing.T) (app, ali, other *rsa.PrivateKey) {
	t.Helper()
	aliKeysOnce.Do(func() {
		var keys [3]*rsa.PrivateKey
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		}
		aliAppKey, aliKey, aliOthKey = keys[0], keys[1], keys[2]
	})
	return aliAppKey, aliKey, aliOthKey
}

type aliEnv struct {
	client   *alipay.Client
	sb       *Alipay
	wallets  *Wallets
	merchant *merchant
	base     string // where the sandbox is mounted, e.g. http://127.0.0.1:1234/alipay
	aliPub   *rsa.PublicKey
}

// newAliEnv wires the real client and the simulator, mounted under /alipay/
// as the integrator does, with a merchant notify endpoint that verifies with
// ParseNotify and answers "success" or "fail".
func newAliEnv(t *testing.T, retry Schedule) *aliEnv {
	t.Helper()
	appKey, aliKey, _ := aliTestKeys(t)
	e := &aliEnv{}
	e.merchant = newMerchant(func(_ *http.Request, body []byte) (notice, error) {
		n, err := e.client.ParseNotify(body)
		if err != nil {
			return notice{}, err
		}
		return notice{outTradeNo: n.OutTradeNo, tradeID: n.TradeNo, cents: n.TotalCents, paid: n.Paid, raw: n}, nil
	}, func(w http.ResponseWriter) { _, _ = io.WriteString(w, alipay.AckSuccess) },
		func(w http.ResponseWriter, _ error) { _, _ = io.WriteString(w, alipay.AckFail) })
	notifySrv := httptest.NewServer(e.merchant)
	t.Cleanup(notifySrv.Close)
	mux := http.NewServeMux()
	gw := httptest.NewServer(mux)
	t.Cleanup(gw.Close)

	ccfg, scfg := devAlipayConfigs(appKey, aliKey, gw.URL+"/alipay/gateway.do", notifySrv.URL+"/v1/notify/alipay")
	ccfg.ReturnURL = "https://merchant.example/paid"
	scfg.Retry = retry
	e.wallets = NewWallets()
	sb, err := NewAlipay(scfg, e.wallets)
	if err != nil {
		t.Fatal(err)
	}
	e.sb = sb
	t.Cleanup(sb.Close) // runs before the servers close: deliveries stop first
	mux.Handle("/alipay/", http.StripPrefix("/alipay", sb))
	if e.client, err = alipay.New(ccfg); err != nil {
		t.Fatal(err)
	}
	e.base, e.aliPub = gw.URL+"/alipay", &aliKey.PublicKey
	return e
}

// order registers an order with the merchant and precreates its trade.
func (e *aliEnv) order(t *testing.T, no string, cents int64) string {
	t.Helper()
	e.merchant.expect(no, cents)
	qr, err := e.client.Precreate(context.Background(), alipay.Trade{OutTradeNo: no, AmountCents: cents, Subject: "秒杀 " + no})
	if err != nil {
		t.Fatal(err)
	}
	return qr
}

// newAliHarness is the Alipay side of TestBothProviders: a precreate trade
// is scanned (opened at its QR code) so that the gateway knows it; an
// expired one is not, so paying it is what scans it.
func newAliHarness(t *testing.T, retry func([]time.Duration) Schedule) *harness {
	e := newAliEnv(t, retry(AlipayRetries))
	ctx := context.Background()
	return &harness{
		sim: e.sb, wallets: e.wallets, merchant: e.merchant, base: e.base, states: alipayWays(),
		ackStatus: http.StatusOK, badSignature: alipay.ErrBadSignature,
		order: func(t *testing.T, no string, cents int64) { aliGet(t, e.order(t, no, cents)) },
		expiredOrder: func(no string, cents int64) error {
			e.merchant.expect(no, cents)
			_, err := e.client.Precreate(ctx, alipay.Trade{OutTradeNo: no, AmountCents: cents, Subject: "s", Expire: time.Now().Add(-time.Minute)})
			return err
		},
		closeTrade: func(no string) error { return e.client.Close(ctx, no) },
		queryTrade: func(no string) (tradeState, error) {
			st, err := e.client.Query(ctx, no)
			if err != nil {
				return tradeState{}, err
			}
			return tradeState{st.Status, st.Paid, st.TotalCents}, nil
		},
		refund: func(no, reqNo string, cents int64) error {
			_, err := e.client.Refund(ctx, no, cents, reqNo)
			return err
		},
		settleRefund: func(*testing.T, string) {},
	}
}

// TestAlipayPrecreatePayNotify: what TestBothProviders cannot see, the QR
// code's cashier and the notify's fields, as Alipay sends them.
func TestAlipayPrecreatePayNotify(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	qr := e.order(t, "O1", 1230)
	if !strings.HasPrefix(qr, e.base+"/cashier?") {
		t.Fatalf("qr_code %q does not point at the mounted cashier %s", qr, e.base)
	}
	page := aliGet(t, qr)
	if !strings.Contains(page, "O1") || !strings.Contains(page, "¥12.30") {
		t.Fatalf("cashier page lacks the order: %s", page)
	}
	st, err := e.client.Query(ctx, "O1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sb.Pay("O1"); err != nil {
		t.Fatal(err)
	}
	if err := waitNotify(t, e.sb, "O1"); err != nil {
		t.Fatal(err)
	}
	seen := e.merchant.seen()
	if len(seen.rejected) != 0 || len(seen.notices) != 1 {
		t.Fatalf("merchant got %d verified notifies, rejected %v", len(seen.notices), seen.rejected)
	}
	n := seen.notices[0].raw.(*alipay.Notification)
	if n.OutTradeNo != "O1" || n.TotalCents != 1230 || !n.Paid || n.TradeNo != st.TradeNo || n.GmtPayment.IsZero() {
		t.Fatalf("notification %+v", n)
	}
	for _, field := range []string{"notify_time", "notify_type", "notify_id", "app_id", "charset", "version", "sign_type",
		"sign", "trade_no", "out_trade_no", "buyer_id", "seller_id", "trade_status", "total_amount", "receipt_amount",
		"buyer_pay_amount", "subject", "gmt_create", "gmt_payment", "fund_bill_list"} {
		if n.Raw.Get(field) == "" {
			t.Errorf("notify lacks %s", field)
		}
	}
	if d := e.sb.Deliveries("O1"); len(d) != 1 || d[0].Body != "success" {
		t.Fatalf("deliveries %+v", d)
	}
	st, err = e.client.Query(ctx, "O1")
	if err != nil || st.PaidAt.IsZero() {
		t.Fatalf("Query after paying = %+v, %v", st, err)
	}
	if _, err := e.client.Precreate(ctx, alipay.Trade{OutTradeNo: "O1", AmountCents: 1230, Subject: "秒杀 O1"}); !errors.Is(err, alipay.ErrTradeHasPaid) {
		t.Fatalf("precreate of a paid trade: %v", err)
	}
}

// TestAlipayNotifyAckMustBeExact: Alipay stops only on exactly "success";
// a merchant answering "success\n" gets the first try plus one per retry
// delay, 8 in all.
func TestAlipayNotifyAckMustBeExact(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.merchant.refuse = func(w http.ResponseWriter, _ error) { _, _ = io.WriteString(w, "success\n") }
	e.merchant.refuseCalls(-1)
	e.order(t, "O3", 100)
	if err := e.sb.Pay("O3"); err != nil {
		t.Fatal(err)
	}
	if err := waitNotify(t, e.sb, "O3"); err == nil {
		t.Fatal("Wait reported success for a never-acknowledged notify")
	}
	d := e.sb.Deliveries("O3")
	if len(d) != len(AlipayRetries)+1 {
		t.Fatalf("%d deliveries, want %d", len(d), len(AlipayRetries)+1)
	}
	for _, rec := range d {
		if rec.Acked || rec.Body != "success\n" {
			t.Fatalf("delivery %+v", rec)
		}
	}
}

// TestAlipayCloseAnswers: Alipay's codes for closing or creating again a
// closed trade, and for an unknown one.
func TestAlipayCloseAnswers(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	aliGet(t, e.order(t, "O4", 900)) // scanned: Alipay knows the trade
	if err := e.client.Close(ctx, "O4"); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Close(ctx, "O4"); !errors.Is(err, alipay.ErrTradeStatus) {
		t.Fatalf("closing twice: %v", err)
	}
	if _, err := e.client.Precreate(ctx, alipay.Trade{OutTradeNo: "O4", AmountCents: 900, Subject: "秒杀 O4"}); !errors.Is(err, alipay.ErrTradeHasClose) {
		t.Fatalf("precreate of a closed trade: %v", err)
	}
	if err := e.client.Close(ctx, "NOPE"); !errors.Is(err, alipay.ErrTradeNotExist) {
		t.Fatalf("closing an unknown trade: %v", err)
	}
	if _, err := e.client.Query(ctx, "NOPE"); !errors.Is(err, alipay.ErrTradeNotExist) {
		t.Fatalf("querying an unknown trade: %v", err)
	}
}

// TestAlipayPrecreateExistsOnlyOnceScanned: like the real gateway, a
// precreate trade nobody has scanned is unknown to query and close; the
// QR code stays payable, and once scanned the trade is there.
func TestAlipayPrecreateExistsOnlyOnceScanned(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	qr := e.order(t, "O10", 700)
	if _, err := e.client.Query(ctx, "O10"); !errors.Is(err, alipay.ErrTradeNotExist) {
		t.Fatalf("query before the scan: %v, want ACQ.TRADE_NOT_EXIST", err)
	}
	if err := e.client.Close(ctx, "O10"); !errors.Is(err, alipay.ErrTradeNotExist) {
		t.Fatalf("close before the scan: %v, want ACQ.TRADE_NOT_EXIST", err)
	}
	aliGet(t, qr)
	st, err := e.client.Query(ctx, "O10")
	if err != nil || st.Status != alipay.StatusWaitBuyerPay || st.TotalCents != 700 {
		t.Fatalf("query after the scan = %+v, %v", st, err)
	}
}

// TestAlipayPayWithoutNotify: WithoutNotify pays and moves the money but
// never notifies; the merchant finds the payment only by querying.
func TestAlipayPayWithoutNotify(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	e.order(t, "O11", 300)
	if err := e.sb.Pay("O11", WithoutNotify()); err != nil {
		t.Fatal(err)
	}
	if e.sb.Deliveries("O11") != nil {
		t.Fatal("notified although told not to")
	}
	if calls := e.merchant.seen().calls; calls != 0 {
		t.Fatalf("merchant got %d calls", calls)
	}
	st, err := e.client.Query(ctx, "O11")
	if err != nil || !st.Paid || st.TotalCents != 300 {
		t.Fatalf("query = %+v, %v", st, err)
	}
	if got := e.wallets.Balance(SellerAccount); got != 300 {
		t.Fatalf("seller balance %d", got)
	}
}

// TestAlipayRefundFundChange: of concurrent repeats of one refund exactly
// one reports fund_change Y; the refund query confirms it; a full refund
// closes the trade.
func TestAlipayRefundFundChange(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	aliGet(t, e.order(t, "O6", 1000))
	if _, err := e.client.Refund(ctx, "O6", 1000, "R0"); !errors.Is(err, alipay.ErrTradeStatus) {
		t.Fatalf("refunding an unpaid trade: %v", err)
	}
	if err := e.sb.Pay("O6"); err != nil {
		t.Fatal(err)
	}
	results := make([]*alipay.RefundResult, 4)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i], errs[i] = e.client.Refund(ctx, "O6", 400, "R1") })
	}
	wg.Wait()
	changed := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.RefundedCents != 400 {
			t.Fatalf("refund_fee %d, want 400", r.RefundedCents)
		}
		if r.FundChange {
			changed++
		}
	}
	if changed != 1 {
		t.Fatalf("%d calls report fund_change, want 1", changed)
	}
	// fund_change N is decided by the refund query.
	if st, err := e.client.QueryRefund(ctx, "O6", "R1"); err != nil || !st.Succeeded || st.RefundedCents != 400 || st.Status != alipay.RefundStatusSuccess {
		t.Fatalf("refund query R1 = %+v, %v", st, err)
	}
	if st, err := e.client.QueryRefund(ctx, "O6", "R9"); err != nil || st.Succeeded || st.RefundedCents != 0 {
		t.Fatalf("refund query of a refund never asked = %+v, %v", st, err)
	}
	r, err := e.client.Refund(ctx, "O6", 600, "R2")
	if err != nil || !r.FundChange || r.RefundedCents != 1000 {
		t.Fatalf("second refund = %+v, %v", r, err)
	}
	if st, err := e.client.Query(ctx, "O6"); err != nil || st.Status != alipay.StatusTradeClosed {
		t.Fatalf("Query after full refund = %+v, %v", st, err)
	}
	if r, err := e.client.Refund(ctx, "O6", 400, "R1"); err != nil || r.FundChange || r.RefundedCents != 1000 {
		t.Fatalf("repeat after full refund = %+v, %v", r, err)
	}
}

func TestAlipayRejectsBadSignatures(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	_, aliKey, other := aliTestKeys(t)
	ctx := context.Background()

	// A client signing with a key the sandbox does not know.
	wrong, err := alipay.New(alipay.Config{AppID: DevAlipayAppID, PrivateKey: other, AlipayPublicKey: &aliKey.PublicKey,
		Gateway: e.base + "/gateway.do"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.Precreate(ctx, alipay.Trade{OutTradeNo: "O7", AmountCents: 100, Subject: "s"})
	var ae *alipay.Error
	if !errors.As(err, &ae) || ae.SubCode != alipay.SubCodeInvalidSign || ae.Code != "40002" {
		t.Fatalf("wrong key: %v", err)
	}
	if e.sb.Pay("O7") == nil {
		t.Fatal("a trade was created from a badly signed request")
	}

	// A correctly signed page-pay URL whose amount is edited afterwards.
	raw, err := e.client.PagePayURL(alipay.Trade{OutTradeNo: "O8", AmountCents: 10000, Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(raw, url.QueryEscape(`"total_amount":"100.00"`), url.QueryEscape(`"total_amount":"0.01"`), 1)
	if tampered == raw {
		t.Fatal("could not find the amount in the URL")
	}
	resp, err := http.Get(tampered)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), alipay.SubCodeInvalidSign) {
		t.Fatalf("tampered page pay: %d %s", resp.StatusCode, body)
	}

	// Another app id.
	otherApp, err := alipay.New(alipay.Config{AppID: "2021999999999999", PrivateKey: aliAppKey, AlipayPublicKey: &aliKey.PublicKey,
		Gateway: e.base + "/gateway.do"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := otherApp.Query(ctx, "O8"); !errors.As(err, &ae) || ae.SubCode != "isv.invalid-app-id" {
		t.Fatalf("wrong app id: %v", err)
	}
}

// TestAlipayPagePayCashierFlow walks the browser path: signed gateway URL,
// cashier page, pay button, signed return redirect, then the notify.
func TestAlipayPagePayCashierFlow(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.merchant.expect("O11", 4200)
	for i, build := range []func() (string, error){
		func() (string, error) {
			return e.client.PagePayURL(alipay.Trade{OutTradeNo: "O11", AmountCents: 4200, Subject: "page"})
		},
		func() (string, error) {
			return e.client.WapPayURL(alipay.Trade{OutTradeNo: "O11", AmountCents: 4200, Subject: "page"}, "https://merchant.example/quit")
		},
	} {
		raw, err := build()
		if err != nil {
			t.Fatal(err)
		}
		page := aliGet(t, raw)
		if !strings.Contains(page, `action="pay"`) || !strings.Contains(page, "¥42.00") {
			t.Fatalf("cashier %d: %s", i, page)
		}
	}
	payURL := e.base + "/pay"
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(payURL, url.Values{"out_trade_no": {"O11"}, "browser": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || loc.Host != "merchant.example" || loc.Path != "/paid" {
		t.Fatalf("pay answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	q := loc.Query()
	if err := alipay.VerifyBytes([]byte(alipay.NotifyContent(q)), q.Get("sign"), e.aliPub); err != nil {
		t.Fatalf("return redirect signature: %v", err)
	}
	if q.Get("out_trade_no") != "O11" || q.Get("total_amount") != "42.00" {
		t.Fatalf("return params %v", q)
	}
	if err := waitNotify(t, e.sb, "O11"); err != nil {
		t.Fatal(err)
	}
}

func TestDevAlipayPairsKeys(t *testing.T) {
	client, sb, err := DevAlipay("http://127.0.0.1:8080/alipay/gateway.do", "http://127.0.0.1:8080/v1/notify/alipay")
	if err != nil {
		t.Fatal(err)
	}
	if !client.AlipayPublicKey.Equal(sb.PrivateKey.Public()) || !sb.AppPublicKey.Equal(client.PrivateKey.Public()) {
		t.Fatal("dev keys do not pair up")
	}
	if client.AppID != sb.AppID || client.SellerID != sb.SellerID || sb.Retry.Scale <= 0 {
		t.Fatalf("dev configs disagree: %+v / %+v", client, sb)
	}
	if _, err := alipay.New(client); err != nil {
		t.Fatal(err)
	}
}

func aliGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return string(b)
}
