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
var aliFastRetry = Schedule{Delays: AlipayRetries, Scale: 1e-6}

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

// aliMerchant is a notify endpoint as the real merchant writes it: verify
// with ParseNotify, check the amount against the order, credit once, answer.
type aliMerchant struct {
	client *alipay.Client
	// script, when it returns a non-empty body for the nth call (1-based),
	// answers that instead of processing.
	script func(n int) string

	mu       sync.Mutex
	calls    int
	orders   map[string]int64
	credited map[string]int
	notes    []*alipay.Notification
	rejected []error
}

func (m *aliMerchant) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.script != nil {
		if ans := m.script(m.calls); ans != "" {
			_, _ = io.WriteString(w, ans)
			return
		}
	}
	reject := func(err error) {
		m.rejected = append(m.rejected, err)
		_, _ = io.WriteString(w, alipay.AckFail)
	}
	if err != nil {
		reject(err)
		return
	}
	n, err := m.client.ParseNotify(body)
	if err != nil {
		reject(err)
		return
	}
	want, ok := m.orders[n.OutTradeNo]
	if !ok || n.TotalCents != want {
		reject(errors.New("amount or order mismatch"))
		return
	}
	if n.Paid {
		m.credited[n.OutTradeNo]++
		if m.credited[n.OutTradeNo] == 1 {
			m.notes = append(m.notes, n)
		}
	}
	_, _ = io.WriteString(w, alipay.AckSuccess)
}

func (m *aliMerchant) snapshot() (calls int, notes []*alipay.Notification, rejected []error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls, append([]*alipay.Notification(nil), m.notes...), append([]error(nil), m.rejected...)
}

type aliEnv struct {
	client   *alipay.Client
	sb       *Alipay
	wallets  *Wallets
	merchant *aliMerchant
	base     string // where the sandbox is mounted, e.g. http://127.0.0.1:1234/alipay
	aliPub   *rsa.PublicKey
}

// newAliEnv wires the real client and the simulator, mounted under /alipay/
// as the integrator does, with a merchant notify endpoint.
func newAliEnv(t *testing.T, retry Schedule) *aliEnv {
	t.Helper()
	appKey, aliKey, _ := aliTestKeys(t)
	m := &aliMerchant{orders: map[string]int64{}, credited: map[string]int{}}
	notifySrv := httptest.NewServer(m)
	t.Cleanup(notifySrv.Close)
	mux := http.NewServeMux()
	gw := httptest.NewServer(mux)
	t.Cleanup(gw.Close)

	ccfg, scfg := devAlipayConfigs(appKey, aliKey, gw.URL+"/alipay/gateway.do", notifySrv.URL+"/v1/notify/alipay")
	ccfg.ReturnURL = "https://merchant.example/paid"
	scfg.Retry = retry
	w := NewWallets()
	sb, err := NewAlipay(scfg, w)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close) // runs before the servers close: deliveries stop first
	mux.Handle("/alipay/", http.StripPrefix("/alipay", sb))
	c, err := alipay.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	m.client = c
	return &aliEnv{client: c, sb: sb, wallets: w, merchant: m, base: gw.URL + "/alipay", aliPub: &aliKey.PublicKey}
}

// order registers an order with the merchant and precreates its trade.
func (e *aliEnv) order(t *testing.T, no string, cents int64) string {
	t.Helper()
	e.merchant.mu.Lock()
	e.merchant.orders[no] = cents
	e.merchant.mu.Unlock()
	qr, err := e.client.Precreate(context.Background(), alipay.Trade{OutTradeNo: no, AmountCents: cents, Subject: "秒杀 " + no})
	if err != nil {
		t.Fatal(err)
	}
	return qr
}

func aliWait(t *testing.T, sb *Alipay, no string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return sb.Wait(ctx, no)
}

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
	if err != nil || st.Status != alipay.StatusWaitBuyerPay || st.Paid || st.TotalCents != 1230 {
		t.Fatalf("Query before paying = %+v, %v", st, err)
	}

	if err := e.sb.Pay("O1"); err != nil {
		t.Fatal(err)
	}
	if err := aliWait(t, e.sb, "O1"); err != nil {
		t.Fatal(err)
	}
	_, notes, rejected := e.merchant.snapshot()
	if len(rejected) != 0 || len(notes) != 1 {
		t.Fatalf("merchant got %d verified notifies, rejected %v", len(notes), rejected)
	}
	n := notes[0]
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
	d := e.sb.Deliveries("O1")
	if len(d) != 1 || !d[0].Acked || d[0].Attempt != 1 || d[0].Body != "success" || d[0].Status != http.StatusOK {
		t.Fatalf("deliveries %+v", d)
	}
	if got := e.wallets.Balance(BuyerAccount); got != buyerOpeningCents-1230 {
		t.Fatalf("buyer balance %d", got)
	}
	if got := e.wallets.Balance(SellerAccount); got != 1230 {
		t.Fatalf("seller balance %d", got)
	}
	st, err = e.client.Query(ctx, "O1")
	if err != nil || st.Status != alipay.StatusTradeSuccess || !st.Paid || st.PaidAt.IsZero() {
		t.Fatalf("Query after paying = %+v, %v", st, err)
	}
	if err := e.sb.Pay("O1"); err == nil {
		t.Fatal("paying twice succeeded")
	}
	if got := e.wallets.Balance(SellerAccount); got != 1230 {
		t.Fatalf("seller balance after second pay %d", got)
	}
	if _, err := e.client.Precreate(ctx, alipay.Trade{OutTradeNo: "O1", AmountCents: 1230, Subject: "秒杀 O1"}); !errors.Is(err, alipay.ErrTradeHasPaid) {
		t.Fatalf("precreate of a paid trade: %v", err)
	}
}

func TestAlipayNotifyRetriedUntilSuccess(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.merchant.script = func(n int) string {
		if n <= 2 {
			return alipay.AckFail
		}
		return ""
	}
	e.order(t, "O2", 500)
	if err := e.sb.Pay("O2"); err != nil {
		t.Fatal(err)
	}
	if err := aliWait(t, e.sb, "O2"); err != nil {
		t.Fatal(err)
	}
	d := e.sb.Deliveries("O2")
	if len(d) != 3 {
		t.Fatalf("%d deliveries, want 3: %+v", len(d), d)
	}
	for i, rec := range d {
		if rec.Attempt != i+1 || rec.Acked != (i == 2) {
			t.Errorf("delivery %d: %+v", i, rec)
		}
	}
	if calls, notes, _ := e.merchant.snapshot(); calls != 3 || len(notes) != 1 {
		t.Fatalf("merchant saw %d calls, %d credits", calls, len(notes))
	}
}

// TestAlipayNotifyGivesUpAfterSchedule: a merchant that never says exactly
// "success" gets the first try plus one per retry delay, 8 in all.
func TestAlipayNotifyGivesUpAfterSchedule(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.merchant.script = func(int) string { return "success\n" } // close is not enough
	e.order(t, "O3", 100)
	if err := e.sb.Pay("O3"); err != nil {
		t.Fatal(err)
	}
	if err := aliWait(t, e.sb, "O3"); err == nil {
		t.Fatal("Wait reported success for a never-acknowledged notify")
	}
	d := e.sb.Deliveries("O3")
	if len(d) != len(AlipayRetries)+1 {
		t.Fatalf("%d deliveries, want %d", len(d), len(AlipayRetries)+1)
	}
	for _, rec := range d {
		if rec.Acked {
			t.Fatalf("acked %+v", rec)
		}
	}
}

func TestAlipayCloseThenPayFails(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	aliGet(t, e.order(t, "O4", 900)) // scanned: Alipay knows the trade
	if err := e.client.Close(ctx, "O4"); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.Pay("O4"); err == nil {
		t.Fatal("paying a closed trade succeeded")
	}
	if got := e.wallets.Balance(BuyerAccount); got != buyerOpeningCents {
		t.Fatalf("buyer balance %d after a refused payment", got)
	}
	if e.sb.Deliveries("O4") != nil {
		t.Fatal("a closed trade was notified")
	}
	st, err := e.client.Query(ctx, "O4")
	if err != nil || st.Status != alipay.StatusTradeClosed || st.Paid {
		t.Fatalf("Query = %+v, %v", st, err)
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
	if calls, _, _ := e.merchant.snapshot(); calls != 0 {
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

func TestAlipayExpiredTradeCannotBePaid(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	tr := alipay.Trade{OutTradeNo: "O5", AmountCents: 100, Subject: "s", Expire: time.Now().Add(-time.Minute)}
	if _, err := e.client.Precreate(ctx, tr); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.Pay("O5"); err == nil {
		t.Fatal("paid after time_expire")
	}
	if st, err := e.client.Query(ctx, "O5"); err != nil || st.Status != alipay.StatusTradeClosed {
		t.Fatalf("Query = %+v, %v", st, err)
	}
}

func TestAlipayRefundIdempotent(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	ctx := context.Background()
	aliGet(t, e.order(t, "O6", 1000))
	if _, err := e.client.Refund(ctx, "O6", 1000, "R0"); !errors.Is(err, alipay.ErrTradeStatus) {
		t.Fatalf("refunding an unpaid trade: %v", err)
	}
	if err := e.sb.Pay("O6"); err != nil {
		t.Fatal(err)
	}
	if err := aliWait(t, e.sb, "O6"); err != nil {
		t.Fatal(err)
	}

	// The same out_request_no, concurrently: money moves once.
	var wg sync.WaitGroup
	results := make([]*alipay.RefundResult, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.client.Refund(ctx, "O6", 400, "R1")
		}()
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
	if got := e.wallets.Balance(SellerAccount); got != 600 {
		t.Fatalf("seller balance %d, want 600", got)
	}
	if _, err := e.client.Refund(ctx, "O6", 700, "R2"); err == nil {
		t.Fatal("refunded more than was paid")
	}
	r, err := e.client.Refund(ctx, "O6", 600, "R2")
	if err != nil || !r.FundChange || r.RefundedCents != 1000 {
		t.Fatalf("second refund = %+v, %v", r, err)
	}
	if e.wallets.Balance(BuyerAccount) != buyerOpeningCents || e.wallets.Balance(SellerAccount) != 0 {
		t.Fatalf("balances buyer %d seller %d after full refund", e.wallets.Balance(BuyerAccount), e.wallets.Balance(SellerAccount))
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

func TestAlipayDuplicateNotifies(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.order(t, "O9", 321)
	if err := e.sb.Pay("O9", WithDuplicates(5)); err != nil {
		t.Fatal(err)
	}
	if err := aliWait(t, e.sb, "O9"); err != nil {
		t.Fatal(err)
	}
	d := e.sb.Deliveries("O9")
	copies := map[int]bool{}
	for _, rec := range d {
		if !rec.Acked || rec.Attempt != 1 {
			t.Fatalf("delivery %+v", rec)
		}
		copies[rec.Copy] = true
	}
	if len(d) != 5 || len(copies) != 5 {
		t.Fatalf("%d deliveries over %d copies, want 5 and 5", len(d), len(copies))
	}
	e.merchant.mu.Lock()
	credited := e.merchant.credited["O9"]
	e.merchant.mu.Unlock()
	if credited != 5 {
		t.Fatalf("merchant verified %d of 5 duplicates", credited)
	}
	if got := e.wallets.Balance(SellerAccount); got != 321 {
		t.Fatalf("duplicates moved money: seller %d", got)
	}
}

func TestAlipayForgedAndMisstatedNotifiesRejected(t *testing.T) {
	for name, opt := range map[string]PayOption{
		"forged signature": WithForgedSignature(),
		"wrong amount":     WithAmountCents(1),
	} {
		t.Run(name, func(t *testing.T) {
			e := newAliEnv(t, aliFastRetry)
			e.order(t, "O10", 1230)
			if err := e.sb.Pay("O10", opt); err != nil {
				t.Fatal(err)
			}
			if err := aliWait(t, e.sb, "O10"); err == nil {
				t.Fatal("merchant acknowledged a bad notify")
			}
			calls, notes, rejected := e.merchant.snapshot()
			if len(notes) != 0 || calls != len(AlipayRetries)+1 || len(rejected) != calls {
				t.Fatalf("calls %d, credited %d, rejected %d", calls, len(notes), len(rejected))
			}
			wantSig := name == "forged signature"
			if errors.Is(rejected[0], alipay.ErrBadSignature) != wantSig {
				t.Fatalf("rejected with %v", rejected[0])
			}
		})
	}
}

// TestAlipayPagePayCashierFlow walks the browser path: signed gateway URL,
// cashier page, pay button, signed return redirect, then the notify.
func TestAlipayPagePayCashierFlow(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.merchant.mu.Lock()
	e.merchant.orders["O11"] = 4200
	e.merchant.mu.Unlock()
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
	if err := aliWait(t, e.sb, "O11"); err != nil {
		t.Fatal(err)
	}
}

func TestAlipayPayEndpointForCurl(t *testing.T) {
	e := newAliEnv(t, aliFastRetry)
	e.order(t, "O12", 100)
	post := func(no string) (int, string) {
		resp, err := http.Post(e.base+"/pay?out_trade_no="+no, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("O12"); code != http.StatusOK || body != "paid O12\n" {
		t.Fatalf("first pay: %d %q", code, body)
	}
	if code, _ := post("O12"); code != http.StatusConflict {
		t.Fatalf("second pay: %d", code)
	}
	if code, _ := post("NOPE"); code != http.StatusNotFound {
		t.Fatalf("unknown trade: %d", code)
	}
	if err := aliWait(t, e.sb, "O12"); err != nil {
		t.Fatal(err)
	}
}

// TestAlipayCloseStopsDelivery: with the real-time schedule the second try
// would be 4 minutes away; Close must end it at once and refuse new payments.
func TestAlipayCloseStopsDelivery(t *testing.T) {
	e := newAliEnv(t, Schedule{Delays: AlipayRetries})
	e.merchant.script = func(int) string { return alipay.AckFail }
	e.order(t, "O13", 100)
	e.order(t, "O14", 100)
	if err := e.sb.Pay("O13"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.sb.Deliveries("O13")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no delivery attempted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.sb.Close()
	if err := aliWait(t, e.sb, "O13"); err == nil {
		t.Fatal("Wait reported an acknowledgement")
	}
	if n := len(e.sb.Deliveries("O13")); n != 1 {
		t.Fatalf("%d deliveries after Close, want 1", n)
	}
	if err := e.sb.Pay("O14"); err == nil {
		t.Fatal("paid after Close")
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

// TestNewAlipayRefusesBadConfig: a wiring mistake is an error naming what is
// missing, not a panic.
func TestNewAlipayRefusesBadConfig(t *testing.T) {
	app, ali, _ := aliTestKeys(t)
	good := AlipayConfig{AppID: DevAlipayAppID, AppPublicKey: &app.PublicKey, PrivateKey: ali}
	for _, c := range []struct {
		name    string
		mutate  func(*AlipayConfig)
		wallets *Wallets
		want    string
	}{
		{"no app id", func(c *AlipayConfig) { c.AppID = "" }, NewWallets(), "AppID is required"},
		{"no app public key", func(c *AlipayConfig) { c.AppPublicKey = nil }, NewWallets(), "AppPublicKey and PrivateKey are required"},
		{"no private key", func(c *AlipayConfig) { c.PrivateKey = nil }, NewWallets(), "AppPublicKey and PrivateKey are required"},
		{"no wallets", func(*AlipayConfig) {}, nil, "wallets are required"},
	} {
		cfg := good
		c.mutate(&cfg)
		a, err := NewAlipay(cfg, c.wallets)
		if a != nil || err == nil || !strings.Contains(err.Error(), "sandbox alipay: "+c.want) {
			t.Errorf("%s: got %v, %v; want the error %q", c.name, a, err, c.want)
		}
	}
	a, err := NewAlipay(good, NewWallets())
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}
