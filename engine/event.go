package engine

import (
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kinds of settlement events the scripts append to the partition streams.
const (
	EventSale   = "sale"   // a sale was created
	EventOrder  = "order"  // a sale grab won an order
	EventGrab   = "grab"   // a packet grab won a share
	EventRefund = "refund" // an expired packet's remainder goes back to its sender
)

// Event is one settlement event read from a partition stream. Kind says which
// of the payload fields is set.
type Event struct {
	ID        string // stream entry id, "<ms>-<seq>"
	Partition int
	Kind      string

	Sale   Sale
	Order  Order
	Grab   PacketGrab
	Refund PacketRefund
}

// PacketGrab is a won share of a red packet.
type PacketGrab struct {
	PacketID    string
	SenderID    string
	UserID      string
	AmountCents int64
	Seq         int64 // 1 for the first grabber
	At          time.Time
}

// PacketRefund is what an expired packet returns to its sender.
type PacketRefund struct {
	PacketID    string
	SenderID    string
	AmountCents int64
	At          time.Time
}

// ParseEvent decodes a stream entry of partition p.
func ParseEvent(p int, m redis.XMessage) (Event, error) {
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
	e := Event{ID: m.ID, Partition: p, Kind: str("k")}
	switch e.Kind {
	case EventSale:
		e.Sale = Sale{ID: str("id"), MerchantID: str("mch"), PriceCents: num("price"), Stock: num("stock"),
			PerUserLimit: num("limit"), StartsAt: ms("start"), EndsAt: ms("end")}
	case EventOrder:
		e.Order = Order{ID: str("id"), SaleID: str("sale"), UserID: str("user"), MerchantID: str("mch"),
			Qty: num("qty"), AmountCents: num("amt"), CreatedAt: ms("at")}
	case EventGrab:
		e.Grab = PacketGrab{PacketID: str("pkt"), SenderID: str("sender"), UserID: str("user"),
			AmountCents: num("amt"), Seq: num("seq"), At: ms("at")}
	case EventRefund:
		e.Refund = PacketRefund{PacketID: str("pkt"), SenderID: str("sender"), AmountCents: num("amt"), At: ms("at")}
	default:
		return e, fmt.Errorf("event %s: unknown kind %q", m.ID, e.Kind)
	}
	if bad != "" {
		return e, fmt.Errorf("event %s (%s): field %q missing or malformed", m.ID, e.Kind, bad)
	}
	return e, nil
}
