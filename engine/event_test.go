package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// TestParseOrdersEntry: an entry of a grab batch reads as every order it
// carries, each with the entry's id and the batch's sale, merchant and time;
// its idempotency key travels with each order; an entry with any order
// unreadable fails whole (the settler dead-letters
// it) rather than settling part of it.
func TestParseOrdersEntry(t *testing.T) {
	entry := func(o string) redis.XMessage {
		return redis.XMessage{ID: "1700000000000-3", Values: map[string]any{"k": "orders", "sale": "s1", "mch": "m1",
			"at": "1700000000123", "o": o}}
	}
	evs, err := engine.ParseEntry(5, entry("11-5|alice|2|300|k1,12-5|bob|1|150|"))
	if err != nil || len(evs) != 2 {
		t.Fatalf("parse: %+v %v, want two orders", evs, err)
	}
	at := time.UnixMilli(1700000000123).UTC()
	want := []flashgrab.Order{
		{ID: "11-5", SaleID: "s1", UserID: "alice", MerchantID: "m1", Qty: 2, AmountCents: 300, CreatedAt: at, Key: "k1", KeyKnown: true},
		// The default attempt's key is empty, and known.
		{ID: "12-5", SaleID: "s1", UserID: "bob", MerchantID: "m1", Qty: 1, AmountCents: 150, CreatedAt: at, KeyKnown: true},
	}
	for i, ev := range evs {
		if ev.ID != "1700000000000-3" || ev.Partition != 5 || ev.Kind != flashgrab.EventOrder || ev.Order != want[i] {
			t.Errorf("event %d: %+v, want order %+v of entry 1700000000000-3", i, ev, want[i])
		}
	}
	for _, bad := range []struct{ o, why string }{
		{"", `"o"`},
		{"11-5|alice|2|300", "not id|user|qty|amount|key"},
		{"11-5|alice|2|300|k1,12-5|bob|x|150|", "not an integer"},
		{"11-5|alice|2|300|k1,|bob|1|150|", "not id|user|qty|amount|key"},
	} {
		if evs, err := engine.ParseEntry(5, entry(bad.o)); err == nil || !strings.Contains(err.Error(), bad.why) {
			t.Errorf("o=%q: %+v %v, want an error saying %s", bad.o, evs, err, bad.why)
		}
	}
	m := entry("11-5|alice|2|300|k1")
	delete(m.Values, "at")
	if _, err := engine.ParseEntry(5, m); err == nil || !strings.Contains(err.Error(), `"at"`) {
		t.Errorf("entry without at: %v, want an error naming it", err)
	}
}

// TestParseGrabsEntry: an entry of a packet grab batch reads as every share
// it carries; an unreadable share fails the entry whole.
func TestParseGrabsEntry(t *testing.T) {
	entry := func(g string) redis.XMessage {
		return redis.XMessage{ID: "1700000000000-4", Values: map[string]any{"k": "grabs", "pkt": "p1", "sender": "s",
			"at": "1700000000123", "g": g}}
	}
	evs, err := engine.ParseEntry(2, entry("alice|30|1,bob|70|2"))
	if err != nil || len(evs) != 2 {
		t.Fatalf("parse: %+v %v, want two shares", evs, err)
	}
	at := time.UnixMilli(1700000000123).UTC()
	want := []flashgrab.PacketGrab{
		{PacketID: "p1", SenderID: "s", UserID: "alice", AmountCents: 30, Seq: 1, At: at},
		{PacketID: "p1", SenderID: "s", UserID: "bob", AmountCents: 70, Seq: 2, At: at},
	}
	for i, ev := range evs {
		if ev.ID != "1700000000000-4" || ev.Partition != 2 || ev.Kind != flashgrab.EventGrab || ev.Grab != want[i] {
			t.Errorf("event %d: %+v, want share %+v of entry 1700000000000-4", i, ev, want[i])
		}
	}
	for _, bad := range []struct{ g, why string }{
		{"", `"g"`},
		{"alice|30", "not user|amount|seq"},
		{"alice|30|1,bob|x|2", "not an integer"},
		{"alice|30|1,|70|2", "not user|amount|seq"},
	} {
		if evs, err := engine.ParseEntry(2, entry(bad.g)); err == nil || !strings.Contains(err.Error(), bad.why) {
			t.Errorf("g=%q: %+v %v, want an error saying %s", bad.g, evs, err, bad.why)
		}
	}
}

// TestParseEntryEpoch: every event of an entry carries the partition epoch
// the script copied into it ("ep"); an entry without a number (none, or a
// marker written before epochs were numbered) reads as epoch 0, unchecked,
// rather than failing.
func TestParseEntryEpoch(t *testing.T) {
	for _, c := range []struct {
		ep   any
		want int64
	}{{"3", 3}, {"0", 0}, {nil, 0}, {"rebuilt 2026-11-30T00:00:00Z", 0}, {"-1", 0}} {
		for _, m := range []redis.XMessage{
			{ID: "1-1", Values: map[string]any{"k": "orders", "sale": "s1", "mch": "m1", "at": "1", "o": "11-5|a|1|1|,12-5|b|1|1|"}},
			{ID: "1-2", Values: map[string]any{"k": "grabs", "pkt": "p1", "sender": "s", "at": "1", "g": "a|1|1,b|2|2"}},
			{ID: "1-3", Values: map[string]any{"k": "refund", "pkt": "p1", "sender": "s", "amt": "5", "at": "1"}},
		} {
			if c.ep != nil {
				m.Values["ep"] = c.ep
			}
			evs, err := engine.ParseEntry(5, m)
			if err != nil {
				t.Fatalf("ep %v, entry %s: %v", c.ep, m.ID, err)
			}
			for _, ev := range evs {
				if ev.Epoch != c.want {
					t.Errorf("ep %v, entry %s: event of epoch %d, want %d", c.ep, m.ID, ev.Epoch, c.want)
				}
			}
		}
	}
}
