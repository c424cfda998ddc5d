package engine

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgrab/flashgrab"
)

// CreateSale makes a sale grabbable. It is idempotent for identical terms: a
// create sent again (a retry after a lost reply) returns the sale as the
// first call did, and records no second creation. It fails with ErrExists
// when the id is taken by other terms.
func (e *Engine) CreateSale(ctx context.Context, s flashgrab.Sale) (flashgrab.Sale, error) {
	if err := s.Validate(); err != nil {
		return flashgrab.Sale{}, err
	}
	s.Sold = 0
	defer e.created(s.ID)
	if s.Shards > 1 {
		return e.createSharded(ctx, s)
	}
	p := e.keys.Partition(s.ID)
	if err := e.noTouchedShards(ctx, s.ID, p); err != nil {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, err)
	}
	cmd, durErr := e.runDurable(ctx, e.saleCreate, []string{e.keys.Sale(p, s.ID), e.keys.Events(p), e.keys.Epoch(p)},
		s.ID, s.MerchantID, s.PriceCents, s.Stock, s.PerUserLimit,
		s.StartsAt.UnixMilli(), s.EndsAt.UnixMilli())
	created, err := cmd.Int()
	if err != nil {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, e.noteFenced(p, wrapRedis(err)))
	}
	if durErr != nil {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, durErr)
	}
	if created == 0 {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: other terms under this id: %w", s.ID, flashgrab.ErrExists)
	}
	s.StartsAt, s.EndsAt = s.StartsAt.Truncate(time.Millisecond), s.EndsAt.Truncate(time.Millisecond)
	return s, nil
}

// created ends the absent hold of a sale created through this engine, so
// that it is grabbable here at once.
func (e *Engine) created(id string) {
	if h := e.heads.peek(id); h != nil {
		h.creates.Add(1)
		h.absentUntil.Store(0)
	}
}

// Sale returns the sale with its remaining stock and sold count.
func (e *Engine) Sale(ctx context.Context, id string) (flashgrab.Sale, error) {
	if !flashgrab.ValidID(id) {
		return flashgrab.Sale{}, fmt.Errorf("sale %q: %w", id, flashgrab.ErrNotFound)
	}
	p := e.keys.Partition(id)
	v, err := e.rdb.HMGet(ctx, e.keys.Sale(p, id), "mch", "price", "stock", "sold", "limit", "start", "end", "parts").Result()
	if err != nil {
		return flashgrab.Sale{}, fmt.Errorf("get sale %s: %w", id, wrapRedis(err))
	}
	if v[0] == nil {
		return flashgrab.Sale{}, fmt.Errorf("sale %s: %w", id, flashgrab.ErrNotFound)
	}
	d := recordDecoder{key: e.keys.Sale(p, id)}
	fields := []string{"mch", "price", "stock", "sold", "limit", "start", "end"}
	n := func(i int) int64 { s, _ := v[i].(string); return d.int(fields[i], s) }
	s := flashgrab.Sale{
		ID: id, MerchantID: v[0].(string), PriceCents: n(1), Stock: n(2), Sold: n(3), PerUserLimit: n(4),
		StartsAt: time.UnixMilli(n(5)).UTC(), EndsAt: time.UnixMilli(n(6)).UTC(),
	}
	if d.err != nil {
		return flashgrab.Sale{}, fmt.Errorf("sale %s: %w", id, d.err)
	}
	if layout, ok := v[7].(string); ok {
		parts, err := ParseParts(layout)
		if err != nil {
			return flashgrab.Sale{}, fmt.Errorf("sale %s: %w", id, err)
		}
		return e.shardedSale(ctx, s, parts)
	}
	return s, nil
}

// Grab decides one user's grab of a sale: the order, or ErrSoldOut,
// ErrLimitReached, ErrNotStarted, ErrEnded, ErrNotFound.
//
// Concurrent grabs of one sale are decided together by one script call
// (unless Config.NoCoalesce), and a sale seen sold out is answered from
// memory for a while (see soldout.go); either way each user gets exactly the
// answer a call of its own would have given.
func (e *Engine) Grab(ctx context.Context, r flashgrab.GrabRequest) (flashgrab.GrabResult, error) {
	if res, ok, err := e.GrabLocal(r); ok {
		return res, err
	}
	h := e.saleHead(r.SaleID)
	l, err := e.saleLayout(ctx, h, r.SaleID)
	if err != nil {
		return flashgrab.GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, err)
	}
	if l != unsharded {
		return e.grabSharded(ctx, l, r)
	}
	sentAt := e.soldOut.now()
	id, err := e.ids.Next()
	if err != nil {
		return flashgrab.GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, err)
	}
	bucket, oid := h.order(id)
	v, err := e.batch.do(ctx, &h.call, []string{bucket}, r.UserID, r.Key, r.Qty, oid)
	if err != nil {
		return flashgrab.GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, e.noteFenced(h.p, err))
	}
	res, err := h.outcome(r.SaleID, oid, v)
	if res.decided {
		e.soldOut.observe(r.SaleID, h.p, res.Remaining, sentAt)
	}
	return res.GrabResult, err
}

// GrabLocal answers a grab without Redis when it can: a malformed request, or
// a sale this instance knows to be sold out. ok false means only Grab can
// answer. It lets a caller skip setting up a request context on the fast path.
func (e *Engine) GrabLocal(r flashgrab.GrabRequest) (res flashgrab.GrabResult, ok bool, err error) {
	if err := r.Validate(); err != nil {
		return flashgrab.GrabResult{}, true, err
	}
	if !flashgrab.ValidID(r.SaleID) {
		return flashgrab.GrabResult{}, true, fmt.Errorf("sale %q: %w", r.SaleID, flashgrab.ErrNotFound)
	}
	return e.soldOut.answer(&r)
}

// BatchStats reports how grabs were coalesced into script calls.
func (e *Engine) BatchStats() BatchStats { return e.batch.stats() }

// SoldOutStats reports the sold-out mark's work.
func (e *Engine) SoldOutStats() SoldOutStats { return e.soldOut.stats() }

// saleHead is what every grab of one sale (or of one shard of a sharded
// sale) sends alike: its partition, key tag, the script's head keys (sale,
// buyers, events, epoch) and args (sale id, order retention in ms). A sale's
// own head (Engine.saleHead) also keeps what this engine knows of the sale
// (saleLayout); a shard's head (shardLayout) leaves those fields unused.
type saleHead struct {
	p    int
	tag  string
	keys [4]string
	args [2]any
	call batchCall // the script call's head, for the batcher
	// bucket is the orders bucket (Keyspace.Orders) the last order went
	// to: ids are time-ordered, so nearly every grab reuses its key.
	bucket atomic.Pointer[ordersBucketKey]

	// layout is nil until read, then unsharded or the sale's shards;
	// reading is held by the grab that reads it (saleLayout).
	layout  atomic.Pointer[shardLayout]
	reading sync.Mutex
	// absentUntil, in the sold-out mark's clock nanoseconds: the sale was
	// found not to exist, and grabs until then answer ErrNotFound without
	// Redis. creates counts the creates through this engine, so that a
	// read that found the sale absent before one of them holds nothing.
	absentUntil atomic.Int64
	creates     atomic.Uint64
}

// absentHold is how long a sale found not to exist is answered not found
// from memory: a sale created through another instance becomes grabbable
// here within it (through this one, at once).
const absentHold = 100 * time.Millisecond

// ordersBucketKey is an orders bucket and its key.
type ordersBucketKey struct {
	n   int64
	key string
}

// newSaleHead builds the head of sale id's grabs in partition p.
func (e *Engine) newSaleHead(p int, id string) *saleHead {
	h := &saleHead{p: p, tag: e.keys.tag(p), keys: [4]string{e.keys.Sale(p, id), e.keys.Buyers(p, id), e.keys.Events(p), e.keys.Epoch(p)},
		args: [2]any{id, e.retention.Milliseconds()}}
	h.call = batchCall{Target: h.keys[0], Script: e.saleGrab, Keys: h.keys[:], Args: h.args[:], Width: 5}
	return h
}

// order returns a new order's id, "<id>-<partition>", and the key of the
// orders bucket its record goes to: the same strings as orderID's
// Keyspace.Orders, one allocation when the bucket is the last one's.
func (h *saleHead) order(id int64) (bucket, oid string) {
	var arr [32]byte
	b := strconv.AppendInt(arr[:0], id, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(h.p), 10)
	oid = string(b)
	n := ordersBucket(id)
	if c := h.bucket.Load(); c != nil && c.n == n {
		return c.key, oid
	}
	c := &ordersBucketKey{n: n, key: ordersIn(h.tag, n)}
	h.bucket.Store(c)
	return c.key, oid
}

func (e *Engine) saleHead(id string) *saleHead {
	return e.heads.get(id, func() *saleHead { return e.newSaleHead(e.keys.Partition(id), id) })
}

// errBadQty is the script's bad_qty outcome, made once.
var errBadQty = flashgrab.Invalid("qty", "must be at least 1 and at most the sale's per-user limit")

// grabReply is one user's decoded reply; decided reports that the sale
// exists and is open, so Remaining is its stock.
type grabReply struct {
	flashgrab.GrabResult
	decided bool
}

// The sale grab script's outcomes (sale_grab.lua), the first of each
// user's five reply values.
const (
	saleOK = iota
	saleRepeat
	saleSoldOut
	saleLimitReached
	saleBadQty
	saleNotStarted
	saleEnded
	saleNotFound
)

// outcome reads one user's five values of the sale grab script's reply
// (outcome, qty, amount, remaining stock, a repeat's order id number); oid
// is the id the grab sent, the order's id when it won.
func (h *saleHead) outcome(saleID, oid string, v []int64) (grabReply, error) {
	if len(v) < 5 {
		return grabReply{}, fmt.Errorf("grab sale %s: script replied %d values, want 5", saleID, len(v))
	}
	res := grabReply{flashgrab.GrabResult{SaleID: saleID, Qty: v[1], AmountCents: v[2], Remaining: v[3]}, true}
	switch v[0] {
	case saleOK:
		res.OrderID = oid
		return res, nil
	case saleRepeat:
		// The first attempt's order, of this sale's partition.
		res.OrderID = strconv.FormatInt(v[4], 10) + "-" + strconv.Itoa(h.p)
		res.Repeat = true
		return res, nil
	case saleSoldOut:
		return res, fmt.Errorf("sale %s: %w", saleID, flashgrab.ErrSoldOut)
	case saleLimitReached:
		return res, fmt.Errorf("sale %s: %w", saleID, flashgrab.ErrLimitReached)
	case saleBadQty:
		return res, errBadQty
	}
	res.decided = false
	switch v[0] {
	case saleNotStarted:
		return res, fmt.Errorf("sale %s: %w", saleID, flashgrab.ErrNotStarted)
	case saleEnded:
		return res, fmt.Errorf("sale %s: %w", saleID, flashgrab.ErrEnded)
	case saleNotFound:
		return res, fmt.Errorf("sale %s: %w", saleID, flashgrab.ErrNotFound)
	}
	return res, fmt.Errorf("grab sale %s: unknown script outcome %d", saleID, v[0])
}
