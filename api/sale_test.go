package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

const window = `"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z"`

func TestSaleBadInputChangesNothing(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	user := h.token("alice", false, time.Hour)
	expired := h.token("alice", false, time.Millisecond)
	forged, _ := api.Auth{Secret: []byte("other")}.Mint("root", true, time.Hour)
	for _, c := range []struct {
		name, token, body string
		status            int
		code              string
	}{
		{"malformed", h.admin, `{"id":"x",`, 400, "bad_request"},
		{"wrong type", h.admin, `{"id":"x","merchant_id":"m","price_cents":"1","stock":5,"per_user_limit":1,` + window + `}`, 400, "bad_request"},
		{"unknown field", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"colour":"red",` + window + `}`, 400, "bad_request"},
		{"stock 0", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":0,"per_user_limit":1,` + window + `}`, 400, "bad_request"},
		{"price 0", h.admin, `{"id":"x","merchant_id":"m","price_cents":0,"stock":5,"per_user_limit":1,` + window + `}`, 400, "bad_request"},
		{"limit 0", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":0,` + window + `}`, 400, "bad_request"},
		{"ends before start", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2029-01-01T00:00:00Z"}`, 400, "bad_request"},
		{"shards 0", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"shards":0,` + window + `}`, 400, "bad_request"},
		{"shards 65", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"shards":65,` + window + `}`, 400, "bad_request"},
		{"shards beyond the partitions", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"shards":5,` + window + `}`, 400, "bad_request"},
		{"shards not a number", h.admin, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,"shards":"2",` + window + `}`, 400, "bad_request"},
		{"bad id", h.admin, `{"id":"x y","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, 400, "bad_request"},
		{"empty body", h.admin, ``, 400, "bad_request"},
		{"no token", "", `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, 401, "unauthorized"},
		{"forged token", forged, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, 401, "unauthorized"},
		{"expired token", expired, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, 401, "unauthorized"},
		{"user on admin route", user, `{"id":"x","merchant_id":"m","price_cents":1,"stock":5,"per_user_limit":1,` + window + `}`, 403, "forbidden"},
		{"too large", h.admin, `{"id":"` + strings.Repeat("x", 5000) + `"}`, 413, "too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := h.do("POST", "/v1/sales", c.token, c.body)
			if status != c.status || errCode(body) != c.code {
				t.Fatalf("got %d %v, want %d %s", status, body, c.status, c.code)
			}
			if status, _ := h.do("GET", "/v1/sales/x", "", ""); status != 404 {
				t.Fatalf("sale x exists after a rejected create (GET %d)", status)
			}
		})
	}
}

func TestSaleGrabOverHTTP(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	status, body := h.do("POST", "/v1/sales", h.admin, `{"id":"s1","merchant_id":"m","price_cents":250,"stock":3,"per_user_limit":2,`+window+`}`)
	if status != 201 || body["stock"] != 3.0 {
		t.Fatalf("create: %d %v", status, body)
	}
	// A repeat of identical terms (a retry after a lost reply) is answered
	// as the first create was; other terms under the id are a conflict.
	if status, again := h.do("POST", "/v1/sales", h.admin, `{"id":"s1","merchant_id":"m","price_cents":250,"stock":3,"per_user_limit":2,`+window+`}`); status != 201 || fmt.Sprint(again) != fmt.Sprint(body) {
		t.Fatalf("identical create again: %d %v, want 201 %v", status, again, body)
	}
	if status, body := h.do("POST", "/v1/sales", h.admin, `{"id":"s1","merchant_id":"m","price_cents":250,"stock":4,"per_user_limit":2,`+window+`}`); status != 409 || errCode(body) != "exists" {
		t.Fatalf("create with other terms: %d %v", status, body)
	}
	alice := h.token("alice", false, time.Hour)
	for _, c := range []struct{ body, code string }{{`{"qty":0}`, "bad_request"}, {`{"qty":3}`, "bad_request"}, {`{"qty":"1"}`, "bad_request"}, {`{"n":1}`, "bad_request"}} {
		if status, body := h.do("POST", "/v1/sales/s1/grab", alice, c.body); status != 400 || errCode(body) != c.code {
			t.Fatalf("grab %s: %d %v", c.body, status, body)
		}
	}
	if status, body := h.do("POST", "/v1/sales/s1/grab", "", ``); status != 401 {
		t.Fatalf("grab without token: %d %v", status, body)
	}
	if _, body := h.do("GET", "/v1/sales/s1", "", ""); body["stock"] != 3.0 || body["sold"] != 0.0 {
		t.Fatalf("rejected grabs changed the sale: %v", body)
	}
	status, won := h.do("POST", "/v1/sales/s1/grab", alice, `{"qty":2}`)
	if status != 200 || won["amount_cents"] != 500.0 || won["remaining"] != 1.0 {
		t.Fatalf("grab: %d %v", status, won)
	}
	if status, again := h.do("POST", "/v1/sales/s1/grab", alice, ``); status != 200 || again["order_id"] != won["order_id"] || again["repeat"] != true {
		t.Fatalf("retry: %d %v, want the same order", status, again)
	}
	if status, body := h.do("POST", "/v1/sales/s1/grab", alice, ``, "Idempotency-Key", "second"); status != 409 || errCode(body) != "limit_reached" {
		t.Fatalf("beyond limit: %d %v", status, body)
	}
	bob := h.token("bob", false, time.Hour)
	if status, body := h.do("POST", "/v1/sales/s1/grab", bob, `{"qty":2}`); status != 409 || errCode(body) != "sold_out" {
		t.Fatalf("bob qty 2 of 1 left: %d %v", status, body)
	}
	path := fmt.Sprintf("/v1/orders/%s", won["order_id"])
	if status, o := h.do("GET", path, alice, ""); status != 200 || o["user_id"] != "alice" || o["status"] != "pending" || o["qty"] != 2.0 {
		t.Fatalf("get own order: %d %v", status, o)
	}
	if status, _ := h.do("GET", path, bob, ""); status != 404 {
		t.Fatalf("bob reads alice's order: %d", status)
	}
	if status, _ := h.do("GET", path, h.admin, ""); status != 200 {
		t.Fatalf("admin reads alice's order: %d", status)
	}
	// Past its Redis retention, a settled order is read from MySQL.
	oid := won["order_id"].(string)
	o, err := h.eng.Order(context.Background(), oid)
	if err != nil {
		t.Fatal(err)
	}
	s := settle.NewSettler(nil, h.books, h.eng.Keys(), nil)
	if err := s.Apply(context.Background(), []flashgrab.Event{{Kind: flashgrab.EventOrder, ID: "1-1", Order: o}}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(context.Background(), h.eng.Keys().Orders(h.eng.Keys().Partition("s1"), oid), oid).Err(); err != nil {
		t.Fatal(err)
	}
	if status, o := h.do("GET", path, alice, ""); status != 200 || o["qty"] != 2.0 || o["user_id"] != "alice" {
		t.Fatalf("order past retention: %d %v", status, o)
	}
	if status, _ := h.do("GET", path, bob, ""); status != 404 {
		t.Fatalf("bob reads alice's order from MySQL: %d", status)
	}
	if status, body := h.do("DELETE", "/v1/sales/s1", h.admin, ""); status != 405 || errCode(body) != "method_not_allowed" {
		t.Fatalf("DELETE: %d %v", status, body)
	}
	if status, _ := h.do("POST", "/v1/sales/nope/grab", alice, ``); status != 404 {
		t.Fatalf("grab of a missing sale: %d", status)
	}
}

func TestGrabAnswers503WhenRedisDown(t *testing.T) {
	rdb, prefix, proxy := testenv.RedisBehindProxy(t)
	h := newHarness(t, rdb, prefix)
	if status, _ := h.do("POST", "/v1/sales", h.admin, `{"id":"s1","merchant_id":"m","price_cents":1,"stock":3,"per_user_limit":1,`+window+`}`); status != 201 {
		t.Fatal("create failed")
	}
	alice := h.token("alice", false, time.Hour)
	proxy.Down()
	if status, body := h.do("POST", "/v1/sales/s1/grab", alice, ``); status != 503 || errCode(body) != "unavailable" {
		t.Fatalf("grab with Redis down: %d %v", status, body)
	}
	// Once the breaker has opened, readyz lists every partition: a single
	// Redis serves them all.
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		if status, body := h.do("POST", "/v1/sales/s1/grab", alice, ``); status != 503 || errCode(body) != "unavailable" {
			t.Fatalf("grab with Redis down: %d %v", status, body)
		}
		status, body := h.do("GET", "/readyz", "", "")
		down, _ := body["partitions_down"].([]any)
		return status == 503 && body["redis"] == "unreachable" && len(down) == 4,
			fmt.Sprintf("readyz with Redis down: %d %v, want 503 listing the 4 partitions", status, body)
	})
	proxy.Up()
	h.awaitReady()
	if status, body := h.do("POST", "/v1/sales/s1/grab", alice, ``); status != 200 {
		t.Fatalf("grab after Redis returned: %d %v", status, body)
	}
	if status, body := h.do("GET", "/readyz", "", ""); status != 200 || body["partitions_down"] != nil {
		t.Fatalf("readyz after Redis returned: %d %v", status, body)
	}
}

// TestShardedSaleOverHTTP: a sale over three shards is created (the layout
// in the answer, a retry answered alike, other shard counts a conflict),
// sells exactly its stock to users of every shard, and GET sums the shards.
func TestShardedSaleOverHTTP(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	create := `{"id":"sh","merchant_id":"m","price_cents":100,"stock":5,"per_user_limit":1,"shards":3,` + window + `}`
	status, body := h.do("POST", "/v1/sales", h.admin, create)
	parts, _ := body["shard_partitions"].([]any)
	if status != 201 || body["shards"] != 3.0 || len(parts) != 3 || body["stock"] != 5.0 {
		t.Fatalf("create: %d %v", status, body)
	}
	if status, again := h.do("POST", "/v1/sales", h.admin, create); status != 201 || fmt.Sprint(again) != fmt.Sprint(body) {
		t.Fatalf("identical create again: %d %v, want 201 %v", status, again, body)
	}
	if status, body := h.do("POST", "/v1/sales", h.admin, strings.Replace(create, `"shards":3`, `"shards":2`, 1)); status != 409 || errCode(body) != "exists" {
		t.Fatalf("create with other shards: %d %v", status, body)
	}
	won := 0
	for u := range 12 {
		status, body := h.do("POST", "/v1/sales/sh/grab", h.token(fmt.Sprintf("u%d", u), false, time.Hour), ``)
		switch {
		case status == 200:
			won++
		case status != 409 || errCode(body) != "sold_out":
			t.Fatalf("grab: %d %v", status, body)
		}
	}
	if status, body := h.do("GET", "/v1/sales/sh", "", ""); won != 5 || status != 200 || body["stock"] != 0.0 || body["sold"] != 5.0 || body["shards"] != 3.0 {
		t.Fatalf("%d won; sale %d %v, want 5 sold over 3 shards", won, status, body)
	}
}
