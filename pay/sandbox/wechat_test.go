package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
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

// wxEnv is the simulator mounted under /wechat/ as the integrator does, a
// real client pointed at it and a merchant notify endpoint verifying with
// ParseEvent (204 when credited, 400 FAIL when refused, 500 when down).
type wxEnv struct {
	sb       *WeChat
	client   *wechat.Client
	clientCf wechat.Config
	wallets  *Wallets
	merchant *merchant
	clock    *wxClock
	base     string // where the sandbox is mounted: <server>/wechat
}

// newWxEnv mounts the sandbox under /wechat/ as the integrator does and
// points a real client and notify endpoint at it.
func newWxEnv(t *testing.T, retry Schedule) *wxEnv {
	t.Helper()
	k := wxTestKeys()
	clock := &wxClock{}
	e := &wxEnv{wallets: NewWallets(), clock: clock}
	e.merchant = newMerchant(func(r *http.Request, body []byte) (notice, error) {
		ev, err := e.client.ParseEvent(wechat.NotifyHeaderFrom(r.Header.Get), body)
		switch {
		case err != nil:
			return notice{}, err
		case ev.Refund != nil:
			return notice{outTradeNo: ev.Refund.OutTradeNo, cents: ev.Refund.RefundCents, refund: true, raw: ev.Refund}, nil
		}
		tx := ev.Transaction
		return notice{outTradeNo: tx.OutTradeNo, tradeID: tx.TransactionID, cents: tx.TotalCents, paid: tx.Paid, raw: tx}, nil
	}, func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) },
		func(w http.ResponseWriter, why error) {
			status := http.StatusBadRequest
			if errors.Is(why, errMerchantDown) {
				status = http.StatusInternalServerError
			}
			w.WriteHeader(status)
			_, _ = w.Write(wechat.FailBody(why.Error()))
		})
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
	e.merchant.expect(no, cents)
	res, err := e.client.Prepay(context.Background(), wechat.Native, wechat.PrepayRequest{OutTradeNo: no, Description: "flash sale", AmountCents: cents})
	if err != nil {
		t.Fatalf("prepay %s: %v", no, err)
	}
	return res
}

// newWxHarness is the WeChat side of TestBothProviders: refunds are held
// PROCESSING until settleRefund settles them (SUCCESS) and their notify is
// acknowledged.
func newWxHarness(t *testing.T, retry func([]time.Duration) Schedule) *harness {
	e := newWxEnv(t, retry(WeChatRetries))
	e.sb.HoldRefunds(true)
	ctx := context.Background()
	return &harness{
		sim: e.sb, wallets: e.wallets, merchant: e.merchant, base: e.base, states: wechatWays(),
		ackStatus: http.StatusNoContent, badSignature: wechat.ErrBadSignature,
		order: func(t *testing.T, no string, cents int64) { e.order(t, no, cents) },
		expiredOrder: func(no string, cents int64) error {
			e.merchant.expect(no, cents)
			req := wechat.PrepayRequest{OutTradeNo: no, Description: "d", AmountCents: cents, TimeExpire: e.clock.Now().Add(time.Minute)}
			_, err := e.client.Prepay(ctx, wechat.Native, req)
			e.clock.Advance(2 * time.Minute)
			return err
		},
		closeTrade: func(no string) error { return e.client.Close(ctx, no) },
		queryTrade: func(no string) (tradeState, error) {
			tx, err := e.client.Query(ctx, no)
			if err != nil {
				return tradeState{}, err
			}
			return tradeState{tx.TradeState, tx.Paid, tx.TotalCents}, nil
		},
		refund: func(no, reqNo string, cents int64) error {
			total := e.merchant.seen().orders[no]
			_, err := e.client.Refund(ctx, wechat.RefundRequest{OutTradeNo: no, OutRefundNo: reqNo, RefundCents: cents, TotalCents: total})
			return err
		},
		settleRefund: func(t *testing.T, reqNo string) {
			if err := e.sb.SettleRefund(reqNo); err != nil {
				t.Fatal(err)
			}
			if err := wxWaitRefund(t, e.sb, reqNo); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// wxRefundNotices are the refund notifies the merchant verified.
func wxRefundNotices(m *merchant) []*wechat.RefundResult {
	var out []*wechat.RefundResult
	for _, n := range m.seen().notices {
		if n.refund {
			out = append(out, n.raw.(*wechat.RefundResult))
		}
	}
	return out
}

// TestWeChatNativePayNotify: what TestBothProviders cannot see, the
// code_url and the notified transaction's fields, as WeChat Pay sends them.
func TestWeChatNativePayNotify(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	res := e.order(t, "FGWX000001", 1234)
	if !strings.HasPrefix(res.CodeURL, e.base+"/pay?out_trade_no=FGWX000001") {
		t.Fatalf("code_url %q", res.CodeURL)
	}
	if err := e.sb.Pay("FGWX000001"); err != nil {
		t.Fatal(err)
	}
	if err := waitNotify(t, e.sb, "FGWX000001"); err != nil {
		t.Fatal(err)
	}
	seen := e.merchant.seen()
	if seen.calls != 1 || len(seen.notices) != 1 || len(seen.rejected) != 0 {
		t.Fatalf("%d calls, notices %v, rejected %v", seen.calls, seen.notices, seen.rejected)
	}
	p := seen.notices[0].raw.(*wechat.Transaction)
	if p.OutTradeNo != "FGWX000001" || !p.Paid || p.TotalCents != 1234 || p.PayerTotalCents != 1234 || p.Currency != "CNY" ||
		p.TransactionID == "" || p.TradeType != "NATIVE" || p.SuccessTime.IsZero() {
		t.Fatalf("notified %+v", p)
	}
	tx, err := e.client.Query(ctx, "FGWX000001")
	if err != nil || !tx.Paid || tx.TransactionID != p.TransactionID {
		t.Fatalf("query after paying: %+v, %v", tx, err)
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

// TestWeChatCloseAnswers: WeChat Pay's codes for closing a closed, a paid
// or an unknown trade, and for creating a closed one again.
func TestWeChatCloseAnswers(t *testing.T) {
	e := newWxEnv(t, wxFastRetry)
	ctx := context.Background()
	e.order(t, "FGWX000004", 700)
	if err := e.client.Close(ctx, "FGWX000004"); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Close(ctx, "FGWX000004"); !wechat.IsCode(err, "ORDER_CLOSED") {
		t.Fatalf("second close: %v, want 400 ORDER_CLOSED as WeChat Pay answers", err)
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
	refunds := wxRefundNotices(e.merchant)
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
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		s := e.sb.RefundStatus("RFAB")
		return s != wechat.RefundProcessing, fmt.Sprintf("refund RFAB %s, want it settled", s)
	})
	if err := wxWaitRefund(t, e.sb, "RFAB"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.client.QueryRefund(ctx, "RFAB"); err != nil || got.Status != wechat.RefundAbnormal || !got.SuccessTime.IsZero() {
		t.Fatalf("query: %+v, %v", got, err)
	}
	if b, s := e.wallets.Balance(BuyerAccount), e.wallets.Balance(SellerAccount); b != buyerOpeningCents-500 || s != 500 {
		t.Fatalf("after an abnormal refund: buyer %d seller %d, want %d and 500", b, s, buyerOpeningCents-500)
	}
	refunds := wxRefundNotices(e.merchant)
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
	if err := waitNotify(t, e.sb, "FGWX000008"); err != nil {
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
	if err := waitNotify(t, e.sb, "FGWX000009"); err != nil {
		t.Fatal(err)
	}
	seen := e.merchant.seen()
	if len(seen.credited) != 2 || len(seen.rejected) != 0 || len(seen.serials) != 2 || seen.serials[0] != wxTestCertSerial || seen.serials[1] != wxTestPubKeyID {
		t.Fatalf("credited %v, rejected %v, serials %v", seen.credited, seen.rejected, seen.serials)
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

// TestWeChatNotifyOptions: the merchant refuses every attempt of a SIGNTEST
// probe and of a stale notify; the trade is paid all the same.
func TestWeChatNotifyOptions(t *testing.T) {
	cases := []struct {
		name    string
		opt     PayOption
		wantErr error // what ParseEvent says of every delivery
	}{
		{"SIGNTEST probe", WithSignTestProbe(), wechat.ErrProbe},
		{"stale timestamp", WithStaleTimestamp(), wechat.ErrStale},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newWxEnv(t, Schedule{Delays: []time.Duration{time.Millisecond, time.Millisecond}})
			no := "FGWXOPT00" + string(rune('0'+i))
			e.order(t, no, 1234)
			if err := e.sb.Pay(no, c.opt); err != nil {
				t.Fatal(err)
			}
			if err := waitNotify(t, e.sb, no); err == nil {
				t.Fatal("the merchant acknowledged a notify it must refuse")
			}
			seen := e.merchant.seen()
			if seen.calls != 3 || len(seen.rejected) != 3 {
				t.Fatalf("%d calls, %d rejected: %v", seen.calls, len(seen.rejected), seen.rejected)
			}
			for _, err := range seen.rejected {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("rejected with %v, want %v", err, c.wantErr)
				}
			}
			// The trade is paid all the same; the merchant finds it by Query.
			if tx, err := e.client.Query(context.Background(), no); err != nil || !tx.Paid || tx.TotalCents != 1234 {
				t.Fatalf("query: %+v, %v", tx, err)
			}
		})
	}
}

// TestWeChatCashierPage: code_url opens a cashier with a pay button.
func TestWeChatCashierPage(t *testing.T) {
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
