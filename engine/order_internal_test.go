package engine

import (
	"context"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestBatchAcrossOrderBuckets: one script call whose orders' ids fall on
// both sides of a bucket boundary (the last millisecond of one
// OrderBucket, the first of the next) writes each record into its own
// id's bucket, so each reads back right after the grab, and gives both
// buckets the retention as expiry.
func TestBatchAcrossOrderBuckets(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Redis: rdb, Keys: Keyspace{Prefix: prefix, Partitions: 4}, Retention: time.Hour, SoldOutTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := e.CreateSale(ctx, flashgrab.Sale{ID: "s1", MerchantID: "m", PriceCents: 100, Stock: 5, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	h := e.saleHead("s1")
	span := OrderBucket.Milliseconds()
	last := now.UnixMilli()/span*span + span - 1 // the last ms of the bucket of now
	users := []string{"alice", "bob"}
	ws := make([]*waiter, len(users))
	oids := make([]string, len(users))
	buckets := make([]string, len(users))
	for i, u := range users {
		id := (last+int64(i)-epoch)<<(nodeBits+seqBits) | maxNode<<seqBits | int64(i)
		buckets[i], oids[i] = h.order(id)
		ws[i] = &waiter{ctx: ctx, call: h.call, userKeys: []string{buckets[i]}, userArgs: []any{u, "", 1, oids[i]},
			done: make(chan struct{}, 1)}
	}
	if buckets[0] == buckets[1] {
		t.Fatalf("ids a millisecond apart across a boundary share bucket %s", buckets[0])
	}
	b := newBatcher(rdb, Config{}, newBackground())
	b.execRound([]batch{{q: &targetQueue{}, waiters: ws}})
	for i, w := range ws {
		<-w.done
		if w.err != nil {
			t.Fatal(w.err)
		}
		if res, err := h.outcome("s1", oids[i], w.reply); err != nil || res.OrderID != oids[i] {
			t.Fatalf("%s: %+v %v, want order %s", users[i], res, err, oids[i])
		}
		if buckets[i] != e.keys.Orders(h.p, oids[i]) {
			t.Fatalf("%s's order %s went to %s, its id's bucket is %s", users[i], oids[i], buckets[i], e.keys.Orders(h.p, oids[i]))
		}
		o, err := e.Order(ctx, oids[i])
		if err != nil || o.UserID != users[i] || o.SaleID != "s1" || o.Qty != 1 || o.AmountCents != 100 {
			t.Fatalf("order %s right after the grab: %+v %v", oids[i], o, err)
		}
		if ttl := rdb.PTTL(ctx, buckets[i]).Val(); ttl <= 0 || ttl > time.Hour {
			t.Fatalf("bucket %s expires in %v, want within (0, 1h]", buckets[i], ttl)
		}
	}
	if st := b.stats(); st.Calls != 1 {
		t.Fatalf("batch went out as %+v, want one call", st)
	}
}
