package api_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// settleAll applies every event in the test's streams to MySQL, as the
// settler would.
func settleAll(t *testing.T, h *harness, rdb redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	keys := h.eng.Keys()
	var evs []flashgrab.Event
	for p := 0; p < keys.Partitions; p++ {
		msgs, err := rdb.XRange(ctx, keys.Events(p), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			es, err := engine.ParseEntry(p, m)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, es...)
		}
	}
	if err := settle.NewSettler(nil, h.books, keys, nil).Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
}

// loseRedis deletes every key of the test's prefix: Redis come back empty.
func loseRedis(t *testing.T, rdb *redis.Client, prefix string) {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// assertSaleAbsent checks that a refused create left nothing in Redis: no
// sale and no creation event on its stream.
func assertSaleAbsent(t *testing.T, h *harness, rdb *redis.Client, id string) {
	t.Helper()
	if status, body := h.do("GET", "/v1/sales/"+id, "", ""); status != 404 {
		t.Fatalf("sale %s in Redis after a refused create: GET %d %v", id, status, body)
	}
	keys := h.eng.Keys()
	if n, err := rdb.XLen(context.Background(), keys.Events(keys.Partition(id))).Result(); err != nil || n != 0 {
		t.Fatalf("events on sale %s's stream after a refused create: %d (%v), want 0", id, n, err)
	}
}

// TestSaleIDUniqueAfterRedisLoss is issue 9 item 3: a sale settled into
// MySQL keeps its id taken after Redis lost it. Other terms are 409 exists;
// the same terms are 201 while Redis has the sale and 409 exists (needs a
// rebuild) once it is gone, never a sale again with its full stock; nothing
// reaches Redis either way.
func TestSaleIDUniqueAfterRedisLoss(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	terms := `{"id":"s1","merchant_id":"m","price_cents":250,"stock":3,"per_user_limit":1,` + window + `}`
	other := `{"id":"s1","merchant_id":"m","price_cents":100,"stock":50,"per_user_limit":5,` + window + `}`
	status, first := h.do("POST", "/v1/sales", h.admin, terms)
	if status != 201 {
		t.Fatalf("create: %d %v", status, first)
	}
	if status, body := h.do("POST", "/v1/sales/s1/grab", h.token("alice", false, time.Hour), ""); status != 200 {
		t.Fatalf("grab: %d %v", status, body)
	}
	settleAll(t, h, rdb)

	// Settled and still in Redis: a retried create is answered as before.
	if status, again := h.do("POST", "/v1/sales", h.admin, terms); status != 201 || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("retried create with the sale settled: %d %v, want 201 %v", status, again, first)
	}
	if status, body := h.do("POST", "/v1/sales", h.admin, other); status != 409 || errCode(body) != "exists" {
		t.Fatalf("other terms with the sale settled: %d %v, want 409 exists", status, body)
	}

	loseRedis(t, rdb, prefix)
	if status, body := h.do("POST", "/v1/sales", h.admin, other); status != 409 || errCode(body) != "exists" {
		t.Fatalf("other terms after Redis loss: %d %v, want 409 exists", status, body)
	}
	assertSaleAbsent(t, h, rdb, "s1")
	status, body := h.do("POST", "/v1/sales", h.admin, terms)
	msg, _ := body["error"].(map[string]any)["message"].(string)
	if status != 409 || errCode(body) != "exists" || !strings.Contains(msg, "rebuild") {
		t.Fatalf("same terms after Redis loss: %d %v, want 409 exists saying it needs a rebuild", status, body)
	}
	assertSaleAbsent(t, h, rdb, "s1")
	// The epoch markers went with the rest: the partitions are fenced until
	// rebuilt, so nobody buys beyond the limit meanwhile.
	if status, body := h.do("POST", "/v1/sales/s1/grab", h.token("alice", false, time.Hour), "", "Idempotency-Key", "again"); status != 503 || errCode(body) != "rebuilding" {
		t.Fatalf("grab after Redis loss: %d %v, want 503 rebuilding", status, body)
	}
	// /readyz lists the partition seen fenced.
	status, ready := h.do("GET", "/readyz", "", "")
	if rb, _ := ready["partitions_rebuilding"].([]any); status != 503 || !slices.Contains(rb, any(float64(h.eng.Keys().Partition("s1")))) {
		t.Fatalf("/readyz with s1's partition fenced: %d %v, want 503 listing partition %d", status, ready, h.eng.Keys().Partition("s1"))
	}
	s2 := strings.Replace(terms, `"s1"`, `"s2"`, 1)
	if status, body := h.do("POST", "/v1/sales", h.admin, s2); status != 503 || errCode(body) != "rebuilding" {
		t.Fatalf("create of a new id in a fenced partition: %d %v, want 503 rebuilding", status, body)
	}

	// Once its partition is rebuilt, an id MySQL never saw is created as ever.
	if err := h.eng.MarkEpoch(context.Background(), h.eng.Keys().Partition("s2"), 1); err != nil {
		t.Fatal(err)
	}
	if status, body := h.do("POST", "/v1/sales", h.admin, s2); status != 201 {
		t.Fatalf("create of a new id after Redis loss: %d %v", status, body)
	}
}

// TestSaleCreateMySQLDown: with MySQL unreachable a create cannot be checked
// against the settled sales, so it is 503 unavailable and nothing is created.
func TestSaleCreateMySQLDown(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	pdb, proxy := migratedMySQLBehindProxy(t)
	h := newHarnessOn(t, rdb, prefix, pdb)
	proxy.Down()
	terms := `{"id":"s1","merchant_id":"m","price_cents":250,"stock":3,"per_user_limit":1,` + window + `}`
	if status, body := h.do("POST", "/v1/sales", h.admin, terms); status != 503 || errCode(body) != "unavailable" {
		t.Fatalf("create with MySQL down: %d %v, want 503 unavailable", status, body)
	}
	assertSaleAbsent(t, h, rdb, "s1")
	proxy.Up()
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		status, body := h.do("POST", "/v1/sales", h.admin, terms)
		return status == 201, fmt.Sprintf("create with MySQL back: %d %v", status, body)
	})
}
