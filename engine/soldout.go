package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// The process-local sold-out mark.
//
// Once a grab sees a sale with no stock left, later grabs of that sale are
// answered from memory, without a round trip to Redis. Three rules keep those
// answers the ones Redis would give:
//
//   - A retried grab by a winner must get its order back. So the mark answers
//     only after this instance has loaded the sale's buyers hash (every
//     "k:<user>:<key>" → "order_id|qty|amount", and every "u:<user>" → units
//     held); a repeat is answered from that copy, and a user over the limit
//     gets limit_reached just as from the script. A hash larger than
//     Config.SoldOutMaxBuyers is not loaded and the sale is always asked in
//     Redis.
//   - Stock comes back when an unpaid order expires (ReleaseOrder). The mark
//     therefore holds only for Config.SoldOutTTL after the grab that saw stock
//     0 was sent; the next grab after that goes to Redis and renews the mark
//     only if the stock is still 0. A grab that sees stock > 0 drops the mark
//     at once. So a grab is refused for at most the TTL while stock exists,
//     and a winner made meanwhile by another instance is unknown to this one
//     for at most as long.
//   - A renewal reuses the loaded buyers only if the partition's stream has
//     had no new entry since the load (every win appends one, in the same
//     script); otherwise it loads the buyers again.
//
// "No stock left" means remaining stock 0. A sale with 2 left refuses a grab
// of 3 but is not exhausted: a grab of 1 would win.

// Defaults of the sold-out mark's Config knobs.
const (
	DefaultSoldOutTTL       = time.Second
	DefaultSoldOutMaxBuyers = 1_000_000
	soldOutLoadTimeout      = 10 * time.Second
	soldOutScanCount        = 1000
)

// SoldOutStats counts the sold-out mark's work since the engine started.
type SoldOutStats struct {
	Answered int64 // grabs answered from memory
	Loads    int64 // buyers hashes loaded
	Renewals int64 // marks renewed without a load
	TooBig   int64 // loads refused: the buyers hash was over the bound
}

var errTooManyBuyers = errors.New("buyers hash over the sold-out mark's bound")

type soldOutMarks struct {
	rdb       redis.UniversalClient
	keys      Keyspace
	ttl       int64 // nanoseconds; < 0 disables the mark
	maxBuyers int64
	clock     func() time.Time
	bg        *background // runs the loads

	mu    sync.RWMutex
	marks map[string]*saleMark // only sales seen exhausted

	answered, loads, renewals, tooBig atomic.Int64
}

// saleMark is one sale's mark.
type saleMark struct {
	id string
	p  int
	// snap, when set and unexpired, answers grabs. It is never modified once
	// stored, so the hot path reads it without a lock.
	snap atomic.Pointer[soldOutSnap]
	// Errors of the answers, made once: the hot path allocates none.
	soldOutErr, limitErr error

	mu         sync.Mutex
	gen        uint64 // bumped when stock is seen: a load begun before is void
	positiveAt int64  // send time of the latest grab that saw stock
	loading    bool
	retryAt    int64        // no load before this (after a refused one)
	base       *soldOutSnap // the last load, reused by a renewal
}

// soldOutSnap is a loaded copy of a sale's buyers, valid until until.
type soldOutSnap struct {
	until     int64 // clock nanoseconds
	endMs     int64
	limit     int64
	lastEvent string               // the partition stream's last id before the load
	orders    map[string]heldOrder // "<user>:<key>" → its order
	held      map[string]int64     // user → units held
}

type heldOrder struct {
	id          string
	qty, amount int64
}

func newSoldOutMarks(cfg Config, bg *background) *soldOutMarks {
	m := &soldOutMarks{rdb: cfg.Redis, keys: cfg.Keys, ttl: int64(cfg.SoldOutTTL), bg: bg,
		maxBuyers: int64(cfg.SoldOutMaxBuyers), clock: cfg.Clock, marks: map[string]*saleMark{}}
	if m.ttl == 0 {
		m.ttl = int64(DefaultSoldOutTTL)
	}
	if m.maxBuyers <= 0 {
		m.maxBuyers = DefaultSoldOutMaxBuyers
	}
	if m.clock == nil {
		m.clock = time.Now
	}
	return m
}

func (m *soldOutMarks) stats() SoldOutStats {
	return SoldOutStats{Answered: m.answered.Load(), Loads: m.loads.Load(), Renewals: m.renewals.Load(),
		TooBig: m.tooBig.Load()}
}

// now is the mark's time in nanoseconds.
func (m *soldOutMarks) now() int64 { return m.clock().UnixNano() }

func (m *soldOutMarks) lookup(id string) *saleMark {
	m.mu.RLock()
	s := m.marks[id]
	m.mu.RUnlock()
	return s
}

// answer decides a valid grab from memory when the sale is marked sold out,
// the way the script would: a repeat gets its order, a user over the limit
// limit_reached, anyone else sold_out. ok is false when Redis must decide.
func (m *soldOutMarks) answer(r *flashgrab.GrabRequest) (res flashgrab.GrabResult, ok bool, err error) {
	if m.ttl < 0 {
		return res, false, nil
	}
	sm := m.lookup(r.SaleID)
	if sm == nil {
		return res, false, nil
	}
	s := sm.snap.Load()
	if s == nil {
		return res, false, nil
	}
	now := m.clock()
	// Past the end the script answers "ended": leave that to it.
	if now.UnixNano() >= s.until || now.UnixMilli() >= s.endMs {
		return res, false, nil
	}
	m.answered.Add(1)
	res.SaleID = r.SaleID
	var buf [160]byte
	k := append(append(append(buf[:0], r.UserID...), ':'), r.Key...)
	if o, won := s.orders[string(k)]; won {
		res.OrderID, res.Qty, res.AmountCents, res.Repeat = o.id, o.qty, o.amount, true
		return res, true, nil
	}
	switch {
	case r.Qty > s.limit:
		return res, true, errBadQty
	case s.held[r.UserID]+r.Qty > s.limit:
		return res, true, sm.limitErr
	}
	return res, true, sm.soldOutErr
}

// observe learns from a grab Redis decided, sent at sentAt: remaining 0
// marks the sale (once its buyers are loaded), remaining > 0 unmarks it.
func (m *soldOutMarks) observe(id string, p int, remaining int64, sentAt int64) {
	if m.ttl < 0 {
		return
	}
	if remaining > 0 {
		if sm := m.lookup(id); sm != nil {
			sm.mu.Lock()
			sm.gen++
			sm.positiveAt = max(sm.positiveAt, sentAt)
			sm.snap.Store(nil)
			sm.mu.Unlock()
		}
		return
	}
	sm := m.lookup(id)
	if sm == nil {
		m.mu.Lock()
		if sm = m.marks[id]; sm == nil {
			sm = &saleMark{id: id, p: p,
				soldOutErr: fmt.Errorf("sale %s: %w", id, flashgrab.ErrSoldOut),
				limitErr:   fmt.Errorf("sale %s: %w", id, flashgrab.ErrLimitReached)}
			m.marks[id] = sm
		}
		m.mu.Unlock()
	}
	if s := sm.snap.Load(); s != nil && s.until >= sentAt+m.ttl {
		return
	}
	sm.mu.Lock()
	// A grab sent before one that saw stock says nothing about now.
	if sm.loading || sentAt < sm.positiveAt || sentAt < sm.retryAt {
		sm.mu.Unlock()
		return
	}
	sm.loading = true
	gen, base := sm.gen, sm.base
	sm.mu.Unlock()
	if !m.bg.start(func(ctx context.Context) { m.refresh(ctx, sm, gen, base, sentAt) }) {
		sm.mu.Lock()
		sm.loading = false // closed: no mark, grabs go to Redis
		sm.mu.Unlock()
	}
}

// refresh loads (or, when nothing changed, reuses) the sale's buyers and
// publishes the mark, valid for the TTL from sentAt, unless stock was seen
// meanwhile.
func (m *soldOutMarks) refresh(ctx context.Context, sm *saleMark, gen uint64, base *soldOutSnap, sentAt int64) {
	ctx, cancel := context.WithTimeout(ctx, soldOutLoadTimeout)
	defer cancel()
	s, err := m.load(ctx, sm, base)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.loading = false
	switch {
	case errors.Is(err, errTooManyBuyers):
		m.tooBig.Add(1)
		sm.retryAt = sentAt + m.ttl
	case err != nil:
		// Redis trouble: grabs keep going to Redis, which reports it.
	case sm.gen == gen:
		s.until = sentAt + m.ttl
		sm.base = s
		sm.snap.Store(s)
	}
}

// load reads the sale's buyers hash into a new snapshot, or copies base when
// the partition's stream has had no entry since base was loaded.
func (m *soldOutMarks) load(ctx context.Context, sm *saleMark, base *soldOutSnap) (*soldOutSnap, error) {
	last, err := lastStreamID(ctx, m.rdb, m.keys.Events(sm.p))
	if err != nil {
		return nil, err
	}
	if base != nil && last != "" && base.lastEvent == last {
		m.renewals.Add(1)
		s := *base
		return &s, nil
	}
	saleKey, buyersKey := m.keys.Sale(sm.p, sm.id), m.keys.Buyers(sm.p, sm.id)
	terms, err := m.rdb.HMGet(ctx, saleKey, "limit", "end").Result()
	if err != nil {
		return nil, err
	}
	limit, err1 := strconv.ParseInt(str(terms[0]), 10, 64)
	end, err2 := strconv.ParseInt(str(terms[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("sale %s: terms %v unreadable", sm.id, terms)
	}
	n, err := m.rdb.HLen(ctx, buyersKey).Result()
	if err != nil {
		return nil, err
	}
	if n > m.maxBuyers {
		return nil, errTooManyBuyers
	}
	s := &soldOutSnap{endMs: end, limit: limit, lastEvent: last,
		orders: make(map[string]heldOrder, n/2), held: make(map[string]int64, n/2)}
	var cursor uint64
	for {
		kv, next, err := m.rdb.HScan(ctx, buyersKey, cursor, "", soldOutScanCount).Result()
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if err := s.add(kv[i], kv[i+1]); err != nil {
				return nil, fmt.Errorf("sale %s: buyers field %q: %w", sm.id, kv[i], err)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	m.loads.Add(1)
	return s, nil
}

// add records one field of the buyers hash: "k:<user>:<key>" →
// "order_id|qty|amount", or "u:<user>" → units held.
func (s *soldOutSnap) add(field, value string) error {
	switch {
	case strings.HasPrefix(field, "k:"):
		oid, rest, ok1 := strings.Cut(value, "|")
		qty, amount, ok2 := strings.Cut(rest, "|")
		q, err1 := strconv.ParseInt(qty, 10, 64)
		a, err2 := strconv.ParseInt(amount, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return fmt.Errorf("value %q is not order_id|qty|amount", value)
		}
		s.orders[field[2:]] = heldOrder{id: oid, qty: q, amount: a}
	case strings.HasPrefix(field, "u:"):
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return fmt.Errorf("value %q is not a count", value)
		}
		s.held[field[2:]] = n
	}
	return nil
}

// lastStreamID returns the last id the stream ever generated ("" when the
// stream does not exist). Unlike its last entry, it survives trimming.
func lastStreamID(ctx context.Context, rdb redis.UniversalClient, key string) (string, error) {
	info, err := rdb.XInfoStream(ctx, key).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return "", nil
		}
		return "", err
	}
	return info.LastGeneratedID, nil
}

func str(v any) string { s, _ := v.(string); return s }
