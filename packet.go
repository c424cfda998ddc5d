package flashgrab

import (
	"fmt"
	"time"
)

// Packet modes.
const (
	ModeRandom = "random" // 拼手气: shares split at random
	ModeFixed  = "fixed"  // every share equal
)

// Limits on red packets (DESIGN.md); the API rejects anything outside them.
const (
	MaxPacketCount   = 1000
	MaxPacketCents   = 2_000_000
	DefaultPacketTTL = 24 * time.Hour
	MaxPacketTTL     = 7 * 24 * time.Hour
	MinPacketTTL     = time.Second
)

// Packet is a red packet: TotalCents split into Count shares.
type Packet struct {
	ID             string
	SenderID       string
	TotalCents     int64
	Count          int64
	Mode           string
	CreatedAt      time.Time
	ExpiresAt      time.Time
	RemainingCents int64
	RemainingCount int64
	Expired        bool  // closed by expiry; RefundCents went back to the sender
	RefundCents    int64 // set once expired
	Grabs          []PacketShare
}

// Validate checks a new packet's terms: sender, count, total, mode, and its
// lifetime (ExpiresAt - CreatedAt, by PacketTTL's rule). The id is not
// checked: it is given after the terms pass.
func (p *Packet) Validate() error {
	switch {
	case !ValidID(p.SenderID):
		return InvalidID("sender")
	case p.Count < 1 || p.Count > MaxPacketCount:
		return Invalid("count", fmt.Sprintf("must be in [1, %d]", MaxPacketCount))
	case p.TotalCents < p.Count || p.TotalCents > MaxPacketCents:
		return Invalid("total_cents", fmt.Sprintf("must be in [count, %d]: every share is at least 1 fen", MaxPacketCents))
	case p.Mode != ModeRandom && p.Mode != ModeFixed:
		return Invalid("mode", `must be "random" or "fixed"`)
	case p.Mode == ModeFixed && p.TotalCents%p.Count != 0:
		return Invalid("total_cents", "a fixed packet's total must divide evenly by count")
	}
	return checkPacketTTL(p.ExpiresAt.Sub(p.CreatedAt))
}

// PacketTTL is a packet's lifetime asked for in whole seconds (the API's
// expires_in_s), checked by the same rule as Packet.Validate's lifetime.
func PacketTTL(seconds int64) (time.Duration, error) {
	// Clamped first: a huge count of seconds would overflow into range.
	ttl := time.Duration(min(max(seconds, 0), int64(MaxPacketTTL/time.Second)+1)) * time.Second
	return ttl, checkPacketTTL(ttl)
}

// checkPacketTTL is the one rule for a packet's lifetime.
func checkPacketTTL(ttl time.Duration) error {
	if ttl < MinPacketTTL || ttl > MaxPacketTTL {
		return Invalid("expires_in_s", fmt.Sprintf("must be in [%d, %d]", int(MinPacketTTL.Seconds()), int(MaxPacketTTL.Seconds())))
	}
	return nil
}

// PacketShare is one user's share of a packet.
type PacketShare struct {
	UserID      string
	AmountCents int64
	Seq         int64
	At          time.Time
}

// PacketGrabResult is a user's share of a packet and what is left after it.
type PacketGrabResult struct {
	PacketID       string
	AmountCents    int64
	RemainingCount int64
	RemainingCents int64
	Repeat         bool
}
