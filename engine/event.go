package engine

import (
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// ParseEvent decodes a stream entry of partition p.
func ParseEvent(p int, m redis.XMessage) (flashgrab.Event, error) {
	var bad string
	str := func(k string) string {
		s, ok := m.Values[k].(string)
		if !ok && bad == "" {
			bad = k
		}
		return s
	}
	num := func(k string) int64 {
		n, err := strconv.ParseInt(str(k), 10, 64)
		if err != nil && bad == "" {
			bad = k
		}
		return n
	}
	ms := func(k string) time.Time { return time.UnixMilli(num(k)).UTC() }
	e := flashgrab.Event{ID: m.ID, Partition: p, Kind: str("k")}
	switch e.Kind {
	case flashgrab.EventSale:
		e.Sale = flashgrab.Sale{ID: str("id"), MerchantID: str("mch"), PriceCents: num("price"), Stock: num("stock"),
			PerUserLimit: num("limit"), StartsAt: ms("start"), EndsAt: ms("end")}
		if _, sharded := m.Values["parts"]; sharded {
			parts, err := ParseParts(str("parts"))
			if err != nil || int64(len(parts)) != num("shards") {
				bad = "parts"
			}
			e.Sale.Shards, e.Sale.ShardPartitions = len(parts), parts
		}
	case flashgrab.EventOrder:
		e.Order = flashgrab.Order{ID: str("id"), SaleID: str("sale"), UserID: str("user"), MerchantID: str("mch"),
			Qty: num("qty"), AmountCents: num("amt"), CreatedAt: ms("at")}
		// Events written before the key was recorded have no "key" field.
		e.Order.Key, e.Order.KeyKnown = m.Values["key"].(string)
	case flashgrab.EventGrab:
		e.Grab = flashgrab.PacketGrab{PacketID: str("pkt"), SenderID: str("sender"), UserID: str("user"),
			AmountCents: num("amt"), Seq: num("seq"), At: ms("at")}
	case flashgrab.EventRefund:
		e.Refund = flashgrab.PacketRefund{PacketID: str("pkt"), SenderID: str("sender"), AmountCents: num("amt"), At: ms("at")}
	default:
		return e, fmt.Errorf("event %s: unknown kind %q", m.ID, e.Kind)
	}
	if bad != "" {
		return e, fmt.Errorf("event %s (%s): field %q missing or malformed", m.ID, e.Kind, bad)
	}
	return e, nil
}
