package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

func (h *harness) balance(user string) float64 {
	h.t.Helper()
	status, body := h.do("GET", "/v1/accounts/"+user, h.admin, "")
	if status == 404 {
		return 0
	}
	if status != 200 {
		h.t.Fatalf("balance of %s: %d %v", user, status, body)
	}
	return body["balance_cents"].(float64)
}

func (h *harness) credit(user string, cents int, ref string) {
	h.t.Helper()
	if status, body := h.do("POST", "/v1/admin/accounts/"+user+"/credit", h.admin, fmt.Sprintf(`{"amount_cents":%d,"ref":%q}`, cents, ref)); status != 200 {
		h.t.Fatalf("credit: %d %v", status, body)
	}
}

func (h *harness) packetCount() int {
	var n int
	h.db.QueryRow("SELECT COUNT(*) FROM packets").Scan(&n)
	return n
}

func TestPacketBadInputDebitsNothing(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	h.credit("alice", 10_000, "seed")
	alice := h.token("alice", false, time.Hour)
	for _, c := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"count 0", `{"total_cents":100,"count":0,"mode":"random"}`, 400, "bad_request"},
		{"count above total", `{"total_cents":5,"count":6,"mode":"random"}`, 400, "bad_request"},
		{"count above 1000", `{"total_cents":5000,"count":1001,"mode":"random"}`, 400, "bad_request"},
		{"total above limit", `{"total_cents":2000001,"count":10,"mode":"random"}`, 400, "bad_request"},
		{"fixed with remainder", `{"total_cents":100,"count":3,"mode":"fixed"}`, 400, "bad_request"},
		{"negative total", `{"total_cents":-100,"count":1,"mode":"random"}`, 400, "bad_request"},
		{"unknown mode", `{"total_cents":100,"count":2,"mode":"lucky"}`, 400, "bad_request"},
		{"expiry 0", `{"total_cents":100,"count":2,"mode":"random","expires_in_s":0}`, 400, "bad_request"},
		{"expiry too long", `{"total_cents":100,"count":2,"mode":"random","expires_in_s":99999999}`, 400, "bad_request"},
		{"unknown field", `{"total_cents":100,"count":2,"mode":"random","sender_id":"bob"}`, 400, "bad_request"},
		{"wrong type", `{"total_cents":"100","count":2,"mode":"random"}`, 400, "bad_request"},
		{"short of funds", `{"total_cents":10001,"count":2,"mode":"random"}`, 402, "insufficient_funds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := h.do("POST", "/v1/packets", alice, c.body)
			if status != c.status || errCode(body) != c.code {
				t.Fatalf("got %d %v, want %d %s", status, body, c.status, c.code)
			}
			if b := h.balance("alice"); b != 10_000 || h.packetCount() != 0 {
				t.Fatalf("rejected create changed things: balance %v, %d packets", b, h.packetCount())
			}
		})
	}
	if status, _ := h.do("POST", "/v1/packets", "", `{"total_cents":100,"count":2,"mode":"random"}`); status != 401 {
		t.Fatalf("create without token: %d", status)
	}
}

func TestPacketOverHTTP(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	h.credit("alice", 1000, "seed")
	alice, bob := h.token("alice", false, time.Hour), h.token("bob", false, time.Hour)
	status, pk := h.do("POST", "/v1/packets", alice, `{"total_cents":600,"count":3,"mode":"fixed"}`)
	if status != 201 || pk["sender_id"] != "alice" || pk["remaining_count"] != 3.0 {
		t.Fatalf("create: %d %v", status, pk)
	}
	if b := h.balance("alice"); b != 400 {
		t.Fatalf("sender balance %v after funding 600 of 1000", b)
	}
	id := pk["id"].(string)
	status, g := h.do("POST", "/v1/packets/"+id+"/grab", bob, "")
	if status != 200 || g["amount_cents"] != 200.0 || g["repeat"] != false || g["remaining_count"] != 2.0 {
		t.Fatalf("grab: %d %v", status, g)
	}
	if status, g := h.do("POST", "/v1/packets/"+id+"/grab", bob, ""); status != 200 || g["repeat"] != true || g["amount_cents"] != 200.0 {
		t.Fatalf("repeat grab: %d %v", status, g)
	}
	if status, g := h.do("POST", "/v1/packets/"+id+"/grab", alice, ""); status != 200 || g["amount_cents"] != 200.0 {
		t.Fatalf("sender grabs own packet: %d %v", status, g)
	}
	h.do("POST", "/v1/packets/"+id+"/grab", h.token("carol", false, time.Hour), "")
	if status, body := h.do("POST", "/v1/packets/"+id+"/grab", h.token("dave", false, time.Hour), ""); status != 409 || errCode(body) != "empty" {
		t.Fatalf("grab of an empty packet: %d %v", status, body)
	}
	status, got := h.do("GET", "/v1/packets/"+id, "", "")
	grabs, _ := got["grabs"].([]any)
	if status != 200 || len(grabs) != 3 || got["remaining_cents"] != 0.0 {
		t.Fatalf("get: %d %v", status, got)
	}
	if first := grabs[0].(map[string]any); first["user_id"] != "bob" || first["amount_cents"] != 200.0 {
		t.Fatalf("first grab listed as %v", first)
	}
	// Past its Redis retention the packet is read from MySQL, once settled.
	ctx := context.Background()
	keys := h.eng.Keys()
	p := keys.Partition(id)
	msgs, err := rdb.XRange(ctx, keys.Events(p), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var evs []flashgrab.Event
	for _, m := range msgs {
		es, err := engine.ParseEntry(p, m)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, es...)
	}
	if err := settle.NewSettler(nil, h.books, keys, nil).Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, keys.Packet(p, id), keys.PacketGrabs(p, id))
	status, got = h.do("GET", "/v1/packets/"+id, "", "")
	grabs, _ = got["grabs"].([]any)
	if status != 200 || len(grabs) != 3 || got["remaining_cents"] != 0.0 || got["remaining_count"] != 0.0 {
		t.Fatalf("get from MySQL: %d %v", status, got)
	}
	if status, _ := h.do("GET", "/v1/accounts/alice", bob, ""); status != 403 {
		t.Fatalf("bob reads alice's account: %d", status)
	}
	// 1000 credited, 600 into the packet, 200 back from her own grab once settled.
	if status, a := h.do("GET", "/v1/accounts/alice", alice, ""); status != 200 || a["balance_cents"] != 600.0 || a["version"] != 3.0 {
		t.Fatalf("alice reads her account: %d %v", status, a)
	}
	if status, body := h.do("POST", "/v1/admin/accounts/alice/credit", h.admin, `{"amount_cents":5,"ref":"seed"}`); status != 409 || errCode(body) != "exists" {
		t.Fatalf("ref reused with another amount: %d %v", status, body)
	}
	if status, _ := h.do("POST", "/v1/admin/accounts/alice/credit", alice, `{"amount_cents":5,"ref":"x"}`); status != 403 {
		t.Fatalf("user credits herself: %d", status)
	}
	for _, body := range []string{`{"amount_cents":0,"ref":"a"}`, `{"amount_cents":-5,"ref":"a"}`, `{"amount_cents":5}`, `{"amount_cents":5,"ref":"a b"}`} {
		if status, _ := h.do("POST", "/v1/admin/accounts/alice/credit", h.admin, body); status != 400 {
			t.Fatalf("credit %s: %d", body, status)
		}
	}
}

// TestPacketCreateWithMySQLDown: 503, and nothing is debited or created.
func TestPacketCreateWithMySQLDown(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	pdb, proxy := migratedMySQLBehindProxy(t)
	h := newHarnessOn(t, rdb, prefix, pdb)
	h.credit("alice", 1000, "seed")
	alice := h.token("alice", false, time.Hour)
	proxy.Down()
	if status, body := h.do("POST", "/v1/packets", alice, `{"total_cents":600,"count":3,"mode":"fixed"}`); status != 503 || errCode(body) != "unavailable" {
		t.Fatalf("create with MySQL down: %d %v", status, body)
	}
	proxy.Up()
	var bal int64
	var n int
	pdb.QueryRow("SELECT balance_cents FROM accounts WHERE id = 'alice'").Scan(&bal)
	pdb.QueryRow("SELECT COUNT(*) FROM packets").Scan(&n)
	if bal != 1000 || n != 0 {
		t.Fatalf("after a failed create: balance %d, %d packets; want 1000 and 0", bal, n)
	}
}

// TestPacketCreateWithRedisDown: the debit committed, then Redis failed. The
// create answers 201 and the packet is held, not lost; the sweeper publishes
// it once Redis is back and it is grabbable; the money is all accounted for.
func TestPacketCreateWithRedisDown(t *testing.T) {
	prdb, prefix, proxy := testenv.RedisBehindProxy(t)
	h := newHarness(t, prdb, prefix)
	h.credit("alice", 1000, "seed")
	alice := h.token("alice", false, time.Hour)
	proxy.Down()
	status, pk := h.do("POST", "/v1/packets", alice, `{"total_cents":600,"count":3,"mode":"fixed"}`)
	if status != 201 {
		t.Fatalf("create with Redis down after the debit: %d %v", status, pk)
	}
	if b := h.balance("alice"); b != 400 {
		t.Fatalf("sender balance %v, want 400 (the packet holds 600)", b)
	}
	proxy.Up()
	h.awaitReady()
	sweeper := settle.NewSweeper(h.eng, h.books, nil)
	sweeper.Grace = time.Nanosecond
	if err := sweeper.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, g := h.do("POST", "/v1/packets/"+pk["id"].(string)+"/grab", h.token("bob", false, time.Hour), ""); status != 200 || g["amount_cents"] != 200.0 {
		t.Fatalf("grab after the sweeper published: %d %v", status, g)
	}
}
