package settle_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// expireNow moves a packet's expiry into the past, as if its time had come.
func (r *rig) expireNow(t *testing.T, id string) {
	t.Helper()
	p := r.keys.Partition(id)
	past := time.Now().Add(-time.Second).UnixMilli()
	ctx := context.Background()
	if err := r.rdb.HSet(ctx, r.keys.Packet(p, id), "exp", past).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.ZAddXX(ctx, r.keys.PacketExpiry(p), redisZ(past, id)).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestPacketBooksBalance: 10 senders fund 100 packets of 120 shares; 1,000
// users make 10,000 grabs concurrently; the packets expire and refund what is
// left. Every grabber's balance is the sum of its shares, every sender's is
// its credit minus its packets plus its refunds, and reconcile finds nothing
// — until a balance is corrupted.
func TestPacketBooksBalance(t *testing.T) {
	r := newRig(t)
	books := r.books
	r.settler(t, r.db, "a", time.Minute)
	ctx := context.Background()
	const senders, perSender, shares, grabsPerPacket, users = 10, 10, 120, 100, 1000

	var packets []flashgrab.Packet
	for i := 0; i < senders; i++ {
		sender := fmt.Sprintf("sender%d", i)
		if _, err := books.Credit(ctx, sender, 1_000_000, "seed-"+sender); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < perSender; j++ {
			mode := flashgrab.ModeRandom
			total := int64(5000 + 100*j)
			if j%2 == 1 {
				mode, total = flashgrab.ModeFixed, 6000
			}
			pk, err := r.eng.NewPacket(sender, total, shares, mode, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := books.FundPacket(ctx, pk); err != nil {
				t.Fatal(err)
			}
			if err := r.eng.PublishPacket(ctx, pk); err != nil {
				t.Fatal(err)
			}
			if err := books.MarkPacketLive(ctx, pk.ID); err != nil {
				t.Fatal(err)
			}
			packets = append(packets, pk)
		}
	}

	type job struct{ pkt, user int }
	jobs := make(chan job)
	var mu sync.Mutex
	earned := map[string]int64{}
	handed := map[string]int64{}
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				user := "g" + strconv.Itoa(j.user)
				res, err := r.eng.GrabPacket(ctx, packets[j.pkt].ID, user)
				if err != nil || res.Repeat {
					t.Errorf("grab: %+v %v", res, err)
					continue
				}
				mu.Lock()
				earned[user] += res.AmountCents
				handed[packets[j.pkt].ID] += res.AmountCents
				mu.Unlock()
			}
		}()
	}
	for k := 0; k < len(packets)*grabsPerPacket; k++ {
		pkt := k % len(packets)
		jobs <- job{pkt: pkt, user: (k/len(packets) + pkt*7) % users}
	}
	close(jobs)
	wg.Wait()

	r.sellOut(t, 2, 50, 80) // so that reconcile has sales and orders to check too
	for _, pk := range packets {
		r.expireNow(t, pk.ID)
	}
	sweeper := settle.NewSweeper(r.eng, books, nil)
	if err := sweeper.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	r.waitDrained(t)

	for user, want := range earned {
		a, err := books.Account(ctx, user)
		if err != nil || a.BalanceCents != want {
			t.Fatalf("grabber %s: balance %d (%v), want its shares %d", user, a.BalanceCents, err, want)
		}
	}
	for i := 0; i < senders; i++ {
		sender := fmt.Sprintf("sender%d", i)
		want := int64(1_000_000)
		for _, pk := range packets {
			if pk.SenderID == sender {
				want -= pk.TotalCents                 // funded
				want += pk.TotalCents - handed[pk.ID] // refunded at expiry
			}
		}
		if a, _ := books.Account(ctx, sender); a.BalanceCents != want {
			t.Fatalf("sender %s: balance %d, want %d", sender, a.BalanceCents, want)
		}
	}
	var refundRows int
	r.db.QueryRow("SELECT COUNT(*) FROM ledger WHERE kind = 'refund'").Scan(&refundRows)
	if refundRows != len(packets) {
		t.Fatalf("%d refund ledger rows, want one per packet (%d)", refundRows, len(packets))
	}

	rec := &settle.Reconciler{DB: r.db, Redis: r.rdb, Keys: r.keys}
	rep, err := rec.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("reconcile found differences: %+v", rep.Checks)
	}
	// This test makes no payments and lets no order expire; every other
	// check has something to look at.
	nothingToCheck := map[string]bool{
		"every sale/topup credit is a paid payment (inv. 6)": true,
		"every paid payment credited exactly once (inv. 6)":  true,
		"expired orders returned their stock":                true,
		"every refund reached its buyer":                     true,
		"sharded sale: moved out - moved in = in transit":    true,
	}
	for _, c := range rep.Checks {
		if c.Checked == 0 && !nothingToCheck[c.Name] {
			t.Errorf("check %q looked at nothing", c.Name)
		}
	}

	if _, err := r.db.Exec("UPDATE accounts SET balance_cents = balance_cents + 1 WHERE id = 'g1'"); err != nil {
		t.Fatal(err)
	}
	rep, err = rec.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("reconcile passed a corrupted balance")
	}
}

func TestFundedPacketPublishedLater(t *testing.T) {
	r := newRig(t)
	books := &settle.Books{DB: r.db}
	ctx := context.Background()
	if _, err := books.Credit(ctx, "s", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	pk, err := r.eng.NewPacket("s", 1000, 4, flashgrab.ModeFixed, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The create died between the debit and Redis.
	if err := books.FundPacket(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if _, err := r.eng.GrabPacket(ctx, pk.ID, "u"); !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("grab of an unpublished packet: %v", err)
	}
	sweeper := settle.NewSweeper(r.eng, books, nil)
	sweeper.Grace = time.Nanosecond
	if err := sweeper.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := r.eng.GrabPacket(ctx, pk.ID, "u"); err != nil || res.AmountCents != 250 {
		t.Fatalf("grab after the sweeper published it: %+v %v", res, err)
	}
	if left, _ := books.FundedPackets(ctx, time.Now()); len(left) != 0 {
		t.Fatalf("%d packets still unpublished", len(left))
	}
}
