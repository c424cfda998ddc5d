package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

var testSecret = []byte("load-test-secret")

// stub implements just enough of the flashgrab API for the load generator:
// sales that answer sold_out after a fixed number of wins, packets with a
// share count and one grab per user, and an admin credit. It checks the
// tokens and idempotency keys the generator sends.
type stub struct {
	t    *testing.T
	auth api.Auth
	// winCap, if > 0, caps the wins of every sale below its stock.
	winCap int64

	grabs      atomic.Int64 // sale and packet grabs received
	badAuth    atomic.Int64
	dupKeys    atomic.Int64
	idemKeys   sync.Map
	mu         sync.Mutex
	sales      map[string]*stubSale
	packets    map[string]*stubPacket
	credited   int64
	firstGrabs chan struct{} // closed after 50 grabs, for the cancellation test
	closeOnce  sync.Once
}

// stubSale is a sale of the stub: it grants wins while wins < stock.
type stubSale struct {
	stock int64
	wins  int64
}

// stubPacket is a packet of the stub: count shares, one per owner.
type stubPacket struct {
	count  int
	owners map[string]bool
}

// newStub serves a stub on loopback until t ends and returns it with its
// base URL; winCap is as in stub.winCap.
func newStub(t *testing.T, winCap int64) (*stub, string) {
	s := &stub{
		t: t, auth: api.Auth{Secret: testSecret}, winCap: winCap,
		sales: map[string]*stubSale{}, packets: map[string]*stubPacket{}, firstGrabs: make(chan struct{}),
	}
	return s, "http://" + testenv.Serve(t, &fasthttp.Server{Handler: s.handle})
}

// fail answers with status and an API error body carrying code.
func (s *stub) fail(ctx *fasthttp.RequestCtx, status int, code string) {
	ctx.SetStatusCode(status)
	fmt.Fprintf(ctx, `{"error":{"code":%q,"message":"stub says %s"}}`, code, code)
}

// caller verifies the bearer token, as the real API does.
func (s *stub) caller(ctx *fasthttp.RequestCtx) (api.Principal, bool) {
	tok, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	if !ok {
		return api.Principal{}, false
	}
	p, err := s.auth.Verify(tok)
	return p, err == nil
}

// handle routes the few endpoints the generator calls.
func (s *stub) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if path == "/healthz" {
		ctx.SetStatusCode(200)
		return
	}
	p, ok := s.caller(ctx)
	if !ok {
		s.badAuth.Add(1)
		s.fail(ctx, 401, "unauthorized")
		return
	}
	switch {
	case path == "/v1/sales":
		var in struct {
			ID           string `json:"id"`
			Stock        int64  `json:"stock"`
			PerUserLimit int64  `json:"per_user_limit"`
		}
		if !p.Admin || json.Unmarshal(ctx.PostBody(), &in) != nil || in.Stock <= 0 || in.PerUserLimit <= 0 {
			s.fail(ctx, 400, "bad_request")
			return
		}
		s.mu.Lock()
		s.sales[in.ID] = &stubSale{stock: in.Stock}
		s.mu.Unlock()
		ctx.SetStatusCode(201)
		fmt.Fprintf(ctx, `{"id":%q}`, in.ID)
	case len(parts) == 4 && parts[1] == "sales" && parts[3] == "grab":
		s.countGrab()
		if p.Admin {
			s.badAuth.Add(1)
		}
		key := string(ctx.Request.Header.Peek("Idempotency-Key"))
		if _, dup := s.idemKeys.LoadOrStore(key, true); dup || key == "" {
			s.dupKeys.Add(1)
		}
		s.mu.Lock()
		sale := s.sales[parts[2]]
		won := sale != nil && sale.wins < sale.stock && (s.winCap == 0 || sale.wins < s.winCap)
		if won {
			sale.wins++
		}
		s.mu.Unlock()
		switch {
		case sale == nil:
			s.fail(ctx, 404, "not_found")
		case !won:
			s.fail(ctx, 409, "sold_out")
		default:
			ctx.SetStatusCode(200)
			ctx.SetBodyString(`{"order_id":"o1","qty":1}`)
		}
	case len(parts) == 5 && parts[1] == "admin" && parts[4] == "credit":
		var in struct {
			Amount int64 `json:"amount_cents"`
		}
		if !p.Admin || json.Unmarshal(ctx.PostBody(), &in) != nil {
			s.fail(ctx, 400, "bad_request")
			return
		}
		s.mu.Lock()
		s.credited += in.Amount
		s.mu.Unlock()
		ctx.SetBodyString(`{}`)
	case path == "/v1/packets":
		var in struct {
			Count int `json:"count"`
		}
		if json.Unmarshal(ctx.PostBody(), &in) != nil {
			s.fail(ctx, 400, "bad_request")
			return
		}
		s.mu.Lock()
		id := "pkt" + strconv.Itoa(len(s.packets))
		s.packets[id] = &stubPacket{count: in.Count, owners: map[string]bool{}}
		s.mu.Unlock()
		ctx.SetStatusCode(201)
		fmt.Fprintf(ctx, `{"id":%q}`, id)
	case len(parts) == 4 && parts[1] == "packets" && parts[3] == "grab":
		s.countGrab()
		s.mu.Lock()
		pkt := s.packets[parts[2]]
		repeat, won := false, false
		if pkt != nil {
			repeat = pkt.owners[p.UserID]
			won = !repeat && len(pkt.owners) < pkt.count
			if won {
				pkt.owners[p.UserID] = true
			}
		}
		s.mu.Unlock()
		switch {
		case pkt == nil:
			s.fail(ctx, 404, "not_found")
		case repeat:
			ctx.SetBodyString(`{"amount_cents":5,"repeat":true}`)
		case won:
			ctx.SetBodyString(`{"amount_cents":5,"repeat":false}`)
		default:
			s.fail(ctx, 409, "empty")
		}
	default:
		s.fail(ctx, 404, "not_found")
	}
}

// countGrab counts a grab and closes firstGrabs at the 50th.
func (s *stub) countGrab() {
	if s.grabs.Add(1) == 50 {
		s.closeOnce.Do(func() { close(s.firstGrabs) })
	}
}

// testConfig returns a short run against url that the stub answers quickly.
func testConfig(url, scenario string) Config {
	return Config{BaseURL: url, JWTSecret: testSecret, Scenario: scenario, Concurrency: 8,
		Duration: 250 * time.Millisecond, Users: 100, Timeout: 10 * time.Second}
}

// checkConsistent asserts that the outcomes add up to the requests and that
// the stub saw every request the report counts, with valid credentials.
func checkConsistent(t *testing.T, s *stub, rep *Report, setupGrabs int64) {
	t.Helper()
	var sum int64
	for _, o := range rep.Outcomes {
		if o.Outcome != OutcomeNotSent {
			sum += o.Count
		}
	}
	if sum != rep.Requests {
		t.Errorf("outcomes add up to %d, report says %d requests: %+v", sum, rep.Requests, rep.Outcomes)
	}
	if got := s.grabs.Load() - setupGrabs; got != rep.Requests {
		t.Errorf("stub received %d grabs in the measured phase, report says %d", got, rep.Requests)
	}
	if n := s.badAuth.Load(); n != 0 {
		t.Errorf("%d requests carried a wrong or missing token", n)
	}
	if n := s.dupKeys.Load(); n != 0 {
		t.Errorf("%d sale grabs reused or lacked an Idempotency-Key", n)
	}
}

func TestOpenLoopCountsOutcomesExactly(t *testing.T) {
	const wins = 137
	s, url := newStub(t, wins)
	cfg := testConfig(url, ScenarioSale)
	cfg.Rate = 2000 // × 250 ms = 500 requests
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s, rep, 0)
	if rep.Scheduled != 500 || rep.Requests != 500 {
		t.Errorf("scheduled %d, sent %d; want 500 and 500", rep.Scheduled, rep.Requests)
	}
	if got := rep.Count(OutcomeOK); got != wins {
		t.Errorf("report counts %d wins, stub granted %d", got, wins)
	}
	if got := rep.Count(OutcomeSoldOut); got != 500-wins {
		t.Errorf("report counts %d sold_out, want %d", got, 500-wins)
	}
	if got := rep.Count(OutcomeNotSent); got != 0 {
		t.Errorf("%d requests not sent", got)
	}
	if rep.Mode != ModeOpen || rep.Latency.P50 <= 0 || rep.Latency.Max < rep.Latency.P99 {
		t.Errorf("implausible report: mode %q latency %+v", rep.Mode, rep.Latency)
	}
}

func TestClosedLoopWinsMatchServer(t *testing.T) {
	const wins = 50
	s, url := newStub(t, wins)
	rep, err := Run(context.Background(), testConfig(url, ScenarioSale))
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s, rep, 0)
	want := min(int64(wins), rep.Requests)
	if got := rep.Count(OutcomeOK); got != want {
		t.Errorf("report counts %d wins of %d requests, stub granted %d", got, rep.Requests, want)
	}
	if rep.Count(OutcomeOK)+rep.Count(OutcomeSoldOut) != rep.Requests {
		t.Errorf("unexpected outcomes: %+v", rep.Outcomes)
	}
	if rep.Mode != ModeClosed || rep.Scheduled != 0 {
		t.Errorf("mode %q scheduled %d, want closed loop", rep.Mode, rep.Scheduled)
	}
}

func TestSoldOutScenarioSellsOutFirst(t *testing.T) {
	s, url := newStub(t, 0)
	cfg := testConfig(url, ScenarioSoldOut)
	cfg.Stock = 300
	cfg.Rate = 1000
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Set-up makes 300 wins plus one sold_out answer per set-up goroutine.
	checkConsistent(t, s, rep, s.grabs.Load()-rep.Requests)
	if rep.Count(OutcomeSoldOut) != 250 || rep.Count(OutcomeOK) != 0 {
		t.Errorf("want 250 sold_out and no wins, got %+v", rep.Outcomes)
	}
	if len(rep.Setup) != 1 || !strings.Contains(rep.Setup[0], "sold out by 300 winning grabs") {
		t.Errorf("set-up notes %q do not say the stock of 300 was sold", rep.Setup)
	}
}

func TestPacketScenarioGrabsEveryShareWithDistinctUsers(t *testing.T) {
	s, url := newStub(t, 0)
	cfg := testConfig(url, ScenarioPacket)
	cfg.Stock = 2500 // three packets of 1000 shares
	cfg.Users = 1000
	cfg.Rate = 14000 // × 250 ms = 3500 requests: 3000 shares, then 500 repeats
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s, rep, 0)
	if got := rep.Count(OutcomeOK); got != 3000 {
		t.Errorf("%d shares won, want all 3000: %+v", got, rep.Outcomes)
	}
	if got := rep.Count(OutcomeRepeat); got != 500 {
		t.Errorf("%d repeats, want 500: %+v", got, rep.Outcomes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.packets) != 3 || s.credited != 3*1000*centsPerShare {
		t.Errorf("stub has %d packets and %d fen credited, want 3 and %d", len(s.packets), s.credited, 3*1000*centsPerShare)
	}
}

func TestMixedScenarioFollowsWeights(t *testing.T) {
	s, url := newStub(t, 0)
	cfg := testConfig(url, ScenarioMixed)
	cfg.Users = 1000
	cfg.Rate = 4000 // 1000 requests: 600 sale, 300 sold out, 100 packet
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s, rep, s.grabs.Load()-rep.Requests)
	if rep.Count(OutcomeOK) != 700 || rep.Count(OutcomeSoldOut) != 300 || rep.Requests != 1000 {
		t.Errorf("want 700 wins and 300 sold_out of 1000, got %+v", rep.Outcomes)
	}
}

func TestCancelStopsEarlyWithPartialReport(t *testing.T) {
	s, url := newStub(t, 0)
	cfg := testConfig(url, ScenarioSale)
	cfg.Duration = time.Hour
	cfg.Rate = 1000
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.firstGrabs
		cancel()
	}()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s, rep, 0)
	if !rep.Interrupted || rep.Requests < 50 {
		t.Errorf("interrupted %v after %d requests, want true after at least 50", rep.Interrupted, rep.Requests)
	}
	if got, want := rep.Count(OutcomeNotSent), rep.Scheduled-rep.Requests; got != want || want <= 0 {
		t.Errorf("not_sent %d, want %d (scheduled %d - sent %d)", got, want, rep.Scheduled, rep.Requests)
	}
}

func TestReportRoundTripsThroughJSONAndPlots(t *testing.T) {
	s, url := newStub(t, 100)
	cfg := testConfig(url, ScenarioSale)
	cfg.Rate = 1000
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s, rep, 0)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep, &back) {
		t.Errorf("JSON round trip changed the report:\n%+v\n%+v", rep, &back)
	}
	if len(back.Timeline) == 0 || len(back.Percentiles) == 0 {
		t.Errorf("report lacks timeline (%d) or percentiles (%d)", len(back.Timeline), len(back.Percentiles))
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"409 sold_out", "p99.9", "open loop at 1000 req/s"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	path := filepath.Join(t.TempDir(), "latency.png")
	if err := rep.WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("plot is not a valid PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("plot is only %v", b)
	}
}

func TestWritePlotRefusesEmptyReport(t *testing.T) {
	err := (&Report{}).WritePlot(filepath.Join(t.TempDir(), "x.png"))
	if err == nil {
		t.Fatal("plotting a report without samples succeeded")
	}
}

func TestScheduleArithmetic(t *testing.T) {
	cases := []struct {
		rate int
		d    time.Duration
		want int64
	}{
		{1000, time.Second, 1000},
		{3, 1500 * time.Millisecond, 4},
		{7, 999 * time.Millisecond, 6},
		{maxRate, 24 * time.Hour, maxRate * 86400},
	}
	for _, c := range cases {
		if got := scheduled(c.rate, c.d); got != c.want {
			t.Errorf("scheduled(%d, %v) = %d, want %d", c.rate, c.d, got, c.want)
		}
		// Every scheduled request falls inside the duration, in order.
		n := scheduled(c.rate, c.d)
		if last := offsetOf(n-1, c.rate); last >= c.d || last < offsetOf(n-2, c.rate) {
			t.Errorf("rate %d over %v: last request at %v", c.rate, c.d, last)
		}
	}
	if got := offsetOf(1500, 1000); got != 1500*time.Millisecond {
		t.Errorf("offsetOf(1500, 1000) = %v", got)
	}
}

func TestAPIErrorCode(t *testing.T) {
	cases := map[string]string{
		`{"error":{"code":"sold_out","message":"x"}}`:          "sold_out",
		`{"error":{"message":"m","code":"limit_reached"}}`:     "limit_reached",
		`{"error":{"code":"Evil Code"}}`:                       "",
		`{"error":{"code":""}}`:                                "",
		`not json`:                                             "",
		`{"error":{"code":"` + strings.Repeat("a", 50) + `"}}`: "",
	}
	for body, want := range cases {
		if got := string(apiErrorCode([]byte(body))); got != want {
			t.Errorf("apiErrorCode(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{BaseURL: "http://127.0.0.1:1", JWTSecret: testSecret, Scenario: ScenarioSale,
		Concurrency: 1, Duration: time.Second, Users: 1}
	bad := map[string]func(*Config){
		"secret":      func(c *Config) { c.JWTSecret = nil },
		"scenario":    func(c *Config) { c.Scenario = "storm" },
		"concurrency": func(c *Config) { c.Concurrency = 0 },
		"duration":    func(c *Config) { c.Duration = 0 },
		"rate":        func(c *Config) { c.Rate = -1 },
		"users":       func(c *Config) { c.Users = 0 },
		"stock":       func(c *Config) { c.Stock = -1 },
		"url":         func(c *Config) { c.BaseURL = "ftp://x" },
	}
	for name, mutate := range bad {
		c := ok
		mutate(&c)
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%s: bad config accepted", name)
		}
	}
	// A valid config against a closed port fails in set-up with the cause.
	_, err := Run(context.Background(), ok)
	var se *statusError
	if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), "create sale") {
		t.Errorf("unreachable server: err = %v, want a transport error from create sale", err)
	}
}

// BenchmarkWorkerRequest measures the generator's cost per request against a
// constant handler; allocs/op should stay 0 (client and fasthttp server both
// reuse their buffers).
func BenchmarkWorkerRequest(b *testing.B) {
	addr := testenv.Serve(b, &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(409)
		ctx.SetBodyString(`{"error":{"code":"sold_out","message":"sold out"}}`)
	}})
	c, err := newClient("http://"+addr, 1, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	p := &plan{}
	p.add(&target{uris: [][]byte{[]byte(c.base + "/v1/sales/s/grab")}, perURI: 1, body: []byte(`{"qty":1}`), idempotent: true}, 1)
	r := &runner{cfg: &Config{Duration: time.Minute}, c: c, plan: p, bearer: [][]byte{[]byte("Bearer x")},
		idem: []byte("run-"), rec: newRecorder(time.Minute, time.Minute), start: time.Now()}
	w := r.newWorker()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.do(int64(i), time.Now())
	}
	w.flush()
	if n := r.rec.sent(); n == 0 {
		b.Fatal("no request recorded")
	}
}
