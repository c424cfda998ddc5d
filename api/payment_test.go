package api_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// provider is what the tests drive of either simulator.
type provider interface {
	Pay(outTradeNo string, opts ...sandbox.PayOption) error
	Deliveries(outTradeNo string) []sandbox.Delivery
	Wait(ctx context.Context, outTradeNo string) error
}

type payHarness struct {
	*harness
	dev      *sandbox.Dev
	payments *settle.Payments
	sweeper  *settle.Sweeper
	notify   *testenv.Proxy // between the sandbox and the API: cut it to lose notifies
	prefix   string
}

func (p *payHarness) sim(channel string) provider {
	if channel == pay.ChannelAlipay {
		return p.dev.Alipay
	}
	return p.dev.WeChat
}

// startSandbox serves an in-process sandbox of both providers on loopback,
// posting its notifies to notifyBase on a retry schedule compressed by scale,
// and returns it with the payment channels pointed at it.
func startSandbox(t *testing.T, notifyBase string, scale float64) (*sandbox.Dev, pay.Channels) {
	t.Helper()
	sbLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := sandbox.NewDev("http://"+sbLn.Addr().String(), notifyBase, scale)
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := &http.Server{Handler: dev.Handler()}
	go sbSrv.Serve(sbLn)
	t.Cleanup(func() { dev.Close(); sbSrv.Close() })
	ac, err := alipay.New(dev.AlipayClient)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := wechat.New(dev.WeChatClient)
	if err != nil {
		t.Fatal(err)
	}
	return dev, pay.NewChannels(ac, wc)
}

// sandboxLogin is the mini program login pointed at the sandbox.
func sandboxLogin(t *testing.T, dev *sandbox.Dev) *wechat.Login {
	t.Helper()
	l, err := wechat.NewLogin(dev.WeChatLogin)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// newPayHarness serves the API on loopback TCP with both channels pointed at
// an in-process sandbox whose retry schedule is compressed by scale (1e-4:
// Alipay's 4 minutes become 24 ms, its whole 25 hours 9 s). db may go
// through a proxy.
func newPayHarness(t *testing.T, db *sql.DB, scale float64) *payHarness {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	if db == nil {
		db, _ = testenv.MySQL(t)
	}
	ctx := context.Background()
	if err := settle.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	notify := testenv.NewProxy(t, ln.Addr().String())
	dev, chans := startSandbox(t, "http://"+notify.Addr(), scale)
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: prefix, Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	books := &settle.Books{DB: db}
	payments := settle.NewPayments(books, chans.Providers())
	payments.Metrics = settle.NewMetrics(prometheus.NewRegistry())
	t.Cleanup(payments.Close)
	messenger, err := wechat.NewMessenger(dev.WeChatLogin)
	if err != nil {
		t.Fatal(err)
	}
	msgs := pay.NewPaidMessages(messenger, books, sandbox.DevPaidTemplateID, nil)
	t.Cleanup(msgs.Close)
	payments.OnPaid = msgs.Paid
	srv := &api.Server{Engine: eng, Books: books, Auth: api.NewAuth(secret), Timeout: 2 * time.Second,
		Payments: payments, Channels: chans, WeChatLogin: sandboxLogin(t, dev)}
	h := startHarness(t, srv, tcpListener{ln})
	return &payHarness{harness: h, dev: dev, payments: payments, notify: notify, prefix: prefix,
		sweeper: settle.NewSweeper(eng, books, payments)}
}

// order creates a sale for merchant m and has alice grab qty units; it
// returns the order id.
func (p *payHarness) order(sale string, price, qty int) string {
	p.t.Helper()
	body := fmt.Sprintf(`{"id":%q,"merchant_id":"m","price_cents":%d,"stock":10,"per_user_limit":5,%s}`, sale, price, window)
	if status, b := p.do("POST", "/v1/sales", p.admin, body); status != 201 {
		p.t.Fatalf("create sale: %d %v", status, b)
	}
	status, g := p.do("POST", "/v1/sales/"+sale+"/grab", p.token("alice", false, time.Hour), fmt.Sprintf(`{"qty":%d}`, qty))
	if status != 200 {
		p.t.Fatalf("grab: %d %v", status, g)
	}
	return g["order_id"].(string)
}

// pay opens the order's trade on channel and returns its out_trade_no.
func (p *payHarness) pay(orderID, channel string) string {
	p.t.Helper()
	status, body := p.do("POST", "/v1/orders/"+orderID+"/pay", p.token("alice", false, time.Hour), fmt.Sprintf(`{"channel":%q}`, channel))
	if status != 200 || body["out_trade_no"] == nil {
		p.t.Fatalf("pay %s on %s: %d %v", orderID, channel, status, body)
	}
	return body["out_trade_no"].(string)
}

func (p *payHarness) orderStatus(orderID string) string {
	p.t.Helper()
	_, body := p.do("GET", "/v1/orders/"+orderID, p.token("alice", false, time.Hour), "")
	s, _ := body["status"].(string)
	return s
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var channels = []string{pay.ChannelAlipay, pay.ChannelWeChat}

// TestPayEndToEnd: grab, pay on each channel, the sandbox pays and notifies;
// the order is paid, the merchant credited once, and the sandbox got its
// acknowledgement at the first attempt and stopped.
func TestPayEndToEnd(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	var credited float64
	for i, ch := range channels {
		t.Run(ch, func(t *testing.T) {
			oid := p.order(fmt.Sprintf("sale%d", i), 1230, 2)
			otn := p.pay(oid, ch)
			if again := p.pay(oid, ch); again != otn {
				t.Fatalf("paying again opened another trade: %s, then %s", otn, again)
			}
			sim := p.sim(ch)
			if err := sim.Pay(otn); err != nil {
				t.Fatal(err)
			}
			if err := sim.Wait(waitCtx(t), otn); err != nil {
				t.Fatal(err)
			}
			d := sim.Deliveries(otn)
			if len(d) != 1 || !d[0].Acked {
				t.Fatalf("deliveries %+v, want one acknowledged", d)
			}
			credited += 2460
			if s := p.orderStatus(oid); s != "paid" {
				t.Fatalf("order status %q, want paid", s)
			}
			if b := p.balance("m"); b != credited {
				t.Fatalf("merchant balance %v, want %v", b, credited)
			}
		})
	}
	if got := p.dev.Wallets.Balance(sandbox.SellerAccount); got != 4920 {
		t.Fatalf("sandbox seller wallet %d, want 4920", got)
	}
}

// TestBadNotifiesChangeNothing: forged signature, wrong amount, a stale
// timestamp, a SIGNTEST probe and an unknown trade are refused and change
// nothing; alipay answers "fail", WeChat 4xx with {"code":"FAIL"}.
func TestBadNotifiesChangeNothing(t *testing.T) {
	// Every bad notify is retried to the end of the schedule: compress it
	// further so the whole 25 hours take under a second.
	p := newPayHarness(t, nil, 1e-5)
	cases := []struct {
		channel, name string
		opt           sandbox.PayOption
	}{
		{pay.ChannelAlipay, "forged signature", sandbox.WithForgedSignature()},
		{pay.ChannelAlipay, "amount mismatch", sandbox.WithAmountCents(1)},
		{pay.ChannelWeChat, "forged signature", sandbox.WithForgedSignature()},
		{pay.ChannelWeChat, "amount mismatch", sandbox.WithAmountCents(1)},
		{pay.ChannelWeChat, "stale timestamp", sandbox.WithStaleTimestamp()},
		{pay.ChannelWeChat, "SIGNTEST probe", sandbox.WithSignTestProbe()},
	}
	var orders []string
	for i := range cases {
		orders = append(orders, p.order(fmt.Sprintf("bad%d", i), 500, 1))
	}
	for i, c := range cases {
		t.Run(c.channel+"/"+c.name, func(t *testing.T) {
			oid := orders[i]
			otn := p.pay(oid, c.channel)
			sim := p.sim(c.channel)
			if err := sim.Pay(otn, c.opt); err != nil {
				t.Fatal(err)
			}
			if err := sim.Wait(waitCtx(t), otn); err == nil {
				t.Fatal("a bad notify was acknowledged")
			}
			for _, d := range sim.Deliveries(otn) {
				refused := d.Body == alipay.AckFail
				if c.channel == pay.ChannelWeChat {
					refused = d.Status >= 400 && d.Status < 500 && d.Body != "" && jsonCode(d.Body) == "FAIL"
				}
				if d.Acked || !refused {
					t.Fatalf("delivery answered %d %q, want a refusal", d.Status, d.Body)
				}
			}
			if s := p.orderStatus(oid); s != "pending" {
				t.Fatalf("order status %q after bad notifies, want pending", s)
			}
			if b := p.balance("m"); b != 0 {
				t.Fatalf("merchant credited %v by a bad notify", b)
			}
		})
	}
	t.Run("unknown trade", func(t *testing.T) {
		// A trade the sandbox knows but flashgrab never opened.
		ac, _ := alipay.New(p.dev.AlipayClient)
		if _, err := ac.Precreate(context.Background(), alipay.Trade{OutTradeNo: "nobody_knows_a", AmountCents: 100, Subject: "x"}); err != nil {
			t.Fatal(err)
		}
		if err := p.dev.Alipay.Pay("nobody_knows_a"); err != nil {
			t.Fatal(err)
		}
		if err := p.dev.Alipay.Wait(waitCtx(t), "nobody_knows_a"); err == nil {
			t.Fatal("notify for an unknown trade was acknowledged")
		}
		var n int
		p.db.QueryRow("SELECT COUNT(*) FROM ledger").Scan(&n)
		if n != 0 {
			t.Fatalf("%d ledger rows after an unknown trade's notify", n)
		}
	})
}

func jsonCode(body string) string {
	var v struct{ Code string }
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return ""
	}
	return v.Code
}

// TestDuplicateNotifiesCreditOnce: ten copies of the notify at once, on each
// channel, credit the merchant once and are all acknowledged.
func TestDuplicateNotifiesCreditOnce(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	for i, ch := range channels {
		oid := p.order(fmt.Sprintf("dup%d", i), 700, 1)
		otn := p.pay(oid, ch)
		sim := p.sim(ch)
		if err := sim.Pay(otn, sandbox.WithDuplicates(10)); err != nil {
			t.Fatal(err)
		}
		if err := sim.Wait(waitCtx(t), otn); err != nil {
			t.Fatal(err)
		}
		acked := 0
		for _, d := range sim.Deliveries(otn) {
			if d.Acked {
				acked++
			}
		}
		if acked != 10 {
			t.Fatalf("%s: %d of 10 duplicates acknowledged", ch, acked)
		}
	}
	var rows int
	p.db.QueryRow("SELECT COUNT(*) FROM ledger WHERE account_id = 'm'").Scan(&rows)
	if b := p.balance("m"); b != 1400 || rows != 2 {
		t.Fatalf("merchant balance %v with %d ledger rows, want 1400 and 2", b, rows)
	}
}

// TestNotifyRetriedAfterMySQLOutage: the first notify finds MySQL down and is
// answered failure; the provider's retry after MySQL returns credits once.
func TestNotifyRetriedAfterMySQLOutage(t *testing.T) {
	pdb, proxy := migratedMySQLBehindProxy(t)
	p := newPayHarness(t, pdb, 1e-4)
	for i, ch := range channels {
		oid := p.order(fmt.Sprintf("out%d", i), 900, 1)
		otn := p.pay(oid, ch)
		sim := p.sim(ch)
		proxy.Down()
		if err := sim.Pay(otn); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			n := len(sim.Deliveries(otn))
			return n >= 1, fmt.Sprintf("%s: %d notifies delivered, want 1", ch, n)
		})
		if d := sim.Deliveries(otn)[0]; d.Acked {
			t.Fatalf("%s: notify acknowledged while MySQL was down: %+v", ch, d)
		}
		proxy.Up()
		if err := sim.Wait(waitCtx(t), otn); err != nil {
			t.Fatal(err)
		}
		if s := p.orderStatus(oid); s != "paid" {
			t.Fatalf("%s: order %q after the retry", ch, s)
		}
	}
	var rows int
	pdb.QueryRow("SELECT COUNT(*) FROM ledger WHERE account_id = 'm'").Scan(&rows)
	if b := p.balance("m"); b != 1800 || rows != 2 {
		t.Fatalf("merchant balance %v with %d ledger rows, want 1800 and 2", b, rows)
	}
}

// expire moves an order's deadline into the past, as if 15 minutes had gone by.
func (p *payHarness) expire(orderID string) {
	p.t.Helper()
	if _, err := p.db.Exec("UPDATE orders SET expires_at = ? WHERE id = ?", time.Now().Add(-time.Second).UTC(), orderID); err != nil {
		p.t.Fatal(err)
	}
}

// TestExpiredOrderReturnsStockAndRefundsLatePayment: an unpaid order expires:
// cancelled, its stock returns to the sale, the buyer may grab again, the
// trade is closed. A payment made before the close whose notify arrives
// after the cancel is refunded, never credited and never lost; the books
// still balance.
func TestExpiredOrderReturnsStockAndRefundsLatePayment(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	p.dev.WeChat.HoldRefunds(true)
	ctx := context.Background()

	// Expiry: stock comes back, the trade is closed, the buyer grabs again.
	oid := p.order("exp", 300, 2)
	otn := p.pay(oid, pay.ChannelAlipay)
	p.scan(otn) // the buyer opened the cashier: only now does Alipay know the trade, so closing it shuts it
	_, before := p.do("GET", "/v1/sales/exp", "", "")
	p.expire(oid)
	if err := p.sweeper.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	_, after := p.do("GET", "/v1/sales/exp", "", "")
	if before["stock"].(float64)+2 != after["stock"].(float64) || after["sold"] != 0.0 {
		t.Fatalf("stock %v → %v (sold %v): the cancelled order's 2 units did not come back", before["stock"], after["stock"], after["sold"])
	}
	if s := p.orderStatus(oid); s != "cancelled" {
		t.Fatalf("expired order is %q", s)
	}
	if err := p.dev.Alipay.Pay(otn); err == nil {
		t.Fatal("the sandbox let a closed trade be paid")
	}
	status, g := p.do("POST", "/v1/sales/exp/grab", p.token("alice", false, time.Hour), `{"qty":2}`)
	if status != 200 || g["order_id"] == oid {
		t.Fatalf("grab again after expiry: %d %v", status, g)
	}

	// Late payment: paid at the provider, notify lost until after the cancel.
	for i, ch := range channels {
		late := p.order(fmt.Sprintf("late%d", i), 400, 1)
		lotn := p.pay(late, ch)
		sim := p.sim(ch)
		p.notify.Down()
		if err := sim.Pay(lotn); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			n := len(sim.Deliveries(lotn))
			return n >= 1, fmt.Sprintf("%s: %d notifies of the late payment delivered, want 1", ch, n)
		})
		p.expire(late)
		if err := p.sweeper.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		// A channel whose close reports the trade paid (Alipay) has the
		// expirer query it and refund it at once; otherwise the notify does.
		if s := p.orderStatus(late); s != "cancelled" && s != "refunded" {
			t.Fatalf("%s: order %q after expiry", ch, s)
		}
		p.notify.Up()
		if err := sim.Wait(waitCtx(t), lotn); err != nil {
			t.Fatal(err)
		}
		if ch == pay.ChannelWeChat {
			// WeChat answers the refund PROCESSING: the payment stays refunding
			// until the refund's notify (or a query) says SUCCESS.
			p.refundAsked(lotn)
			if pm, _ := p.books.Payment(ctx, lotn); pm.Status != settle.PaymentRefunding || p.orderStatus(late) != "cancelled" {
				t.Fatalf("refund processing: payment %q, order %q; want refunding and cancelled", pm.Status, p.orderStatus(late))
			}
			if err := p.dev.WeChat.SettleRefund(settle.RefundNo(lotn)); err != nil {
				t.Fatal(err)
			}
			if err := p.dev.WeChat.WaitRefund(waitCtx(t), settle.RefundNo(lotn)); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			s := p.orderStatus(late)
			return s == "refunded", fmt.Sprintf("%s: late order %q, want refunded", ch, s)
		})
		pm, err := p.books.Payment(ctx, lotn)
		if err != nil || pm.Status != settle.PaymentRefunded {
			t.Fatalf("%s: payment %+v %v, want refunded", ch, pm, err)
		}
	}
	if b := p.balance("m"); b != 0 {
		t.Fatalf("merchant credited %v for cancelled orders", b)
	}
	if got := p.dev.Wallets.Balance(sandbox.BuyerAccount); got != 99_999_00 {
		t.Fatalf("buyer wallet %d after refunds, want all 9999900 back", got)
	}

	rep, err := p.reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("reconcile: %+v", rep.Checks)
	}
}

func (p *payHarness) reconcile(ctx context.Context) (*settle.Report, error) {
	rdb, _ := testenv.Redis(p.t)
	// The settler is not running in these tests: settle what the streams
	// hold first, as serve's settler would.
	s := settle.NewSettler(rdb, p.books, p.eng.Keys(), nil)
	for part := 0; part < p.eng.Keys().Partitions; part++ {
		msgs, err := rdb.XRange(ctx, p.eng.Keys().Events(part), "-", "+").Result()
		if err != nil {
			return nil, err
		}
		var evs []flashgrab.Event
		for _, m := range msgs {
			es, err := engine.ParseEntry(part, m)
			if err != nil {
				return nil, err
			}
			evs = append(evs, es...)
		}
		if err := s.Apply(ctx, evs); err != nil {
			return nil, err
		}
		for _, m := range msgs {
			rdb.XDel(ctx, p.eng.Keys().Events(part), m.ID)
		}
	}
	return (&settle.Reconciler{DB: p.db, Redis: rdb, Keys: p.eng.Keys()}).Reconcile(ctx)
}

// TestPaidOnBothChannels: the buyer opens both trades and pays both, one
// after the other (out of order with what the merchant expects). The first
// payment pays the order; the second is refunded, never credited; a late
// replay of the first changes nothing.
func TestPaidOnBothChannels(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	oid := p.order("both", 800, 1)
	ali, wx := p.pay(oid, pay.ChannelAlipay), p.pay(oid, pay.ChannelWeChat)
	if err := p.dev.WeChat.Pay(wx); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.WeChat.Wait(waitCtx(t), wx); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.Alipay.Pay(ali); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.Alipay.Wait(waitCtx(t), ali); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		pm, err := p.books.Payment(ctx, ali)
		return err == nil && pm.Status == settle.PaymentRefunded, fmt.Sprintf("payment %s: %q %v, want refunded", ali, pm.Status, err)
	})
	if s := p.orderStatus(oid); s != "paid" {
		t.Fatalf("order %q, want paid (by WeChat)", s)
	}
	if pm, _ := p.books.Payment(ctx, wx); pm.Status != settle.PaymentPaid {
		t.Fatalf("WeChat payment %+v, want paid", pm)
	}
	if b := p.balance("m"); b != 800 {
		t.Fatalf("merchant balance %v, want 800: credited once", b)
	}
	// A replay of the WeChat payment, as a provider retry would be.
	out, err := p.payments.Paid(ctx, settle.Notice{Channel: pay.ChannelWeChat, OutTradeNo: wx, TradeNo: "x", AmountCents: 800})
	if err != nil || out != settle.Duplicate {
		t.Fatalf("replay: %v %v, want Duplicate", out, err)
	}
	if b := p.balance("m"); b != 800 {
		t.Fatalf("merchant balance %v after a replay", b)
	}
	if got := p.dev.Wallets.Balance(sandbox.BuyerAccount); got != 99_999_00-800 {
		t.Fatalf("buyer wallet %d: paid twice, refunded once, want 9999100", got)
	}
}

// TestPayOnUnknownChannel: a channel name flashgrab does not have is 400
// bad_request naming the channels it has, for an order and a top-up alike,
// and opens no payment.
func TestPayOnUnknownChannel(t *testing.T) {
	p := newPayHarness(t, nil, 1e-4)
	oid := p.order("nochan", 300, 1)
	alice := p.token("alice", false, time.Hour)
	for _, c := range []struct{ path, body string }{
		{"/v1/orders/" + oid + "/pay", `{"channel":"paypal"}`},
		{"/v1/orders/" + oid + "/pay", `{}`},
		{"/v1/topups", `{"amount_cents":100,"channel":"Alipay"}`},
	} {
		status, body := p.do("POST", c.path, alice, c.body)
		e, _ := body["error"].(map[string]any)
		if status != 400 || errCode(body) != "bad_request" || e["message"] != `channel: must be "alipay" or "wechat"` {
			t.Fatalf("POST %s %s: %d %v; want 400 bad_request naming the channels", c.path, c.body, status, body)
		}
	}
	var n int
	if err := p.books.DB.QueryRow(`SELECT COUNT(*) FROM payments`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("payments after refused pays: %d, %v; want 0", n, err)
	}
	if s := p.orderStatus(oid); s != "pending" {
		t.Fatalf("order %q; want pending", s)
	}
}
