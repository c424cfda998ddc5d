package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestBatchAnswersEqualPerCallAnswers: one script call deciding a sequence
// of users gives each exactly what its own call, made in the same order,
// would have: every outcome of the script shows up in one batch.
func TestBatchAnswersEqualPerCallAnswers(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Redis: rdb, Keys: Keyspace{Prefix: prefix, Partitions: 4}, SoldOutTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range []string{"batched", "single"} {
		if _, err := e.CreateSale(ctx, flashgrab.Sale{ID: id, MerchantID: "m", PriceCents: 100, Stock: 3, PerUserLimit: 2,
			StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	seq := []flashgrab.GrabRequest{
		{UserID: "alice", Qty: 2},              // ok, 1 left
		{UserID: "alice", Qty: 1},              // repeat of her order
		{UserID: "bob", Qty: 3},                // bad_qty
		{UserID: "bob", Qty: 2},                // sold_out, 1 left
		{UserID: "alice", Key: "k2", Qty: 1},   // limit_reached
		{UserID: "carol", Qty: 1},              // ok, 0 left
		{UserID: "dave", Qty: 1},               // sold_out, 0 left
		{UserID: "carol", Key: "", Qty: 1},     // repeat
		{UserID: "carol", Key: "next", Qty: 1}, // sold_out (within her limit)
	}
	// waiterFor makes the waiter Grab would queue for r.
	waiterFor := func(sale string, r flashgrab.GrabRequest) *waiter {
		h := e.saleHead(sale)
		id, _ := e.ids.Next()
		bucket, oid := h.order(id)
		if p, ok := e.keys.orderPartition(oid); !ok || p != h.p || bucket != e.keys.Orders(h.p, oid) {
			t.Fatalf("order %q in partition %d has bucket %q, want partition %d and bucket %q", oid, p, bucket, h.p, e.keys.Orders(h.p, oid))
		}
		return &waiter{ctx: ctx, call: h.call, userKeys: []string{bucket}, userArgs: []any{r.UserID, r.Key, r.Qty, oid},
			done: make(chan struct{}, 1)}
	}
	// answer decodes a reply as Grab does: the outcome's name and the
	// result.
	names := []string{"ok", "repeat", "sold_out", "limit_reached", "bad_qty", "not_started", "ended", "not_found"}
	type answer struct {
		outcome string
		res     flashgrab.GrabResult
	}
	decode := func(sale string, w *waiter, v []int64) answer {
		res, _ := e.saleHead(sale).outcome(sale, w.userArgs[3].(string), v)
		return answer{names[v[0]], res.GrabResult}
	}
	// describe renders the answers with order ids replaced by the index of
	// the request that won them, so the two sales' answers compare.
	describe := func(answers []answer) []string {
		wonBy := map[string]int{}
		out := make([]string, len(answers))
		for i, a := range answers {
			if a.outcome == "ok" {
				wonBy[a.res.OrderID] = i
			}
			who := "-"
			if a.res.OrderID != "" {
				who = fmt.Sprint("order of #", wonBy[a.res.OrderID])
			}
			out[i] = fmt.Sprintf("%v %s qty=%v amount=%v remaining=%v", a.outcome, who, a.res.Qty, a.res.AmountCents, a.res.Remaining)
		}
		return out
	}

	// One batch, in order, through the batcher's own send path.
	b := newBatcher(rdb, Config{}, newBackground())
	ws := make([]*waiter, len(seq))
	for i, r := range seq {
		ws[i] = waiterFor("batched", r)
	}
	b.execRound([]batch{{q: &targetQueue{}, waiters: ws}})
	batched := make([]answer, len(ws))
	for i, w := range ws {
		<-w.done
		if w.err != nil {
			t.Fatalf("batched #%d: %v", i, w.err)
		}
		batched[i] = decode("batched", w, w.reply)
	}
	if st := b.stats(); st.Calls != 1 || st.Users != int64(len(seq)) {
		t.Fatalf("batch went out as %+v, want one call for %d users", st, len(seq))
	}

	// The same sequence, one call per user.
	single := make([]answer, len(seq))
	direct := newBatcher(rdb, Config{NoCoalesce: true}, newBackground())
	for i, r := range seq {
		w := waiterFor("single", r)
		v, err := direct.do(ctx, &w.call, w.userKeys, w.userArgs...)
		if err != nil {
			t.Fatalf("single #%d: %v", i, err)
		}
		single[i] = decode("single", w, v)
	}

	got, want := describe(batched), describe(single)
	wantOutcomes := []string{"ok", "repeat", "bad_qty", "sold_out", "limit_reached", "ok", "sold_out", "repeat", "sold_out"}
	for i := range seq {
		if got[i] != want[i] {
			t.Errorf("#%d %+v: batched %q, one call each %q", i, seq[i], got[i], want[i])
		}
		if single[i].outcome != wantOutcomes[i] {
			t.Errorf("#%d %+v: outcome %v, want %s", i, seq[i], single[i].outcome, wantOutcomes[i])
		}
	}

	// Both leave the same Redis state: every buyer's holding, every
	// attempt's order (its quantity and amount), and one order event per
	// win; the batch's wins travel in one stream entry.
	state := func(sale string) (holdings map[string]string, orders []flashgrab.Order, entries int) {
		p := e.keys.Partition(sale)
		all, err := rdb.HGetAll(ctx, e.keys.Buyers(p, sale)).Result()
		if err != nil {
			t.Fatal(err)
		}
		holdings = map[string]string{}
		for f, v := range all {
			if f[0] == 'u' {
				holdings[f] = v
			} else {
				holdings[f] = v[len(v)-len("|2|200"):] // the order id differs
			}
		}
		msgs, err := rdb.XRange(ctx, e.keys.Events(p), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			evs, err := ParseEntry(p, m)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, ev := range evs {
				if ev.Kind == flashgrab.EventOrder && ev.Order.SaleID == sale {
					orders = append(orders, ev.Order)
					n++
				}
			}
			if n > 0 {
				entries++
			}
		}
		return holdings, orders, entries
	}
	bh, bo, be := state("batched")
	sh, so, se := state("single")
	if fmt.Sprint(bh) != fmt.Sprint(sh) {
		t.Errorf("buyers after the batch %v, after one call each %v", bh, sh)
	}
	if len(bo) != 2 || len(so) != 2 || be != 1 || se != 2 {
		t.Fatalf("order events: batched %d in %d entries, one call each %d in %d entries; want 2 in 1 and 2 in 2", len(bo), be, len(so), se)
	}
	for i := range bo {
		b, s := bo[i], so[i]
		if b.UserID != s.UserID || b.Qty != s.Qty || b.AmountCents != s.AmountCents || b.MerchantID != "m" ||
			b.ID != batched[[]int{0, 5}[i]].res.OrderID {
			t.Errorf("order event %d: batched %+v, one call each %+v", i, b, s)
		}
	}
}
