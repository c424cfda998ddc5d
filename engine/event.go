package engine

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// entryOrders is the kind of a stream entry carrying every order one sale
// grab script call won (sale_grab.lua): one entry per batch rather than per
// user. Its events read as flashgrab.EventOrder, each with the entry's id.
const entryOrders = "orders"

// entryGrabs is the kind of a stream entry carrying every share one packet
// grab script call won (packet_grab.lua); its events read as
// flashgrab.EventGrab.
const entryGrabs = "grabs"

// ParseEntry decodes a stream entry of partition p into the events it
// carries: one for an entry of kind sale, order, grab or refund; every order
// (every share) of the batch for an entry of kind "orders" ("grabs"). Each event's ID is the
// entry's. An entry that cannot be read fails whole.
func ParseEntry(p int, m redis.XMessage) ([]flashgrab.Event, error) {
	f := fields{m: m}
	e := flashgrab.Event{ID: m.ID, Partition: p, Kind: f.str("k"), Epoch: entryEpoch(m)}
	switch e.Kind {
	case flashgrab.EventSale:
		e.Sale = flashgrab.Sale{ID: f.str("id"), MerchantID: f.str("mch"), PriceCents: f.num("price"), Stock: f.num("stock"),
			PerUserLimit: f.num("limit"), StartsAt: f.ms("start"), EndsAt: f.ms("end")}
		if _, sharded := m.Values["parts"]; sharded {
			parts, err := ParseParts(f.str("parts"))
			if (err != nil || int64(len(parts)) != f.num("shards")) && f.bad == "" {
				f.bad = "parts"
			}
			e.Sale.Shards, e.Sale.ShardPartitions = len(parts), parts
		}
	case flashgrab.EventOrder:
		e.Order = flashgrab.Order{ID: f.str("id"), SaleID: f.str("sale"), UserID: f.str("user"), MerchantID: f.str("mch"),
			Qty: f.num("qty"), AmountCents: f.num("amt"), CreatedAt: f.ms("at")}
		// Events written before the key was recorded have no "key" field.
		e.Order.Key, e.Order.KeyKnown = m.Values["key"].(string)
	case entryOrders:
		return parseOrders(p, &f)
	case entryGrabs:
		return parseGrabs(p, &f)
	case flashgrab.EventGrab:
		e.Grab = flashgrab.PacketGrab{PacketID: f.str("pkt"), SenderID: f.str("sender"), UserID: f.str("user"),
			AmountCents: f.num("amt"), Seq: f.num("seq"), At: f.ms("at")}
	case flashgrab.EventRefund:
		e.Refund = flashgrab.PacketRefund{PacketID: f.str("pkt"), SenderID: f.str("sender"), AmountCents: f.num("amt"), At: f.ms("at")}
	default:
		return nil, fmt.Errorf("event %s: unknown kind %q", m.ID, e.Kind)
	}
	if f.bad != "" {
		return nil, fmt.Errorf("event %s (%s): field %q missing or malformed", m.ID, e.Kind, f.bad)
	}
	return []flashgrab.Event{e}, nil
}

// entryEpoch reads the partition epoch an entry was written in (its "ep",
// copied by the script from the partition's marker): 0, unknown, when the
// entry has none or the marker held no number (one written before epochs
// were numbered).
func entryEpoch(m redis.XMessage) int64 {
	s, _ := m.Values["ep"].(string)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// parseOrders reads an "orders" entry: sale, mch, at, and o, the orders
// joined by ',', each "id|user|qty|amount|key" (see sale_grab.lua).
func parseOrders(p int, f *fields) ([]flashgrab.Event, error) {
	sale, mch, at, list := f.str("sale"), f.str("mch"), f.ms("at"), f.str("o")
	if f.bad == "" && list == "" {
		f.bad = "o"
	}
	if f.bad != "" {
		return nil, fmt.Errorf("event %s (%s): field %q missing or malformed", f.m.ID, entryOrders, f.bad)
	}
	evs := make([]flashgrab.Event, 0, strings.Count(list, ",")+1)
	for i, o := range strings.Split(list, ",") {
		// id|user|qty|amount|key: the idempotency key is the fifth field,
		// always present, possibly empty (the default attempt).
		parts := strings.SplitN(o, "|", 5)
		if len(parts) != 5 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("event %s (%s): order %d is %q, not id|user|qty|amount|key", f.m.ID, entryOrders, i, o)
		}
		qty, err1 := strconv.ParseInt(parts[2], 10, 64)
		amt, err2 := strconv.ParseInt(parts[3], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("event %s (%s): order %d is %q: qty or amount not an integer", f.m.ID, entryOrders, i, o)
		}
		evs = append(evs, flashgrab.Event{ID: f.m.ID, Partition: p, Kind: flashgrab.EventOrder, Epoch: entryEpoch(f.m),
			Order: flashgrab.Order{ID: parts[0], SaleID: sale, UserID: parts[1], MerchantID: mch, Qty: qty,
				AmountCents: amt, CreatedAt: at, Key: parts[4], KeyKnown: true}})
	}
	return evs, nil
}

// parseGrabs reads a "grabs" entry: pkt, sender, at, and g, the shares
// joined by ',', each "user|amount|seq" (see packet_grab.lua).
func parseGrabs(p int, f *fields) ([]flashgrab.Event, error) {
	pkt, sender, at, list := f.str("pkt"), f.str("sender"), f.ms("at"), f.str("g")
	if f.bad == "" && list == "" {
		f.bad = "g"
	}
	if f.bad != "" {
		return nil, fmt.Errorf("event %s (%s): field %q missing or malformed", f.m.ID, entryGrabs, f.bad)
	}
	evs := make([]flashgrab.Event, 0, strings.Count(list, ",")+1)
	for i, g := range strings.Split(list, ",") {
		parts := strings.Split(g, "|")
		if len(parts) != 3 || parts[0] == "" {
			return nil, fmt.Errorf("event %s (%s): share %d is %q, not user|amount|seq", f.m.ID, entryGrabs, i, g)
		}
		amt, err1 := strconv.ParseInt(parts[1], 10, 64)
		seq, err2 := strconv.ParseInt(parts[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("event %s (%s): share %d is %q: amount or seq not an integer", f.m.ID, entryGrabs, i, g)
		}
		evs = append(evs, flashgrab.Event{ID: f.m.ID, Partition: p, Kind: flashgrab.EventGrab, Epoch: entryEpoch(f.m),
			Grab: flashgrab.PacketGrab{PacketID: pkt, SenderID: sender, UserID: parts[0], AmountCents: amt, Seq: seq, At: at}})
	}
	return evs, nil
}

// fields reads an entry's values and keeps the first one missing or
// malformed.
type fields struct {
	m   redis.XMessage
	bad string
}

func (f *fields) str(k string) string {
	s, ok := f.m.Values[k].(string)
	if !ok && f.bad == "" {
		f.bad = k
	}
	return s
}

func (f *fields) num(k string) int64 {
	n, err := strconv.ParseInt(f.str(k), 10, 64)
	if err != nil && f.bad == "" {
		f.bad = k
	}
	return n
}

func (f *fields) ms(k string) time.Time { return time.UnixMilli(f.num(k)).UTC() }
