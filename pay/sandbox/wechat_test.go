package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/pay/wechat"
)

const (
	wxTestMchSerial  = "3775B6A45ACD588826D15E583A95F5DD00000001"
	wxTestCertSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	wxTestPubKeyID   = "PUB_KEY_ID_0114232134912410000000000000"
	wxTestAPIv3Key   = "sandboxAPIv3Key_0123456789abcdef"
)

// wxFastRetry compresses WeChat's schedule a millionfold (15 s → 15 µs).
var wxFastRetry = Schedule{Delays: WeChatRetries, Scale: 1e-6}

// Keys are generated once per test binary: 2048-bit generation is slow.
var wxTestKeys = sync.OnceValue(func() (k struct{ merchant, pubKey, cert, other *rsa.PrivateKey }) {
	gen := func() *rsa.PrivateKey {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return key
	}
	k.merchant, k.pubKey, k.cert, k.other = gen(), gen(), gen(), gen()
	return k
})

// wxClock is a clock both sides share, so tests can move time.
type wxClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *wxClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *wxClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// wxMerchant is the merchant's notify endpoint: it verifies with the real
// client, checks the amount against the order it knows, and answers like
// the real handler should. fail makes the first n calls answer 500.
type wxMerchant struct {
	mu       sync.Mutex
	client   *wechat.Client
	orders   map[string]int64 // out_trade_no → fen
	fail     int
	calls    int
	paid     []*wechat.Transaction
	refunds  []*wechat.RefundResult
	rejected []error
	serials  []string
}

func (m *wxMerchant) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.serials = append(m.serials, r.Header.Get(wechat.HeaderSerial))
	if m.fail > 0 {
		m.fail--
		w.WriteHeader(http.StatusInternalServerError)
		w.Write(wechat.FailBody("temporarily down"))
		return
	}
	ev, err := m.client.ParseEvent(wechat.NotifyHeaderFrom(r.Header.Get), body)
	if err == nil && ev.Refund != nil {
		m.refunds = append(m.refunds, ev.Refund)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var tx *wechat.Transaction
	if err == nil {
		tx = ev.Transaction
	}
	if err == nil && (!tx.Paid || tx.TotalCents != m.orders[tx.OutTradeNo]) {
		err = errors.New("amount does not match the order")
		m.paid = append(m.paid, tx) // kept to show it was read, though refused
	} else if err == nil {
		m.paid = append(m.paid, tx)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	m.rejected = append(m.rejected, err)
	w.WriteHeader(http.StatusBadRequest)
	w.Write(wechat.FailBody(err.Error()))
}

func (m *wxMerchant) snapshot() (calls int, paid []*wechat.Transaction, rejected []error, serials []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls, append([]*wechat.Transaction(nil), m.paid...), append([]error(nil), m.rejected...), append([]string(nil), m.serials...)
}

type wxEnv struct {
	sb       *WeChat
	client   *wechat.Client
	clientCf wechat.Config
	wallets  *Wallets
	merchant *wxMerchant
	clock    *wxClock
	base     string // where the sandbox is mounted: <server>/wechat
}

// newWxEnv mounts the sandbox under /wechat/ as the integrator does and
// points a real client and notify endpoint at it.
func newWxEnv(t *testing.T, retry Schedule) *wxEnv {
	t.Helper()
	k := wxTestKeys()
	clock := &wxClock{}
	e := &wxEnv{wallets: NewWallets(), clock: clock, merchant: &wxMerchant{orders: map[string]int64{}}}
	notify := httptest.NewServer(e.merchant)
	t.Cleanup(notify.Close)
	sb, err := NewWeChat(WeChatConfig{
		AppID: DevWeChatAppID, MchID: DevWeChatMchID, APIv3Key: wxTestAPIv3Key,
		MerchantKeys: map[string]*rsa.PublicKey{wxTestMchSerial: &k.merchant.PublicKey},
		SigningKeys:  map[string]*rsa.PrivateKey{wxTestPubKeyID: k.pubKey, wxTestCertSerial: k.cert},
		ActiveSerial: wxTestPubKeyID, Retry: retry, Now: clock.Now,
	}, e.wallets)
	if err != nil {
		t.Fatal(err)
	}
	e.sb = sb
	t.Cleanup(e.sb.Close)
	mux := http.NewServeMux()
	mux.Handle("/wechat/", http.StripPrefix("/wechat", e.sb))
	mux.Handle("/alias/", http.StripPrefix("/alias", e.sb)) // for TestWeChatRejectsBadAuthorization
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e.base = srv.URL + "/wechat"
	e.clientCf = wechat.Config{
		AppID: DevWeChatAppID, MchID: DevWeChatMchID, MchSerial: wxTestMchSerial, MchKey: k.merchant,
		APIv3Key:  wxTestAPIv3Key,
		Verifiers: map[string]*rsa.PublicKey{wxTestPubKeyID: &k.pubKey.PublicKey, wxTestCertSerial: &k.cert.PublicKey},
		Host:      e.base, NotifyURL: notify.URL + "/v1/notify/wechat", Now: clock.Now,
	}
	e.client = e.newClient(t, func(*wechat.Config) {})
	e.merchant.client = e.client
	return e
}

func (e *wxEnv) newClient(t *testing.T, mutate func(*wechat.Config)) *wechat.Client {
	t.Helper()
	cfg := e.clientCf
	mutate(&cfg)
	c, err := wechat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// order creates a native trade the merchant knows about.
func (e *wxEnv) order(t *testing.T, no string, cents int64) *wechat.PrepayResult {
	t.Helper()
	e.merchant.mu.Lock()
	e.merchant.orders[no] = cents
	e.merchant.mu.Unlock()
	res, err := e.client.Prepay(context.Background(), wechat.Native, wechat.PrepayRequest{OutTradeNo: no, Description: "flash sale", AmountCents: cents})
	if err != nil {
		t.Fatalf("prepay %s: %v", no, err)
	}
	return res
}

func wxWait(t *testing.T, sb *WeChat, no string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return sb.Wait(ctx, no)
}

func TestWeChatNativePayNotify(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	res := e.order(t, "FGWX000001", 1234)
	if !strings.HasPrefix(res.CodeURL, e.base+"/pay?out_trade_no=FGWX000001") {
		t.Fatalf("code_url %q", res.CodeURL)
	}
	tx, err := e.client.Query(ctx, "FGWX000001")
	if err != nil || tx.TradeState != wechat.TradeNotPay || tx.Paid || tx.TotalCents != 1234 {
		t.Fatalf("query before paying: %+v, %v", tx, err)
	}
	if err := e.sb.Pay("FGWX000001"); err != nil {
		t.Fatal(err)
	}
	if err := wxWait(t, e.sb, "FGWX000001"); err != nil {
		t.Fatal(err)
	}
	calls, paid, rejected, _ := e.merchant.snapshot()
	if calls != 1 || len(paid) != 1 || len(rejected) != 0 {
		t.Fatalf("%d calls, paid %v, rejected %v", calls, paid, rejected)
	}
	p := paid[0]
	if p.OutTradeNo != "FGWX000001" || !p.Paid || p.TotalCents != 1234 || p.PayerTotalCents != 1234 || p.Currency != "CNY" ||
		p.TransactionID == "" || p.TradeType != "NATIVE" || p.SuccessTime.IsZero() {
		t.Fatalf("notified %+v", p)
	}
	if d := e.sb.Deliveries("FGWX000001"); len(d) != 1 || !d[0].Acked || d[0].Status != http.StatusNoContent {
		t.Fatalf("deliveries %+v", d)
	}
	if b, s := e.wallets.Balance(BuyerAccount), e.wallets.Balance(SellerAccount); b != buyerOpeningCents-1234 || s != 1234 {
		t.Fatalf("wallets buyer %d seller %d", b, s)
	}
	tx, err = e.client.Query(ctx, "FGWX000001")
	if err != nil || !tx.Paid || tx.TransactionID != p.TransactionID {
		t.Fatalf("query after paying: %+v, %v", tx, err)
	}
	if err := e.sb.Pay("FGWX000001"); err == nil {
		t.Fatal("paid twice")
	}
	if e.wallets.Balance(SellerAccount) != 1234 {
		t.Fatal("second Pay moved money")
	}
	if _, err := e.client.Query(ctx, "FGWX999999"); !wechat.IsCode(err, "ORDER_NOT_EXIST") {
		t.Fatalf("unknown trade: %v", err)
	}
}

func TestWeChatPrepayKindsAndRepeat(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	base := wechat.PrepayRequest{Description: "d", AmountCents: 5}
	for no, c := range map[string]struct {
		kind wechat.Kind
		mut  func(*wechat.PrepayRequest)
		got  func(*wechat.PrepayResult) string
	}{
		"FGWXJSAPI1": {wechat.JSAPI, func(r *wechat.PrepayRequest) { r.OpenID = "oUser" }, func(r *wechat.PrepayResult) string { return r.PrepayID }},
		"FGWXAPP001": {wechat.App, func(*wechat.PrepayRequest) {}, func(r *wechat.PrepayResult) string { return r.PrepayID }},
		"FGWXH50001": {wechat.H5, func(r *wechat.PrepayRequest) { r.PayerIP = "203.0.113.9" }, func(r *wechat.PrepayResult) string { return r.H5URL }},
	} {
		req := base
		req.OutTradeNo = no
		c.mut(&req)
		first, err := e.client.Prepay(ctx, c.kind, req)
		if err != nil || c.got(first) == "" {
			t.Fatalf("%s: %+v, %v", c.kind, first, err)
		}
		again, err := e.client.Prepay(ctx, c.kind, req)
		if err != nil || *again != *first {
			t.Fatalf("%s repeated: %+v, %v; want %+v", c.kind, again, err, first)
		}
		req.AmountCents++
		if _, err := e.client.Prepay(ctx, c.kind, req); !wechat.IsCode(err, "INVALID_REQUEST") {
			t.Fatalf("%s changed amount under the same out_trade_no: %v", c.kind, err)
		}
	}
}

func TestWeChatNotifyRetriedUntilAcknowledged(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	e.merchant.fail = 2
	e.order(t, "FGWX000002", 100)
	if err := e.sb.Pay("FGWX000002"); err != nil {
		t.Fatal(err)
	}
	if err := wxWait(t, e.sb, "FGWX000002"); err != nil {
		t.Fatal(err)
	}
	d := e.sb.Deliveries("FGWX000002")
	if len(d) != 3 {
		t.Fatalf("%d deliveries, want 3: %+v", len(d), d)
	}
	for i, x := range d {
		if x.Attempt != i+1 || x.Acked != (i == 2) {
			t.Fatalf("delivery %d: %+v", i, x)
		}
	}
	if d[0].Status != 500 || !strings.Contains(d[0].Body, `"code":"FAIL"`) || d[2].Status != 204 {
		t.Fatalf("answers %+v", d)
	}
	if calls, paid, _, _ := e.merchant.snapshot(); calls != 3 || len(paid) != 1 {
		t.Fatalf("merchant saw %d calls, %d payments", calls, len(paid))
	}
}

func TestWeChatNotifyGivesUpAfterSchedule(t *testing.T) {
	e := newWxEnv(t, Schedule{Delays: []time.Duration{time.Millisecond, time.Millisecond}})
	e.merchant.fail = 100
	e.order(t, "FGWX000003", 100)
	if err := e.sb.Pay("FGWX000003"); err != nil {
		t.Fatal(err)
	}
	if err := wxWait(t, e.sb, "FGWX000003"); err == nil {
		t.Fatal("Wait reported success for a notify never acknowledged")
	}
	if d := e.sb.Deliveries("FGWX000003"); len(d) != 3 {
		t.Fatalf("%d deliveries, want the first try and 2 retries", len(d))
	}
}

func TestWeChatCloseThenPayFails(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	e.order(t, "FGWX000004", 700)
	if err := e.client.Close(ctx, "FGWX000004"); err != nil {
		t.Fatal(err)
	}
	if tx, err := e.client.Query(ctx, "FGWX000004"); err != nil || tx.TradeState != wechat.TradeClosed {
		t.Fatalf("after close: %+v, %v", tx, err)
	}
	if err := e.client.Close(ctx, "FGWX000004"); !wechat.IsCode(err, "ORDER_CLOSED") {
		t.Fatalf("second close: %v, want 400 ORDER_CLOSED as WeChat Pay answers", err)
	}
	if err := e.sb.Pay("FGWX000004"); err == nil {
		t.Fatal("paid a closed trade")
	}
	if e.wallets.Balance(BuyerAccount) != buyerOpeningCents || e.wallets.Balance(SellerAccount) != 0 {
		t.Fatal("money moved for a closed trade")
	}
	if _, err := e.client.Prepay(ctx, wechat.Native, wechat.PrepayRequest{OutTradeNo: "FGWX000004", Description: "flash sale", AmountCents: 700}); !wechat.IsCode(err, "ORDER_CLOSED") {
		t.Fatalf("prepay of a closed trade: %v", err)
	}

	e.order(t, "FGWX000005", 700)
	if err := e.sb.Pay("FGWX000005"); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Close(ctx, "FGWX000005"); !wechat.IsCode(err, "ORDERPAID") {
		t.Fatalf("closing a paid trade: %v", err)
	}
	if err := e.client.Close(ctx, "FGWX999999"); !wechat.IsCode(err, "ORDER_NOT_EXIST") {
		t.Fatalf("closing an unknown trade: %v", err)
	}
}

func TestWeChatExpiredTradeCannotBePaid(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	_, err := e.client.Prepay(ctx, wechat.Native, wechat.PrepayRequest{OutTradeNo: "FGWX000006", Description: "d", AmountCents: 1,
		TimeExpire: e.clock.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	if err := e.sb.Pay("FGWX000006"); err == nil {
		t.Fatal("paid an expired trade")
	}
	if tx, err := e.client.Query(ctx, "FGWX000006"); err != nil || tx.TradeState != wechat.TradeClosed {
		t.Fatalf("expired trade: %+v, %v", tx, err)
	}
}

func TestWeChatRefundIdempotent(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	e.sb.HoldRefunds(true)
	ctx := context.Background()
	e.order(t, "FGWX000007", 1234)
	if _, err := e.client.Refund(ctx, wechat.RefundRequest{OutTradeNo: "FGWX000007", OutRefundNo: "RF0", RefundCents: 1, TotalCents: 1234}); !wechat.IsCode(err, "INVALID_REQUEST") {
		t.Fatalf("refund of an unpaid trade: %v", err)
	}
	if err := e.sb.Pay("FGWX000007"); err != nil {
		t.Fatal(err)
	}
	req := wechat.RefundRequest{OutTradeNo: "FGWX000007", OutRefundNo: "RF1", RefundCents: 400, TotalCents: 1234}
	first, err := e.client.Refund(ctx, req)
	if err != nil || first.Status != wechat.RefundProcessing || first.RefundCents != 400 || first.TotalCents != 1234 {
		t.Fatalf("refund: %+v, %v", first, err)
	}
	again, err := e.client.Refund(ctx, req)
	if err != nil || again.RefundID != first.RefundID {
		t.Fatalf("repeated refund: %+v, %v", again, err)
	}
	if b, s := e.wallets.Balance(BuyerAccount), e.wallets.Balance(SellerAccount); s != 1234-400 || b != buyerOpeningCents-1234 {
		t.Fatalf("refund processing, repeated: seller %d buyer %d, want %d and %d", s, b, 1234-400, buyerOpeningCents-1234)
	}
	changed := req
	changed.RefundCents = 401
	if _, err := e.client.Refund(ctx, changed); !wechat.IsCode(err, "INVALID_REQUEST") {
		t.Fatalf("same out_refund_no, other amount: %v", err)
	}
	if _, err := e.client.Refund(ctx, wechat.RefundRequest{OutTradeNo: "FGWX000007", OutRefundNo: "RF2", RefundCents: 900, TotalCents: 1234}); !wechat.IsCode(err, "NOT_ENOUGH") {
		t.Fatalf("refund beyond the total: %v", err)
	}
	if _, err := e.client.Refund(ctx, wechat.RefundRequest{OutTradeNo: "FGWX000007", OutRefundNo: "RF3", RefundCents: 834, TotalCents: 1234}); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"RF1", "RF3"} {
		if err := e.sb.SettleRefund(no); err != nil {
			t.Fatal(err)
		}
		if got, err := e.client.QueryRefund(ctx, no); err != nil || got.Status != wechat.RefundSuccess || got.SuccessTime.IsZero() {
			t.Fatalf("query %s after settling: %+v, %v", no, got, err)
		}
		if err := wxWaitRefund(t, e.sb, no); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.sb.SettleRefund("RF1"); err == nil {
		t.Fatal("settled a refund twice")
	}
	if b, s := e.wallets.Balance(BuyerAccount), e.wallets.Balance(SellerAccount); b != buyerOpeningCents || s != 0 {
		t.Fatalf("after a full refund: buyer %d seller %d", b, s)
	}
	if tx, err := e.client.Query(ctx, "FGWX000007"); err != nil || tx.TradeState != wechat.TradeRefund {
		t.Fatalf("after refund: %+v, %v", tx, err)
	}
	e.merchant.mu.Lock()
	refunds := e.merchant.refunds
	e.merchant.mu.Unlock()
	if len(refunds) != 2 || refunds[0].OutRefundNo != "RF1" || refunds[0].Status != wechat.RefundSuccess || refunds[0].RefundCents != 400 ||
		refunds[1].OutRefundNo != "RF3" || refunds[1].RefundCents != 834 || refunds[0].MchID != DevWeChatMchID {
		t.Fatalf("refund notifies %+v, want REFUND.SUCCESS of RF1 (400) and RF3 (834)", refunds)
	}
	if _, err := e.client.QueryRefund(ctx, "RF9"); !wechat.IsCode(err, "RESOURCE_NOT_EXISTS") {
		t.Fatalf("query of an unknown refund: %v", err)
	}
}

// TestWeChatRefundEndsAbnormal: a refund asked PROCESSING settles by itself
// (RefundAfter) to the outcome asked for; ABNORMAL gives the money back to
// the seller, not the buyer, and notifies REFUND.ABNORMAL.
func TestWeChatRefundEndsAbnormal(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	e.order(t, "FGWX000017", 500)
	if err := e.sb.Pay("FGWX000017"); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.SetRefundOutcome("FGWX000017", wechat.RefundAbnormal); err != nil {
		t.Fatal(err)
	}
	res, err := e.client.Refund(ctx, wechat.RefundRequest{OutTradeNo: "FGWX000017", OutRefundNo: "RFAB", RefundCents: 500, TotalCents: 500})
	if err != nil || res.Status != wechat.RefundProcessing {
		t.Fatalf("refund: %+v, %v", res, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.sb.RefundStatus("RFAB") == wechat.RefundProcessing && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := wxWaitRefund(t, e.sb, "RFAB"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.client.QueryRefund(ctx, "RFAB"); err != nil || got.Status != wechat.RefundAbnormal || !got.SuccessTime.IsZero() {
		t.Fatalf("query: %+v, %v", got, err)
	}
	if b, s := e.wallets.Balance(BuyerAccount), e.wallets.Balance(SellerAccount); b != buyerOpeningCents-500 || s != 500 {
		t.Fatalf("after an abnormal refund: buyer %d seller %d, want %d and 500", b, s, buyerOpeningCents-500)
	}
	e.merchant.mu.Lock()
	refunds := e.merchant.refunds
	e.merchant.mu.Unlock()
	if len(refunds) != 1 || refunds[0].Status != wechat.RefundAbnormal || refunds[0].OutRefundNo != "RFAB" {
		t.Fatalf("refund notifies %+v, want one REFUND.ABNORMAL", refunds)
	}
	if err := e.sb.SetRefundOutcome("FGWX000017", "FAIL"); err == nil {
		t.Fatal("accepted an outcome WeChat Pay does not have")
	}
}

func wxWaitRefund(t *testing.T, sb *WeChat, no string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return sb.WaitRefund(ctx, no)
}

func TestWeChatTwoLiveSerials(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	certOnly := e.newClient(t, func(c *wechat.Config) {
		c.Verifiers = map[string]*rsa.PublicKey{wxTestCertSerial: &wxTestKeys().cert.PublicKey}
	})
	if err := e.sb.SetActiveSerial(wxTestCertSerial); err != nil {
		t.Fatal(err)
	}
	e.order(t, "FGWX000008", 10)
	if _, err := certOnly.Query(ctx, "FGWX000008"); err != nil {
		t.Fatalf("cert serial active, cert-only client: %v", err)
	}
	if err := e.sb.Pay("FGWX000008"); err != nil {
		t.Fatal(err)
	}
	if err := wxWait(t, e.sb, "FGWX000008"); err != nil {
		t.Fatal(err)
	}

	if err := e.sb.SetActiveSerial(wxTestPubKeyID); err != nil {
		t.Fatal(err)
	}
	e.order(t, "FGWX000009", 10) // the client holding both serials goes on working
	// The cert-only client names its serial in Wechatpay-Serial, so its
	// answers are signed with that key whichever one notifies.
	if _, err := certOnly.Query(ctx, "FGWX000009"); err != nil {
		t.Fatalf("public key active, cert-only client: %v", err)
	}
	if err := e.sb.Pay("FGWX000009"); err != nil {
		t.Fatal(err)
	}
	if err := wxWait(t, e.sb, "FGWX000009"); err != nil {
		t.Fatal(err)
	}
	_, paid, rejected, serials := e.merchant.snapshot()
	if len(paid) != 2 || len(rejected) != 0 || len(serials) != 2 || serials[0] != wxTestCertSerial || serials[1] != wxTestPubKeyID {
		t.Fatalf("paid %d, rejected %v, serials %v", len(paid), rejected, serials)
	}
	if err := e.sb.SetActiveSerial("PUB_KEY_ID_NOPE"); err == nil {
		t.Fatal("activated an unknown serial")
	}
}

func TestWeChatRejectsBadAuthorization(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	req := wechat.PrepayRequest{OutTradeNo: "FGWX000010", Description: "d", AmountCents: 1}
	for name, mut := range map[string]func(*wechat.Config){
		"unknown serial": func(c *wechat.Config) { c.MchSerial = "00FF" },
		"wrong key":      func(c *wechat.Config) { c.MchKey = wxTestKeys().other },
		"other mchid":    func(c *wechat.Config) { c.MchID = "1900000999" },
		"clock 6m fast":  func(c *wechat.Config) { c.Now = func() time.Time { return e.clock.Now().Add(6 * time.Minute) } },
		"clock 5m slow":  func(c *wechat.Config) { c.Now = func() time.Time { return e.clock.Now().Add(-5 * time.Minute) } },
		// The same sandbox under another prefix: the signed path is not the one received.
		"path rewritten after signing": func(c *wechat.Config) {
			c.HTTPClient = &http.Client{Transport: rewritePath{from: "/wechat/", to: "/alias/"}}
		},
	} {
		cl := e.newClient(t, mut)
		_, err := cl.Prepay(ctx, wechat.Native, req)
		// The answer to a request whose signature failed is not signed, so the
		// client cannot trust its code.
		var we *wechat.Error
		if !errors.As(err, &we) || we.Status != http.StatusUnauthorized || we.Code != "" || !strings.Contains(we.Message, "unverified") {
			t.Errorf("%s: got %v, want an unverified 401", name, err)
		}
	}
	resp, err := http.Post(e.base+"/v3/pay/transactions/native", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(wechat.HeaderSerial) != "" || resp.Header.Get(wechat.HeaderSignature) != "" {
		t.Fatalf("unsigned request: %d, headers %v: the answer must not be signed", resp.StatusCode, resp.Header)
	}
	if _, err := e.client.Prepay(ctx, wechat.Native, req); err != nil {
		t.Fatalf("the good client after all that: %v", err)
	}
}

// serialRecorder records the Wechatpay-Serial of each request and of its answer.
type serialRecorder struct {
	mu        sync.Mutex
	requested []string
	answered  []string
}

func (r *serialRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requested = append(r.requested, req.Header.Get(wechat.HeaderSerial))
	if err == nil {
		r.answered = append(r.answered, resp.Header.Get(wechat.HeaderSerial))
	}
	return resp, err
}

// TestWeChatSignsWithRequestedSerial: the client sends Wechatpay-Serial on
// every request (its PUB_KEY_ID_ by default, or the one configured), and the
// sandbox signs each answer with the key that serial names, whichever key
// is active for notifies. An unknown serial is refused.
func TestWeChatSignsWithRequestedSerial(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	for _, c := range []struct{ configured, want string }{{"", wxTestPubKeyID}, {wxTestCertSerial, wxTestCertSerial}} {
		rec := &serialRecorder{}
		cl := e.newClient(t, func(cfg *wechat.Config) {
			cfg.PlatformSerial = c.configured
			cfg.HTTPClient = &http.Client{Transport: rec}
		})
		no := "FGWXSER" + strconv.Itoa(len(c.configured))
		if _, err := cl.Prepay(ctx, wechat.Native, wechat.PrepayRequest{OutTradeNo: no, Description: "d", AmountCents: 5}); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Query(ctx, no); err != nil {
			t.Fatal(err)
		}
		if err := cl.Close(ctx, no); err != nil {
			t.Fatal(err)
		}
		if err := e.sb.Pay(no); err == nil {
			t.Fatal("paid a closed trade")
		}
		if _, err := cl.QueryRefund(ctx, "RFNONE"); !wechat.IsCode(err, "RESOURCE_NOT_EXISTS") {
			t.Fatal(err)
		}
		rec.mu.Lock()
		if len(rec.requested) != 4 || len(rec.answered) != 4 {
			t.Fatalf("%d requests, %d answers, want 4", len(rec.requested), len(rec.answered))
		}
		for i := range rec.requested {
			if rec.requested[i] != c.want || rec.answered[i] != c.want {
				t.Errorf("configured %q: request %d sent serial %q, answer signed by %q; want %q both", c.configured, i, rec.requested[i], rec.answered[i], c.want)
			}
		}
		rec.mu.Unlock()
	}
	if _, err := wechat.New(func() wechat.Config { c := e.clientCf; c.PlatformSerial = "PUB_KEY_ID_NOPE"; return c }()); err == nil {
		t.Fatal("a PlatformSerial outside Verifiers accepted")
	}
	// A serial that names no key of the merchant is refused.
	odd := e.newClient(t, func(cfg *wechat.Config) { cfg.HTTPClient = &http.Client{Transport: setSerial("PUB_KEY_ID_NOPE")} })
	if _, err := odd.Query(ctx, "FGWXSER0"); !wechat.IsCode(err, "PARAM_ERROR") {
		t.Fatalf("unknown Wechatpay-Serial: %v, want 400 PARAM_ERROR", err)
	}
}

// setSerial replaces the request's Wechatpay-Serial (it is not signed).
type setSerial string

func (s setSerial) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(wechat.HeaderSerial, string(s))
	return http.DefaultTransport.RoundTrip(req)
}

// rewritePath forwards a request under another path after the client
// signed it, as a proxy rewriting paths would.
type rewritePath struct{ from, to string }

func (p rewritePath) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(r.Context())
	r2.URL.Path = strings.Replace(r2.URL.Path, p.from, p.to, 1)
	r2.URL.RawPath = ""
	return http.DefaultTransport.RoundTrip(r2)
}

func TestWeChatWithoutMountPrefix(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	srv := httptest.NewServer(e.sb)
	t.Cleanup(srv.Close)
	cl := e.newClient(t, func(c *wechat.Config) { c.Host = srv.URL })
	if _, err := cl.Prepay(context.Background(), wechat.Native, wechat.PrepayRequest{OutTradeNo: "FGWX000011", Description: "d", AmountCents: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestWeChatNotifyOptions(t *testing.T) {
	cases := []struct {
		name     string
		opt      PayOption
		wantErr  error // what ParseNotify says of every delivery; nil: accepted
		misstate bool
	}{
		{"SIGNTEST probe", WithSignTestProbe(), wechat.ErrProbe, false},
		{"stale timestamp", WithStaleTimestamp(), wechat.ErrStale, false},
		{"forged signature", WithForgedSignature(), wechat.ErrBadSignature, false},
		{"wrong amount, correctly signed", WithAmountCents(1), nil, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newWxEnv(t, Schedule{Delays: []time.Duration{time.Millisecond, time.Millisecond}})
			no := "FGWXOPT00" + string(rune('0'+i))
			e.order(t, no, 1234)
			if err := e.sb.Pay(no, c.opt); err != nil {
				t.Fatal(err)
			}
			if err := wxWait(t, e.sb, no); err == nil {
				t.Fatal("the merchant acknowledged a notify it must refuse")
			}
			calls, paid, rejected, _ := e.merchant.snapshot()
			if calls != 3 || len(rejected) != 3 {
				t.Fatalf("%d calls, %d rejected: %v", calls, len(rejected), rejected)
			}
			for _, err := range rejected {
				if c.wantErr != nil && !errors.Is(err, c.wantErr) {
					t.Fatalf("rejected with %v, want %v", err, c.wantErr)
				}
			}
			if c.misstate && (len(paid) != 3 || paid[0].TotalCents != 1 || paid[0].OutTradeNo != no) {
				t.Fatalf("misstated notify read as %+v", paid)
			}
			// The trade is paid all the same; the merchant finds it by Query.
			if tx, err := e.client.Query(context.Background(), no); err != nil || !tx.Paid || tx.TotalCents != 1234 {
				t.Fatalf("query: %+v, %v", tx, err)
			}
		})
	}
}

func TestWeChatDuplicateNotifies(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	e.order(t, "FGWX000012", 300)
	if err := e.sb.Pay("FGWX000012", WithDuplicates(3)); err != nil {
		t.Fatal(err)
	}
	if err := wxWait(t, e.sb, "FGWX000012"); err != nil {
		t.Fatal(err)
	}
	calls, paid, _, _ := e.merchant.snapshot()
	if calls != 3 || len(paid) != 3 {
		t.Fatalf("%d calls, %d parsed; want 3 copies", calls, len(paid))
	}
	copies := map[int]bool{}
	for _, d := range e.sb.Deliveries("FGWX000012") {
		copies[d.Copy] = true
	}
	if len(copies) != 3 || paid[0].TransactionID != paid[1].TransactionID || paid[1].TransactionID != paid[2].TransactionID {
		t.Fatalf("copies %v, transactions %v %v %v", copies, paid[0].TransactionID, paid[1].TransactionID, paid[2].TransactionID)
	}
	if e.wallets.Balance(SellerAccount) != 300 {
		t.Fatal("duplicates moved money more than once")
	}
}

func TestWeChatPayEndpointForCurl(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	res := e.order(t, "FGWX000013", 50)
	page, err := http.Get(res.CodeURL)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if page.StatusCode != 200 || !strings.Contains(string(html), "FGWX000013") || !strings.Contains(string(html), "<form") {
		t.Fatalf("cashier page %d: %s", page.StatusCode, html)
	}
	for _, want := range []int{http.StatusOK, http.StatusConflict} {
		resp, err := http.Post(e.base+"/pay?out_trade_no=FGWX000013", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST /pay: %d, want %d", resp.StatusCode, want)
		}
	}
	resp, err := http.Post(e.base+"/pay?out_trade_no=FGWX404404", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown trade: %d", resp.StatusCode)
	}
	if err := wxWait(t, e.sb, "FGWX000013"); err != nil {
		t.Fatal(err)
	}
}

func TestWeChatCloseStopsDelivery(t *testing.T) {
	e := newWxEnv(t, Schedule{Delays: []time.Duration{time.Hour}})
	e.merchant.fail = 1
	e.order(t, "FGWX000014", 50)
	if err := e.sb.Pay("FGWX000014"); err != nil {
		t.Fatal(err)
	}
	// Close must return although a retry is an hour away.
	e.sb.Close()
	if err := wxWait(t, e.sb, "FGWX000014"); err == nil {
		t.Fatal("delivery reported acknowledged")
	}
	if err := e.sb.Pay("FGWX000014"); err == nil {
		t.Fatal("paid after Close")
	}
}

func TestDevWeChatPairsKeys(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	clientCfg, sbCfg, err := DevWeChat(srv.URL+"/wechat", "http://127.0.0.1:1/v1/notify/wechat")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewWeChat(sbCfg, NewWallets())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	mux.Handle("/wechat/", http.StripPrefix("/wechat", sb))
	cl, err := wechat.New(clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cl.Prepay(ctx, wechat.Native, wechat.PrepayRequest{OutTradeNo: "FGWXDEV001", Description: "d", AmountCents: 1}); err != nil {
		t.Fatal(err)
	}
	for serial := range sbCfg.SigningKeys { // the client trusts every serial the sandbox may sign with
		if err := sb.SetActiveSerial(serial); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Query(ctx, "FGWXDEV001"); err != nil {
			t.Fatalf("serial %s: %v", serial, err)
		}
	}
	if len(sbCfg.SigningKeys) != 2 || sbCfg.ActiveSerial != DevWeChatPubKeyID {
		t.Fatalf("dev sandbox config %+v", sbCfg)
	}
}

// TestNewWeChatRefusesBadConfig: a wiring mistake is an error naming what is
// missing, not a panic.
func TestNewWeChatRefusesBadConfig(t *testing.T) {
	k := wxTestKeys()
	good := WeChatConfig{
		AppID: DevWeChatAppID, MchID: DevWeChatMchID, APIv3Key: wxTestAPIv3Key,
		MerchantKeys: map[string]*rsa.PublicKey{wxTestMchSerial: &k.merchant.PublicKey},
		SigningKeys:  map[string]*rsa.PrivateKey{wxTestPubKeyID: k.pubKey},
		ActiveSerial: wxTestPubKeyID,
	}
	for _, c := range []struct {
		name    string
		mutate  func(*WeChatConfig)
		wallets *Wallets
		want    string
	}{
		{"no app id", func(c *WeChatConfig) { c.AppID = "" }, NewWallets(), "AppID and MchID are required"},
		{"no mch id", func(c *WeChatConfig) { c.MchID = "" }, NewWallets(), "AppID and MchID are required"},
		{"short APIv3 key", func(c *WeChatConfig) { c.APIv3Key = "short" }, NewWallets(), "APIv3Key must be 32 bytes, not 5"},
		{"no merchant keys", func(c *WeChatConfig) { c.MerchantKeys = nil }, NewWallets(), "MerchantKeys and SigningKeys are required"},
		{"no signing keys", func(c *WeChatConfig) { c.SigningKeys = nil }, NewWallets(), "MerchantKeys and SigningKeys are required"},
		{"unknown active serial", func(c *WeChatConfig) { c.ActiveSerial = "PUB_KEY_ID_NOPE" }, NewWallets(), `ActiveSerial "PUB_KEY_ID_NOPE" names none of SigningKeys`},
		{"no wallets", func(*WeChatConfig) {}, nil, "wallets are required"},
	} {
		cfg := good
		c.mutate(&cfg)
		s, err := NewWeChat(cfg, c.wallets)
		if s != nil || err == nil || !strings.Contains(err.Error(), "sandbox wechat: "+c.want) {
			t.Errorf("%s: got %v, %v; want the error %q", c.name, s, err, c.want)
		}
	}
	s, err := NewWeChat(good, NewWallets())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}
