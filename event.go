package flashgrab

import "time"

// Kinds of settlement events: every won grab, created sale and expired
// packet appends one, in the same atomic step as the change it records.
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
	// Epoch is the partition's epoch when the event was written: the
	// number a rebuild of the partition's Redis state wrote into its marker.
	// The settler refuses an event of an epoch a later rebuild has left
	// (its state was rebuilt from MySQL without it). 0 means unknown (a
	// marker written before epochs were numbered): not checked.
	Epoch int64

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
