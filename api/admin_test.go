package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// adminServer is an API server with a settler of its own (not yet
// running: runSettler starts it), so that the stats show a real backlog.
type adminServer struct {
	srv     *api.Server
	settler *settle.Settler
}

// newAdminServer builds the server on rdb (which may go through a proxy) and
// a migrated database of the test's own; the settler reads the same streams
// through a client of its own, as serve's does.
func newAdminServer(t *testing.T, rdb redis.UniversalClient, prefix string) *adminServer {
	t.Helper()
	ctx := context.Background()
	db, _ := testenv.MySQL(t)
	if err := settle.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	keys := engine.Keyspace{Prefix: prefix, Partitions: 4}
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	srdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), PoolSize: keys.Partitions + 4})
	t.Cleanup(func() { srdb.Close() })
	pool, err := ants.NewPool(4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Release)
	books := &settle.Books{DB: db}
	settler := settle.NewSettler(srdb, books, keys, pool)
	settler.Block = 50 * time.Millisecond
	return &adminServer{settler: settler,
		srv: &api.Server{Engine: eng, Books: books, Auth: api.NewAuth(secret), Timeout: 2 * time.Second, Settler: settler}}
}

// runSettler settles until the test ends.
func (a *adminServer) runSettler(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.settler.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// adminStats is the part of GET /v1/admin/stats the tests read.
type adminStats struct {
	Durability string `json:"durability"`
	Redis      struct {
		Status         string `json:"status"`
		Partitions     int    `json:"partitions"`
		PartitionsDown []int  `json:"partitions_down"`
	} `json:"redis"`
	MySQL       string  `json:"mysql"`
	RateWindowS float64 `json:"rate_window_s"`
	Grabs       []struct {
		Target   string           `json:"target"`
		Total    int64            `json:"total"`
		PerS     float64          `json:"per_s"`
		Outcomes map[string]int64 `json:"outcomes"`
	} `json:"grabs"`
	Sales []struct {
		ID        string           `json:"id"`
		Stock     *int64           `json:"stock"`
		Sold      *int64           `json:"sold"`
		GrabsPerS float64          `json:"grabs_per_s"`
		Outcomes  map[string]int64 `json:"outcomes"`
	} `json:"sales"`
	Packets struct {
		Open         *int64 `json:"open"`
		Created      int64  `json:"created"`
		CreatedCents int64  `json:"created_cents"`
		Shares       int64  `json:"shares"`
		SharesCents  int64  `json:"shares_cents"`
	} `json:"packets"`
	Settlement *struct {
		Unsettled  int64   `json:"unsettled"`
		Pending    int64   `json:"pending"`
		OldestAgeS float64 `json:"oldest_age_s"`
		Dead       int64   `json:"dead"`
		Partitions []struct {
			Partition int   `json:"partition"`
			Length    int64 `json:"length"`
		} `json:"partitions"`
	} `json:"settlement"`
	Errors map[string]string `json:"errors"`
}

func (h *harness) adminStats() adminStats {
	h.t.Helper()
	status, raw := h.doRaw("GET", "/v1/admin/stats", h.admin, "")
	if status != 200 {
		h.t.Fatalf("GET /v1/admin/stats: %d %s", status, raw)
	}
	var st adminStats
	if err := json.Unmarshal(raw, &st); err != nil {
		h.t.Fatalf("GET /v1/admin/stats: %v in %s", err, raw)
	}
	return st
}

// TestAdminStats: the stats are refused without an admin token and change
// nothing; with one they show exactly what happened (sale counters from
// Redis, this instance's outcomes, packets, the settlement backlog, which
// drains once the settler runs); with Redis cut they still answer 200,
// saying what could not be read, and recover when it returns.
func TestAdminStats(t *testing.T) {
	rdb, prefix, proxy := testenv.RedisBehindProxy(t)
	a := newAdminServer(t, rdb, prefix)
	h := startHarness(t, a.srv, fasthttputil.NewInmemoryListener())
	alice, bob := h.token("alice", false, time.Hour), h.token("bob", false, time.Hour)

	for _, c := range []struct {
		token, code string
		status      int
	}{{"", "unauthorized", 401}, {"not-a-jwt", "unauthorized", 401}, {alice, "forbidden", 403}} {
		if status, body := h.do("GET", "/v1/admin/stats", c.token, ""); status != c.status || errCode(body) != c.code {
			t.Fatalf("stats with token %.10q: %d %v, want %d %s", c.token, status, body, c.status, c.code)
		}
	}
	if status, raw := h.doRaw("GET", "/admin", "", ""); status != 200 || !strings.Contains(string(raw), "<title>flashgrab · operator</title>") {
		t.Fatalf("GET /admin: %d %.200s", status, raw)
	}

	empty := h.adminStats()
	if empty.Durability != "none" || empty.Redis.Status != "ok" || empty.Redis.Partitions != 4 || len(empty.Redis.PartitionsDown) != 0 ||
		empty.MySQL != "ok" || len(empty.Sales) != 0 || len(empty.Grabs) != 0 || empty.Settlement == nil ||
		empty.Settlement.Unsettled != 0 || len(empty.Settlement.Partitions) != 4 || len(empty.Errors) != 0 {
		t.Fatalf("stats of an idle server: %+v", empty)
	}

	// A sale of 3: four buyers, one repeat, and a grab of a sale that does
	// not exist (counted by target, never listed as a sale).
	if status, body := h.do("POST", "/v1/sales", h.admin, `{"id":"s","merchant_id":"m","price_cents":100,"stock":3,"per_user_limit":1,
		"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z"}`); status != 201 {
		t.Fatalf("create sale: %d %v", status, body)
	}
	for _, u := range []string{"u1", "u2", "u3", "u4", "u1"} {
		h.do("POST", "/v1/sales/s/grab", h.token(u, false, time.Hour), "")
	}
	if status, _ := h.do("POST", "/v1/sales/ghost/grab", bob, ""); status != 404 {
		t.Fatalf("grab of a missing sale: %d", status)
	}
	// A packet of 300 fen in 3 shares; bob takes one.
	if status, body := h.do("POST", "/v1/admin/accounts/alice/credit", h.admin, `{"amount_cents":1000,"ref":"r1"}`); status != 200 {
		t.Fatalf("credit: %d %v", status, body)
	}
	status, pk := h.do("POST", "/v1/packets", alice, `{"total_cents":300,"count":3,"mode":"fixed"}`)
	if status != 201 {
		t.Fatalf("create packet: %d %v", status, pk)
	}
	if status, body := h.do("POST", "/v1/packets/"+pk["id"].(string)+"/grab", bob, ""); status != 200 {
		t.Fatalf("grab packet: %d %v", status, body)
	}

	st := h.adminStats()
	if len(st.Sales) != 1 || st.Sales[0].ID != "s" || st.Sales[0].Stock == nil || *st.Sales[0].Stock != 0 || *st.Sales[0].Sold != 3 ||
		fmt.Sprint(st.Sales[0].Outcomes) != "map[repeat:1 sold_out:1 won:3]" {
		t.Fatalf("sales: %+v", st.Sales)
	}
	byTarget := map[string]string{}
	for _, g := range st.Grabs {
		byTarget[g.Target] = fmt.Sprint(g.Total, g.Outcomes)
	}
	if fmt.Sprint(byTarget) != "map[packet:1 map[won:1] sale:6 map[not_found:1 repeat:1 sold_out:1 won:3]]" {
		t.Fatalf("grabs by target: %v", byTarget)
	}
	if p := st.Packets; p.Open == nil || *p.Open != 1 || p.Created != 1 || p.CreatedCents != 300 || p.Shares != 1 || p.SharesCents != 100 {
		t.Fatalf("packets: %+v (open %v)", p, p.Open)
	}
	// Unsettled: the sale's creation, 3 orders, 1 share; nothing read yet.
	if s := st.Settlement; s.Unsettled != 5 || s.Pending != 0 || s.Dead != 0 || s.OldestAgeS < 0 {
		t.Fatalf("settlement before the settler ran: %+v", s)
	}
	a.runSettler(t)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		s := h.adminStats().Settlement
		return s.Unsettled == 0 && s.Pending == 0 && s.OldestAgeS == 0, fmt.Sprintf("backlog once the settler runs: %+v", s)
	})

	// Redis cut: still 200, what could not be read is null and said why,
	// and every partition is reported down once the breaker opens.
	proxy.Down()
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		st := h.adminStats()
		return st.Redis.Status == "unreachable" && len(st.Redis.PartitionsDown) == 4 && st.Packets.Open == nil &&
				st.Sales[0].Stock == nil && st.Errors["packets"] != "" && st.Errors["sale s"] != "",
			fmt.Sprintf("stats with Redis cut: %+v", st)
	})
	proxy.Up()
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		st := h.adminStats()
		return st.Redis.Status == "ok" && len(st.Errors) == 0 && st.Sales[0].Stock != nil, fmt.Sprintf("stats after Redis returned: %+v", st)
	})
}
