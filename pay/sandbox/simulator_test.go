package sandbox

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// notice is one notify the merchant verified, in both providers' terms; raw
// is what the provider's client parsed, for the provider's own tests.
type notice struct {
	outTradeNo string
	tradeID    string // the provider's number of the trade
	cents      int64
	paid       bool
	refund     bool // a refund's notify (WeChat): acknowledged, never credited
	raw        any  // *alipay.Notification, *wechat.Transaction or *wechat.RefundResult
}

// errMerchantDown is why a refusing merchant refuses a notify unread.
var errMerchantDown = errors.New("temporarily down")

// merchant is a notify endpoint written as a real merchant's is: verify the
// notify with the real client, check the amount against the order, credit
// it, answer. verify and the answers are the provider's.
type merchant struct {
	verify func(r *http.Request, body []byte) (notice, error)
	ack    func(w http.ResponseWriter)
	refuse func(w http.ResponseWriter, why error)

	mu       sync.Mutex
	orders   map[string]int64 // out_trade_no → fen
	refusing int              // calls still to refuse unread; negative: every call
	calls    int
	serials  []string // the Wechatpay-Serial of each call
	notices  []notice // every notify that verified, credited or not
	credited map[string]int
	rejected []error
}

func newMerchant(verify func(*http.Request, []byte) (notice, error), ack func(http.ResponseWriter), refuse func(http.ResponseWriter, error)) *merchant {
	return &merchant{verify: verify, ack: ack, refuse: refuse, orders: map[string]int64{}, credited: map[string]int{}}
}

func (m *merchant) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.serials = append(m.serials, r.Header.Get("Wechatpay-Serial"))
	if m.refusing != 0 {
		if m.refusing > 0 {
			m.refusing--
		}
		m.refuse(w, errMerchantDown)
		return
	}
	var n notice
	if err == nil {
		n, err = m.verify(r, body)
	}
	if err == nil {
		m.notices = append(m.notices, n)
		want, ok := m.orders[n.outTradeNo]
		switch {
		case n.refund:
			m.ack(w)
			return
		case ok && n.paid && n.cents == want:
			m.credited[n.outTradeNo]++
			m.ack(w)
			return
		}
		err = errors.New("amount or order mismatch")
	}
	m.rejected = append(m.rejected, err)
	m.refuse(w, err)
}

// expect registers an order, so that its notify is credited.
func (m *merchant) expect(outTradeNo string, cents int64) {
	m.mu.Lock()
	m.orders[outTradeNo] = cents
	m.mu.Unlock()
}

// refuseCalls refuses the next n calls unread (n < 0: every call from now on).
func (m *merchant) refuseCalls(n int) {
	m.mu.Lock()
	m.refusing = n
	m.mu.Unlock()
}

// merchantSeen is a copy of what the merchant has seen so far.
type merchantSeen struct {
	orders   map[string]int64
	calls    int
	serials  []string
	notices  []notice
	credited map[string]int
	rejected []error
}

func (m *merchant) seen() merchantSeen {
	m.mu.Lock()
	defer m.mu.Unlock()
	return merchantSeen{orders: maps.Clone(m.orders), calls: m.calls, serials: append([]string(nil), m.serials...),
		notices: append([]notice(nil), m.notices...), credited: maps.Clone(m.credited), rejected: append([]error(nil), m.rejected...)}
}

// simulated is what both simulators offer the tests.
type simulated interface {
	Pay(outTradeNo string, opts ...PayOption) error
	Wait(ctx context.Context, outTradeNo string) error
	Deliveries(outTradeNo string) []Delivery
	Close()
}

// harness is one provider's simulator wired to its real client and a
// merchant, seen through what the scenarios both providers share need.
type harness struct {
	sim      simulated
	wallets  *Wallets
	merchant *merchant
	base     string   // where the simulator is mounted
	states   provider // the provider's trade states and retry schedule
	// ackStatus is the status of the merchant's acknowledgement.
	ackStatus int
	// badSignature is what the merchant's client says of a forged notify.
	badSignature error

	// order creates a trade the merchant expects and the provider knows
	// (Alipay: scanned); expiredOrder one whose expiry has passed.
	order        func(t *testing.T, outTradeNo string, cents int64)
	expiredOrder func(outTradeNo string, cents int64) error
	// closeTrade closes a trade through the client.
	closeTrade func(outTradeNo string) error
	// queryTrade asks the provider, through the client, where a trade stands.
	queryTrade func(outTradeNo string) (tradeState, error)
	// refund asks a refund through the client; settleRefund completes it
	// (WeChat settles a PROCESSING refund; Alipay's are complete at once).
	refund       func(outTradeNo, requestNo string, cents int64) error
	settleRefund func(t *testing.T, requestNo string)
}

// tradeState is where a query says a trade stands.
type tradeState struct {
	status string // in the provider's words
	paid   bool
	cents  int64
}

// query fails the test unless the provider answers the query of a trade.
func (h *harness) query(t *testing.T, outTradeNo string) tradeState {
	t.Helper()
	st, err := h.queryTrade(outTradeNo)
	if err != nil {
		t.Fatalf("query %s: %v", outTradeNo, err)
	}
	return st
}

// providers build a harness per provider; retry is the notify schedule.
var providers = []struct {
	name string
	new  func(t *testing.T, retry func(real []time.Duration) Schedule) *harness
}{
	{"alipay", newAliHarness},
	{"wechat", newWxHarness},
}

// fast compresses a provider's real schedule a millionfold (Alipay's 25
// hours into about 90 ms).
func fast(real []time.Duration) Schedule { return Schedule{Delays: real, Scale: 1e-6} }

// realTime keeps a provider's real schedule: the first retry is seconds or minutes away.
func realTime(real []time.Duration) Schedule { return Schedule{Delays: real} }

// TestBothProviders runs the scenarios that mean the same for Alipay and
// WeChat Pay against both simulators.
func TestBothProviders(t *testing.T) {
	scenarios := []struct {
		name  string
		retry func([]time.Duration) Schedule
		run   func(t *testing.T, h *harness)
	}{
		{"pay and notify", fast, scenarioPayAndNotify},
		{"notify retried until acknowledged", fast, scenarioNotifyRetried},
		{"notify gives up after the schedule", fast, scenarioNotifyGivesUp},
		{"duplicate notifies", fast, scenarioDuplicates},
		{"forged or misstated notify rejected", fast, scenarioBadNotifies},
		{"close then pay fails", fast, scenarioCloseThenPay},
		{"expired trade cannot be paid", fast, scenarioExpired},
		{"refund idempotent", fast, scenarioRefundIdempotent},
		{"pay endpoint for curl", fast, scenarioPayEndpoint},
		{"Close stops delivery", realTime, scenarioCloseStopsDelivery},
	}
	for _, p := range providers {
		for _, sc := range scenarios {
			t.Run(p.name+"/"+sc.name, func(t *testing.T) { sc.run(t, p.new(t, sc.retry)) })
		}
	}
}

// waitNotify waits, with a deadline, until the notify of a trade has been
// acknowledged or given up.
func waitNotify(t *testing.T, sim simulated, outTradeNo string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return sim.Wait(ctx, outTradeNo)
}

func (h *harness) wait(t *testing.T, outTradeNo string) error {
	t.Helper()
	return waitNotify(t, h.sim, outTradeNo)
}

// balances fails unless the buyer has spent spent fen and the seller holds held.
func (h *harness) balances(t *testing.T, spent, held int64) {
	t.Helper()
	if b, s := h.wallets.Balance(BuyerAccount), h.wallets.Balance(SellerAccount); b != buyerOpeningCents-spent || s != held {
		t.Fatalf("buyer holds %d, seller %d; want %d and %d", b, s, buyerOpeningCents-spent, held)
	}
}

func scenarioPayAndNotify(t *testing.T, h *harness) {
	h.order(t, "FGSIM00001", 1230)
	if st := h.query(t, "FGSIM00001"); st != (tradeState{h.states.open, false, 1230}) {
		t.Fatalf("query before paying: %+v", st)
	}
	if err := h.sim.Pay("FGSIM00001"); err != nil {
		t.Fatal(err)
	}
	if err := h.wait(t, "FGSIM00001"); err != nil {
		t.Fatal(err)
	}
	seen := h.merchant.seen()
	if seen.calls != 1 || seen.credited["FGSIM00001"] != 1 || len(seen.rejected) != 0 {
		t.Fatalf("merchant: %d calls, credited %v, rejected %v", seen.calls, seen.credited, seen.rejected)
	}
	if n := seen.notices[0]; n.outTradeNo != "FGSIM00001" || n.cents != 1230 || !n.paid || n.tradeID == "" {
		t.Fatalf("notified %+v", n)
	}
	if d := h.sim.Deliveries("FGSIM00001"); len(d) != 1 || !d[0].Acked || d[0].Attempt != 1 || d[0].Status != h.ackStatus {
		t.Fatalf("deliveries %+v", d)
	}
	h.balances(t, 1230, 1230)
	if st := h.query(t, "FGSIM00001"); st != (tradeState{h.states.paid, true, 1230}) {
		t.Fatalf("query after paying: %+v", st)
	}
	if err := h.sim.Pay("FGSIM00001"); err == nil {
		t.Fatal("paid twice")
	}
	h.balances(t, 1230, 1230)
}

func scenarioNotifyRetried(t *testing.T, h *harness) {
	h.merchant.refuseCalls(2)
	h.order(t, "FGSIM00002", 500)
	if err := h.sim.Pay("FGSIM00002"); err != nil {
		t.Fatal(err)
	}
	if err := h.wait(t, "FGSIM00002"); err != nil {
		t.Fatal(err)
	}
	d := h.sim.Deliveries("FGSIM00002")
	if len(d) != 3 {
		t.Fatalf("%d deliveries, want 3: %+v", len(d), d)
	}
	for i, rec := range d {
		if rec.Attempt != i+1 || rec.Acked != (i == 2) {
			t.Errorf("delivery %d: %+v", i, rec)
		}
	}
	if seen := h.merchant.seen(); seen.calls != 3 || seen.credited["FGSIM00002"] != 1 {
		t.Fatalf("merchant saw %d calls, credited %v", seen.calls, seen.credited)
	}
	h.balances(t, 500, 500)
}

// scenarioNotifyGivesUp: a merchant that never acknowledges gets the first
// try plus one per retry delay of the provider's schedule.
func scenarioNotifyGivesUp(t *testing.T, h *harness) {
	h.merchant.refuseCalls(-1)
	h.order(t, "FGSIM00003", 100)
	if err := h.sim.Pay("FGSIM00003"); err != nil {
		t.Fatal(err)
	}
	if err := h.wait(t, "FGSIM00003"); err == nil {
		t.Fatal("Wait reported success for a notify never acknowledged")
	}
	d := h.sim.Deliveries("FGSIM00003")
	if len(d) != len(h.states.retries)+1 {
		t.Fatalf("%d deliveries, want %d", len(d), len(h.states.retries)+1)
	}
	for _, rec := range d {
		if rec.Acked {
			t.Fatalf("acked %+v", rec)
		}
	}
	if seen := h.merchant.seen(); seen.calls != len(d) || len(seen.credited) != 0 {
		t.Fatalf("merchant saw %d calls, credited %v", seen.calls, seen.credited)
	}
}

// scenarioDuplicates: every copy has its own retry chain; the money moves once.
func scenarioDuplicates(t *testing.T, h *harness) {
	h.order(t, "FGSIM00004", 321)
	if err := h.sim.Pay("FGSIM00004", WithDuplicates(5)); err != nil {
		t.Fatal(err)
	}
	if err := h.wait(t, "FGSIM00004"); err != nil {
		t.Fatal(err)
	}
	d := h.sim.Deliveries("FGSIM00004")
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
	seen := h.merchant.seen()
	if seen.credited["FGSIM00004"] != 5 || len(seen.notices) != 5 {
		t.Fatalf("merchant verified %d of 5 duplicates", seen.credited["FGSIM00004"])
	}
	for _, n := range seen.notices {
		if n.tradeID != seen.notices[0].tradeID {
			t.Fatalf("duplicates name trades %q and %q", n.tradeID, seen.notices[0].tradeID)
		}
	}
	h.balances(t, 321, 321)
}

// scenarioBadNotifies: the merchant refuses every attempt of a forged or
// misstated notify; the trade is paid all the same, as a query shows.
func scenarioBadNotifies(t *testing.T, h *harness) {
	for i, c := range []struct {
		name string
		opt  PayOption
	}{{"forged signature", WithForgedSignature()}, {"misstated amount", WithAmountCents(1)}} {
		no := "FGSIMBAD0" + string(rune('1'+i))
		h.order(t, no, 1230)
		before := h.merchant.seen()
		if err := h.sim.Pay(no, c.opt); err != nil {
			t.Fatal(err)
		}
		if err := h.wait(t, no); err == nil {
			t.Fatalf("%s: the merchant acknowledged it", c.name)
		}
		seen := h.merchant.seen()
		calls, rejected := seen.calls-before.calls, seen.rejected[len(before.rejected):]
		if calls != len(h.states.retries)+1 || len(rejected) != calls || seen.credited[no] != 0 {
			t.Fatalf("%s: %d calls, %d rejected, credited %d", c.name, calls, len(rejected), seen.credited[no])
		}
		if forged := i == 0; errors.Is(rejected[0], h.badSignature) != forged {
			t.Fatalf("%s: rejected with %v", c.name, rejected[0])
		}
		if i == 1 && (len(seen.notices) != calls || seen.notices[0].cents != 1 || seen.notices[0].outTradeNo != no) {
			t.Fatalf("misstated notify read as %+v", seen.notices)
		}
		if st := h.query(t, no); st != (tradeState{h.states.paid, true, 1230}) {
			t.Fatalf("%s: query %+v", c.name, st)
		}
	}
	h.balances(t, 2*1230, 2*1230)
}

func scenarioCloseThenPay(t *testing.T, h *harness) {
	h.order(t, "FGSIM00005", 900)
	if err := h.closeTrade("FGSIM00005"); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.Pay("FGSIM00005"); err == nil {
		t.Fatal("paid a closed trade")
	}
	h.balances(t, 0, 0)
	if h.sim.Deliveries("FGSIM00005") != nil {
		t.Fatal("a closed trade was notified")
	}
	if st := h.query(t, "FGSIM00005"); st.status != h.states.closed || st.paid {
		t.Fatalf("query: %+v", st)
	}
	if err := h.closeTrade("FGSIM00005"); err == nil {
		t.Fatal("closed twice")
	}
}

func scenarioExpired(t *testing.T, h *harness) {
	if err := h.expiredOrder("FGSIM00006", 100); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.Pay("FGSIM00006"); err == nil {
		t.Fatal("paid an expired trade")
	}
	h.balances(t, 0, 0)
	if st := h.query(t, "FGSIM00006"); st.status != h.states.closed || st.paid {
		t.Fatalf("query: %+v", st)
	}
}

// scenarioRefundIdempotent: a refund repeated under its request number, even
// concurrently, moves the money once; no refund beyond what was paid.
func scenarioRefundIdempotent(t *testing.T, h *harness) {
	h.order(t, "FGSIM00007", 1000)
	if err := h.refund("FGSIM00007", "R0", 1000); err == nil {
		t.Fatal("refunded an unpaid trade")
	}
	if err := h.sim.Pay("FGSIM00007"); err != nil {
		t.Fatal(err)
	}
	if err := h.wait(t, "FGSIM00007"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = h.refund("FGSIM00007", "R1", 400) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	h.settleRefund(t, "R1")
	h.balances(t, 600, 600)
	if err := h.refund("FGSIM00007", "R2", 700); err == nil {
		t.Fatal("refunded more than was paid")
	}
	if err := h.refund("FGSIM00007", "R2", 600); err != nil {
		t.Fatal(err)
	}
	h.settleRefund(t, "R2")
	h.balances(t, 0, 0)
	if err := h.refund("FGSIM00007", "R1", 400); err != nil {
		t.Fatalf("repeat after the full refund: %v", err)
	}
	h.balances(t, 0, 0)
}

// scenarioPayEndpoint: POST /pay?out_trade_no=… pays once, as with curl.
func scenarioPayEndpoint(t *testing.T, h *harness) {
	h.order(t, "FGSIM00008", 100)
	post := func(no string) (int, string) {
		resp, err := http.Post(h.base+"/pay?out_trade_no="+no, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("FGSIM00008"); code != http.StatusOK || body != "paid FGSIM00008\n" {
		t.Fatalf("first pay: %d %q", code, body)
	}
	if code, _ := post("FGSIM00008"); code != http.StatusConflict {
		t.Fatalf("second pay: %d", code)
	}
	if code, _ := post("FGSIM40404"); code != http.StatusNotFound {
		t.Fatalf("unknown trade: %d", code)
	}
	if err := h.wait(t, "FGSIM00008"); err != nil {
		t.Fatal(err)
	}
	h.balances(t, 100, 100)
}

// scenarioCloseStopsDelivery: on the real schedule the first retry is
// seconds or minutes away; Close ends it at once and refuses new payments.
func scenarioCloseStopsDelivery(t *testing.T, h *harness) {
	h.merchant.refuseCalls(-1)
	h.order(t, "FGSIM00009", 100)
	h.order(t, "FGSIM00010", 100)
	if err := h.sim.Pay("FGSIM00009"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return len(h.sim.Deliveries("FGSIM00009")) > 0, "no notify of FGSIM00009 attempted"
	})
	h.sim.Close()
	if err := h.wait(t, "FGSIM00009"); err == nil {
		t.Fatal("Wait reported an acknowledgement")
	}
	if n := len(h.sim.Deliveries("FGSIM00009")); n != 1 {
		t.Fatalf("%d deliveries after Close, want 1", n)
	}
	if err := h.sim.Pay("FGSIM00010"); err == nil {
		t.Fatal("paid after Close")
	}
}

// TestConstructorsRefuseBadConfig: a wiring mistake is an error naming what
// is missing, not a panic.
func TestConstructorsRefuseBadConfig(t *testing.T) {
	app, ali, _ := aliTestKeys(t)
	k := wxTestKeys()
	goodAli := AlipayConfig{AppID: DevAlipayAppID, AppPublicKey: &app.PublicKey, PrivateKey: ali}
	goodWx := WeChatConfig{
		AppID: DevWeChatAppID, MchID: DevWeChatMchID, APIv3Key: wxTestAPIv3Key,
		MerchantKeys: map[string]*rsa.PublicKey{wxTestMchSerial: &k.merchant.PublicKey},
		SigningKeys:  map[string]*rsa.PrivateKey{wxTestPubKeyID: k.pubKey},
		ActiveSerial: wxTestPubKeyID,
	}
	alipayWith := func(mutate func(*AlipayConfig), w *Wallets) func() error {
		return func() error {
			cfg := goodAli
			mutate(&cfg)
			return built(NewAlipay(cfg, w))
		}
	}
	wechatWith := func(mutate func(*WeChatConfig), w *Wallets) func() error {
		return func() error {
			cfg := goodWx
			mutate(&cfg)
			return built(NewWeChat(cfg, w))
		}
	}
	keep := func(*AlipayConfig) {}
	for _, c := range []struct {
		name string
		make func() error
		want string // "" when it must succeed
	}{
		{"alipay", alipayWith(keep, NewWallets()), ""},
		{"alipay without app id", alipayWith(func(c *AlipayConfig) { c.AppID = "" }, NewWallets()), "sandbox alipay: AppID is required"},
		{"alipay without app public key", alipayWith(func(c *AlipayConfig) { c.AppPublicKey = nil }, NewWallets()), "sandbox alipay: AppPublicKey and PrivateKey are required"},
		{"alipay without private key", alipayWith(func(c *AlipayConfig) { c.PrivateKey = nil }, NewWallets()), "sandbox alipay: AppPublicKey and PrivateKey are required"},
		{"alipay without wallets", alipayWith(keep, nil), "sandbox alipay: wallets are required"},
		{"wechat", wechatWith(func(*WeChatConfig) {}, NewWallets()), ""},
		{"wechat without app id", wechatWith(func(c *WeChatConfig) { c.AppID = "" }, NewWallets()), "sandbox wechat: AppID and MchID are required"},
		{"wechat without mch id", wechatWith(func(c *WeChatConfig) { c.MchID = "" }, NewWallets()), "sandbox wechat: AppID and MchID are required"},
		{"wechat with a short APIv3 key", wechatWith(func(c *WeChatConfig) { c.APIv3Key = "short" }, NewWallets()), "sandbox wechat: APIv3Key must be 32 bytes, not 5"},
		{"wechat without merchant keys", wechatWith(func(c *WeChatConfig) { c.MerchantKeys = nil }, NewWallets()), "sandbox wechat: MerchantKeys and SigningKeys are required"},
		{"wechat without signing keys", wechatWith(func(c *WeChatConfig) { c.SigningKeys = nil }, NewWallets()), "sandbox wechat: MerchantKeys and SigningKeys are required"},
		{"wechat with an unknown active serial", wechatWith(func(c *WeChatConfig) { c.ActiveSerial = "PUB_KEY_ID_NOPE" }, NewWallets()), `sandbox wechat: ActiveSerial "PUB_KEY_ID_NOPE" names none of SigningKeys`},
		{"wechat without wallets", wechatWith(func(*WeChatConfig) {}, nil), "sandbox wechat: wallets are required"},
	} {
		err := c.make()
		if c.want == "" && err != nil || c.want != "" && (err == nil || err.Error() != c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// built returns a constructor's error after checking that it made a
// simulator exactly when it did not fail (and closing that simulator).
func built[S any, P interface {
	*S
	Close()
}](sim P, err error) error {
	if sim != nil {
		sim.Close()
	}
	if (sim == nil) == (err == nil) {
		return fmt.Errorf("constructor returned %v and %v", sim, err)
	}
	return err
}
