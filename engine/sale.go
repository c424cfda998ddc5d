package engine

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Limits on a sale's terms. They keep every amount (price × qty) exact in
// Lua's doubles, which hold integers exactly only up to 2^53.
const (
	MaxPriceCents   = 1_000_000_000 // 10 million yuan
	MaxStock        = 1_000_000_000_000
	MaxPerUserLimit = 1_000_000
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether s is an acceptable id for a sale, user, account or
// idempotency key: 1 to 64 of [A-Za-z0-9_-].
func ValidID(s string) bool { return idPattern.MatchString(s) }

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
}

// Validate checks a new sale's terms.
func (s *Sale) Validate() error {
	switch {
	case !ValidID(s.ID):
		return Invalid("id", "must be 1-64 of [A-Za-z0-9_-]")
	case !ValidID(s.MerchantID):
		return Invalid("merchant_id", "must be 1-64 of [A-Za-z0-9_-]")
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
	}
	return nil
}

// CreateSale makes a sale grabbable. It fails with ErrExists when the id is taken.
func (e *Engine) CreateSale(ctx context.Context, s Sale) (Sale, error) {
	if err := s.Validate(); err != nil {
		return Sale{}, err
	}
	s.Sold = 0
	p := e.keys.Partition(s.ID)
	created, err := e.saleCreate.Run(ctx, e.rdb, []string{e.keys.Sale(p, s.ID), e.keys.Events(p)},
		s.ID, s.MerchantID, s.PriceCents, s.Stock, s.PerUserLimit,
		s.StartsAt.UnixMilli(), s.EndsAt.UnixMilli()).Int()
	if err != nil {
		return Sale{}, fmt.Errorf("create sale %s: %w", s.ID, wrapRedis(err))
	}
	if created == 0 {
		return Sale{}, fmt.Errorf("create sale %s: %w", s.ID, ErrExists)
	}
	s.StartsAt, s.EndsAt = s.StartsAt.Truncate(time.Millisecond), s.EndsAt.Truncate(time.Millisecond)
	return s, nil
}

// Sale returns the sale with its remaining stock and sold count.
func (e *Engine) Sale(ctx context.Context, id string) (Sale, error) {
	if !ValidID(id) {
		return Sale{}, fmt.Errorf("sale %q: %w", id, ErrNotFound)
	}
	p := e.keys.Partition(id)
	v, err := e.rdb.HMGet(ctx, e.keys.Sale(p, id), "mch", "price", "stock", "sold", "limit", "start", "end").Result()
	if err != nil {
		return Sale{}, fmt.Errorf("get sale %s: %w", id, wrapRedis(err))
	}
	if v[0] == nil {
		return Sale{}, fmt.Errorf("sale %s: %w", id, ErrNotFound)
	}
	n := func(i int) int64 { s, _ := v[i].(string); x, _ := strconv.ParseInt(s, 10, 64); return x }
	return Sale{
		ID: id, MerchantID: v[0].(string), PriceCents: n(1), Stock: n(2), Sold: n(3), PerUserLimit: n(4),
		StartsAt: time.UnixMilli(n(5)).UTC(), EndsAt: time.UnixMilli(n(6)).UTC(),
	}, nil
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

// Order is a won grab.
type Order struct {
	ID          string
	SaleID      string
	UserID      string
	MerchantID  string
	Qty         int64
	AmountCents int64
	CreatedAt   time.Time
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

func (r *GrabRequest) validate() error {
	switch {
	case !ValidID(r.UserID):
		return Invalid("user", "must be 1-64 of [A-Za-z0-9_-]")
	case r.Key != "" && !ValidID(r.Key):
		return Invalid("Idempotency-Key", "must be 1-64 of [A-Za-z0-9_-]")
	case r.Qty < 1 || r.Qty > MaxPerUserLimit:
		return Invalid("qty", "must be at least 1 and at most the sale's per-user limit")
	}
	return nil
}

// Grab decides one user's grab of a sale: the order, or ErrSoldOut,
// ErrLimitReached, ErrNotStarted, ErrEnded, ErrNotFound.
func (e *Engine) Grab(ctx context.Context, r GrabRequest) (GrabResult, error) {
	if err := r.validate(); err != nil {
		return GrabResult{}, err
	}
	if !ValidID(r.SaleID) {
		return GrabResult{}, fmt.Errorf("sale %q: %w", r.SaleID, ErrNotFound)
	}
	p := e.keys.Partition(r.SaleID)
	oid := orderID(e.ids.Next(), p)
	keys := []string{e.keys.Sale(p, r.SaleID), e.keys.Buyers(p, r.SaleID), e.keys.Events(p), e.keys.Order(p, oid)}
	v, err := e.saleGrab.Run(ctx, e.rdb, keys, r.SaleID, r.UserID, r.Key, r.Qty, oid).Slice()
	if err != nil {
		return GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, wrapRedis(err))
	}
	return grabOutcome(r.SaleID, v)
}

// grabOutcome reads one user's five values of the sale grab script's reply.
func grabOutcome(saleID string, v []any) (GrabResult, error) {
	if len(v) < 5 {
		return GrabResult{}, fmt.Errorf("grab sale %s: script replied %d values, want 5", saleID, len(v))
	}
	outcome, _ := v[0].(string)
	oid, _ := v[1].(string)
	qty, _ := v[2].(int64)
	amount, _ := v[3].(int64)
	remaining, _ := v[4].(int64)
	res := GrabResult{OrderID: oid, SaleID: saleID, Qty: qty, AmountCents: amount, Remaining: remaining}
	switch outcome {
	case "ok":
		return res, nil
	case "repeat":
		res.Repeat = true
		return res, nil
	case "sold_out":
		return res, fmt.Errorf("sale %s: %w", saleID, ErrSoldOut)
	case "limit_reached":
		return res, fmt.Errorf("sale %s: %w", saleID, ErrLimitReached)
	case "not_started":
		return res, fmt.Errorf("sale %s: %w", saleID, ErrNotStarted)
	case "ended":
		return res, fmt.Errorf("sale %s: %w", saleID, ErrEnded)
	case "bad_qty":
		return res, Invalid("qty", "must be at least 1 and at most the sale's per-user limit")
	case "not_found":
		return res, fmt.Errorf("sale %s: %w", saleID, ErrNotFound)
	}
	return res, fmt.Errorf("grab sale %s: unknown script outcome %q", saleID, outcome)
}
