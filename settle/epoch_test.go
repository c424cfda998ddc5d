package settle_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// TestBatchReadBeforeLossIsNotCountedTwice is the race the chaos suite found
// (issue 9): a settler batch read from the streams before Redis lost its
// state, and committed after the rebuild had read MySQL, was counted twice:
// its units sold again, its packet shares refunded to the sender on top of
// being paid. Every entry now carries its partition's epoch, the rebuild
// raises the epoch before it reads, and the batch is refused: exactly the
// stock is sold and exactly the packet's total paid out.
func TestBatchReadBeforeLossIsNotCountedTwice(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.rebuildAll(t) // a fresh deployment: epoch 1 everywhere
	now := time.Now()
	sale := flashgrab.Sale{ID: "s1", MerchantID: "m1", PriceCents: 100, Stock: 10, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
	if _, err := r.eng.CreateSale(ctx, sale); err != nil {
		t.Fatal(err)
	}
	if _, err := r.books.Credit(ctx, "sender", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	pk := r.livePacket(t, "sender", 1000, 4, flashgrab.ModeFixed)
	r.settleAll(t) // the sale is in MySQL

	// The batch in flight: three orders and two shares, read by a settler.
	for i := range 3 {
		if _, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("u%d", i), Qty: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if _, err := r.eng.GrabPacket(ctx, pk.ID, fmt.Sprintf("g%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var inFlight []flashgrab.Event
	parts := []int{r.keys.Partition("s1")}
	if q := r.keys.Partition(pk.ID); q != parts[0] {
		parts = append(parts, q)
	}
	for _, p := range parts {
		evs, err := r.eng.PartitionEvents(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Epoch != 1 {
				t.Fatalf("event %s %s carries epoch %d, want 1", e.ID, e.Kind, e.Epoch)
			}
		}
		inFlight = append(inFlight, evs...)
	}
	if len(inFlight) != 5 {
		t.Fatalf("%d events in flight, want 3 orders and 2 shares", len(inFlight))
	}

	// Redis loses everything; the rebuild restores from MySQL, which has
	// none of the batch.
	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r.rebuildAll(t)
	s := settle.NewSettler(r.rdb, r.books, r.keys, nil)
	var stale *settle.StaleEpochError
	if err := s.Apply(ctx, inFlight); !errors.As(err, &stale) || stale.Epoch != 1 || stale.Current != 2 {
		t.Fatalf("applying the batch read before the loss: %v, want a StaleEpochError of epoch 1, now 2", err)
	}
	var orders, shares int
	if err := r.db.QueryRow(`SELECT (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM ledger WHERE kind = 'grab')`).Scan(&orders, &shares); err != nil {
		t.Fatal(err)
	}
	if orders != 0 || shares != 0 {
		t.Fatalf("the refused batch left %d orders and %d shares in MySQL, want none", orders, shares)
	}

	// Selling and grabbing go on from the rebuilt state, in the new epoch.
	for i := range 12 {
		_, err := r.eng.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: fmt.Sprintf("v%d", i), Qty: 1})
		if i < 10 && err != nil || i >= 10 && !errors.Is(err, flashgrab.ErrSoldOut) {
			t.Fatalf("grab %d after the rebuild: %v", i, err)
		}
	}
	for i := range 5 {
		_, err := r.eng.GrabPacket(ctx, pk.ID, fmt.Sprintf("h%d", i))
		if i < 4 && err != nil || i == 4 && !errors.Is(err, flashgrab.ErrEmpty) {
			t.Fatalf("packet grab %d after the rebuild: %v", i, err)
		}
	}
	evs, err := r.eng.PartitionEvents(ctx, r.keys.Partition("s1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[0].Epoch != 2 {
		t.Fatalf("events after the rebuild: %d, the first of epoch %d, want epoch 2", len(evs), evs[0].Epoch)
	}
	r.settleAll(t)
	var sold, paid int64
	if err := r.db.QueryRow(`SELECT (SELECT COALESCE(SUM(qty), 0) FROM orders WHERE sale_id = 's1'),
		(SELECT COALESCE(SUM(delta_cents), 0) FROM ledger WHERE kind = 'grab' AND ref = ?)`, pk.ID).Scan(&sold, &paid); err != nil {
		t.Fatal(err)
	}
	if sold != sale.Stock || paid != pk.TotalCents {
		t.Fatalf("sold %d of %d units, paid %d of %d fen: the batch read before the loss was counted twice", sold, sale.Stock, paid, pk.TotalCents)
	}
	if b := r.balance(t, "sender"); b != 0 {
		t.Fatalf("sender holds %d fen, want 0 (the whole packet was grabbed)", b)
	}
}

// TestPacketExpiryFencedWithoutEpoch: a packet's expiry is fenced like a grab
// while its partition has no marker (its refund, written then, could be
// counted again by the rebuild), and after the rebuild its refund carries
// the new epoch and settles.
func TestPacketExpiryFencedWithoutEpoch(t *testing.T) {
	r := newLossRig(t)
	ctx := context.Background()
	r.rebuildAll(t)
	if _, err := r.books.Credit(ctx, "sender", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	pk := r.livePacket(t, "sender", 1000, 4, flashgrab.ModeFixed)
	if _, err := r.eng.GrabPacket(ctx, pk.ID, "g0"); err != nil {
		t.Fatal(err)
	}
	r.settleAll(t)
	p := r.keys.Partition(pk.ID)
	past := time.Now().Add(-time.Minute).UnixMilli()
	if err := r.rdb.HSet(ctx, r.keys.Packet(p, pk.ID), "exp", past).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.ZAdd(ctx, r.keys.PacketExpiry(p), redisZ(past, pk.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.Del(ctx, r.keys.Epoch(p)).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := r.eng.ExpirePackets(ctx, p); n != 0 || !errors.Is(err, flashgrab.ErrRebuilding) {
		t.Fatalf("expiry without the marker: %d closed, %v; want 0 and ErrRebuilding", n, err)
	}
	if evs, err := r.eng.PartitionEvents(ctx, p); err != nil || len(evs) != 0 {
		t.Fatalf("stream after the fenced expiry: %d events (%v), want none", len(evs), err)
	}
	r.rebuildAll(t)
	if n, err := r.eng.ExpirePackets(ctx, p); n != 1 || err != nil {
		t.Fatalf("expiry after the rebuild: %d closed, %v; want 1", n, err)
	}
	evs, err := r.eng.PartitionEvents(ctx, p)
	if err != nil || len(evs) != 1 || evs[0].Kind != flashgrab.EventRefund || evs[0].Epoch != 2 {
		t.Fatalf("stream after the expiry: %+v (%v), want one refund of epoch 2", evs, err)
	}
	r.settleAll(t)
	if b := r.balance(t, "sender"); b != 750 {
		t.Fatalf("sender holds %d fen, want the 750 not grabbed", b)
	}
}
