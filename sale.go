package flashgrab

import (
	"fmt"
	"time"
)

// Limits on a sale's terms. They keep every amount (price × qty) exact in
// Lua's doubles, which hold integers exactly only up to 2^53.
const (
	MaxPriceCents   = 1_000_000_000 // 10 million yuan
	MaxStock        = 1_000_000_000_000
	MaxPerUserLimit = 1_000_000
	// MaxShards bounds the partitions one sale's stock is spread over: a
	// grab that finds its shard dry may read every shard, so K stays small.
	MaxShards = 64
)

// Sale is a flash sale: Stock units at PriceCents each, at most PerUserLimit
// per user, grabbable in [StartsAt, EndsAt).
type Sale struct {
	ID           string
	MerchantID   string
	PriceCents   int64
	Stock        int64 // remaining
	Sold         int64
	PerUserLimit int64
	StartsAt     time.Time
	EndsAt       time.Time
	// Shards is how many partitions the stock is spread over (0 reads as
	// 1): each grab is decided by one shard, so a hot sale can use K Redis
	// nodes. ShardPartitions are the partitions the engine chose for them
	// at create, shard 0 first (nil for an unsharded sale).
	Shards          int
	ShardPartitions []int
}

// ShardCount is the sale's number of shards, at least 1.
func (s *Sale) ShardCount() int { return max(s.Shards, 1) }

// Validate checks a new sale's terms.
func (s *Sale) Validate() error {
	switch {
	case !ValidID(s.ID):
		return InvalidID("id")
	case !ValidID(s.MerchantID):
		return InvalidID("merchant_id")
	case s.PriceCents < 1 || s.PriceCents > MaxPriceCents:
		return Invalid("price_cents", fmt.Sprintf("must be in [1, %d]", MaxPriceCents))
	case s.Stock < 1 || s.Stock > MaxStock:
		return Invalid("stock", fmt.Sprintf("must be in [1, %d]", int64(MaxStock)))
	case s.PerUserLimit < 1 || s.PerUserLimit > MaxPerUserLimit:
		return Invalid("per_user_limit", fmt.Sprintf("must be in [1, %d]", MaxPerUserLimit))
	case s.StartsAt.IsZero():
		return Invalid("starts_at", "required")
	case s.EndsAt.IsZero():
		return Invalid("ends_at", "required")
	case !s.EndsAt.After(s.StartsAt):
		return Invalid("ends_at", "must be after starts_at")
	case s.Shards < 0 || s.Shards > MaxShards:
		return Invalid("shards", fmt.Sprintf("must be in [1, %d]", MaxShards))
	}
	return nil
}

// GrabRequest asks for Qty units of a sale for a user. Key identifies the
// attempt: a retry with the same key returns the same order; the empty key is
// the user's default attempt.
type GrabRequest struct {
	SaleID string
	UserID string
	Key    string
	Qty    int64
}

// Validate checks a grab's user, key and quantity. The sale id is not
// checked here: a malformed one names no sale, which is ErrNotFound, not
// bad input.
func (r *GrabRequest) Validate() error {
	switch {
	case !ValidID(r.UserID):
		return InvalidID("user")
	case r.Key != "" && !ValidID(r.Key):
		return InvalidID("Idempotency-Key")
	case r.Qty < 1 || r.Qty > MaxPerUserLimit:
		return Invalid("qty", "must be at least 1 and at most the sale's per-user limit")
	}
	return nil
}

// GrabResult is the answer to a grab: the order, whether it was won before
// (Repeat), and the sale's remaining stock at the moment of decision.
type GrabResult struct {
	OrderID     string
	SaleID      string
	Qty         int64
	AmountCents int64
	Remaining   int64
	Repeat      bool
}
