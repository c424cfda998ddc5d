package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// Detecting and rebuilding lost Redis state.
//
// Every partition has an epoch marker (Keyspace.Epoch), written when the
// partition's state is initialised or rebuilt. Redis coming back empty
// (restarted without persistence, flushed, a cluster master replaced by an
// empty one) loses the marker with the state, and every grab and create
// script checks it first: without it they decide nothing and fail with
// REBUILDING (ErrRebuilding, 503), so a sale whose stock and buyers are gone
// can never be sold again from scratch. The rebuild (settle.Rebuilder) reads
// MySQL, hands the partition's state to Restore and writes the marker last.
//
// The marker holds the partition's epoch, a number MySQL keeps and every
// rebuild raises before it reads; the scripts copy it into each stream entry
// ("ep"), so the settler can refuse a batch read from the stream of an epoch
// a rebuild has left: its events are not in the state the rebuild restored,
// and settling them after would count them twice.

// fencedPrefix starts the error the scripts' fence replies with.
const fencedPrefix = "REBUILDING"

// fences tracks the partitions last seen without their marker, for /readyz,
// and wakes the rebuilder when a script answered fenced.
type fences struct {
	mu      sync.Mutex
	missing map[int]bool
	seen    chan struct{} // buffered 1: a wake-up, never blocks
}

func newFences() *fences { return &fences{missing: map[int]bool{}, seen: make(chan struct{}, 1)} }

func (f *fences) set(p int, missing bool) {
	f.mu.Lock()
	if missing {
		f.missing[p] = true
	} else {
		delete(f.missing, p)
	}
	f.mu.Unlock()
}

// noteFenced records that a call on partition p was fenced, when err says
// so, and returns err.
func (e *Engine) noteFenced(p int, err error) error {
	if err != nil && isFenced(err) {
		e.fences.set(p, true)
		select {
		case e.fences.seen <- struct{}{}:
		default:
		}
	}
	return err
}

func isFenced(err error) bool {
	return err != nil && errors.Is(err, flashgrab.ErrRebuilding)
}

// Rebuilding returns, in order, the partitions this engine last saw without
// their epoch marker (by MissingEpochs or a fenced answer): their state was
// lost and they wait for a rebuild.
func (e *Engine) Rebuilding() []int {
	e.fences.mu.Lock()
	defer e.fences.mu.Unlock()
	out := make([]int, 0, len(e.fences.missing))
	for p := range e.fences.missing {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// FenceSeen is signalled when a call was refused because its partition has
// no epoch marker, so that a rebuilder can look at once rather than at its
// next period.
func (e *Engine) FenceSeen() <-chan struct{} { return e.fences.seen }

// MissingEpochs returns the partitions without an epoch marker, one
// pipelined EXISTS each.
func (e *Engine) MissingEpochs(ctx context.Context) ([]int, error) {
	cmds := make([]*redis.IntCmd, e.keys.Partitions)
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range cmds {
			cmds[p] = pipe.Exists(ctx, e.keys.Epoch(p))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check epoch markers: %w", wrapRedis(err))
	}
	var missing []int
	for p, c := range cmds {
		gone := c.Val() == 0
		e.fences.set(p, gone)
		if gone {
			missing = append(missing, p)
		}
	}
	return missing, nil
}

// HasEpoch reports whether partition p has its epoch marker.
func (e *Engine) HasEpoch(ctx context.Context, p int) (bool, error) {
	n, err := e.rdb.Exists(ctx, e.keys.Epoch(p)).Result()
	if err != nil {
		return false, fmt.Errorf("check epoch marker of partition %d: %w", p, wrapRedis(err))
	}
	e.fences.set(p, n == 0)
	return n == 1, nil
}

// MarkEpoch writes partition p's epoch marker, holding epoch, lifting its
// fence: call it once the partition's state is complete (a fresh partition,
// or a rebuild done), with the epoch MySQL gave that state (the settler
// checks every entry's against it; see settle's partition_epochs).
func (e *Engine) MarkEpoch(ctx context.Context, p int, epoch int64) error {
	if err := e.rdb.Set(ctx, e.keys.Epoch(p), strconv.FormatInt(epoch, 10), 0).Err(); err != nil {
		return fmt.Errorf("write epoch marker of partition %d: %w", p, wrapRedis(err))
	}
	e.fences.set(p, false)
	return nil
}

// initEpochs writes every missing marker (Config.DetectLoss off), with
// epoch 0: unknown, so the settler does not check the entries against
// MySQL's epochs (without loss detection nobody rebuilds).
func (e *Engine) initEpochs(ctx context.Context) error {
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range e.keys.Partitions {
			pipe.SetNX(ctx, e.keys.Epoch(p), "0", 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: write epoch markers: %w", wrapRedis(err))
	}
	return nil
}

// PartitionEvents returns the events still in partition p's stream, settled
// or not, in order: a rebuild settles them before it reads MySQL, so that a
// win Redis kept in its stream is counted once. Entries that cannot be read
// as events are left to the settler (which dead-letters them).
func (e *Engine) PartitionEvents(ctx context.Context, p int) ([]flashgrab.Event, error) {
	var out []flashgrab.Event
	err := e.streamEntries(ctx, p, func(m redis.XMessage) {
		if evs, err := ParseEntry(p, m); err == nil {
			out = append(out, evs...)
		}
	})
	return out, err
}

// streamEntries hands every entry still in partition p's stream to visit,
// in order, a page at a time.
func (e *Engine) streamEntries(ctx context.Context, p int, visit func(redis.XMessage)) error {
	from := "-"
	for {
		msgs, err := e.rdb.XRangeN(ctx, e.keys.Events(p), from, "+", 1000).Result()
		if err != nil {
			return fmt.Errorf("read stream of partition %d: %w", p, wrapRedis(err))
		}
		for _, m := range msgs {
			visit(m)
		}
		if len(msgs) < 1000 {
			return nil
		}
		from = "(" + msgs[len(msgs)-1].ID
	}
}

// PartitionState is what a rebuild restores of one partition, read from
// MySQL. It says nothing of Redis's formats: Restore lays it out.
type PartitionState struct {
	// Sales with Stock the units left (initial − held) and Sold the units
	// held; the initial stock is Stock + Sold.
	Sales []flashgrab.Sale
	// Orders are the orders that hold units of those sales (pending, paid,
	// or cancelled with their stock not yet returned): each buyer's holding,
	// the idempotency records of those whose Key is known, and the order
	// records paying and expiry read.
	Orders []flashgrab.Order
	// Packets are the live red packets, with what is left and Grabs.
	Packets []flashgrab.Packet
	// Shards are the shards of sharded sales this partition holds, with
	// the stock the rebuild gave each (SaleShard); their orders are in
	// Orders too.
	Shards []SaleShard
}

// SaleIDs are the ids of the sales and shards of sales st holds.
func (st PartitionState) SaleIDs() []string {
	ids := make([]string, 0, len(st.Sales)+len(st.Shards))
	for _, s := range st.Sales {
		ids = append(ids, s.ID)
	}
	for _, sh := range st.Shards {
		ids = append(ids, sh.Sale.ID)
	}
	return ids
}

// SaleShard is one shard of a sharded sale as a rebuild restores it.
type SaleShard struct {
	// Sale has the sale's terms, its total initial Stock and its layout
	// (Shards, ShardPartitions).
	Sale  flashgrab.Sale
	Index int // the shard's place in Sale.ShardPartitions
	// Stock is the units the shard gets (RestoreShardStock), Sold the units
	// its own orders hold.
	Stock, Sold int64
}

// Restored counts what Restore wrote: keys that survived are kept.
type Restored struct {
	Sales, Buyers, Orders, Packets int
}

// restoreChunk is how many field/value pairs of a buyers hash one command
// of a rebuild writes: enough to make few round trips, few enough that no
// command holds Redis for long.
const restoreChunk = 1000

// noKey stands in, in a restored order record, for an idempotency key MySQL
// does not know (an order settled before keys were recorded): no real key
// has '?', so releasing the order never deletes another attempt's record.
const noKey = "?"

// Restore writes partition p's state as MySQL has it, key by key where the
// key is absent, and leaves the epoch marker to the caller (MarkEpoch), so
// that the partition stays fenced until all of it is back.
func (e *Engine) Restore(ctx context.Context, p int, st PartitionState) (Restored, error) {
	var out Restored
	bySale := map[string][]flashgrab.Order{}
	for _, o := range st.Orders {
		bySale[o.SaleID] = append(bySale[o.SaleID], o)
	}
	type restore struct {
		s     flashgrab.Sale
		init  int64 // initial stock
		extra []any // more fields of the sale hash
	}
	todo := make([]restore, 0, len(st.Sales)+len(st.Shards))
	for _, s := range st.Sales {
		todo = append(todo, restore{s: s, init: s.Stock + s.Sold})
	}
	for _, sh := range st.Shards {
		s := sh.Sale
		k := len(s.ShardPartitions)
		init := ShardStock(s.Stock, k, sh.Index)
		// The shard's own counters must add up as a created shard's do
		// (stock + sold = init + tin - tout): the difference from its
		// created share is booked as moved in or out.
		var tin, tout int64
		if x := sh.Stock + sh.Sold - init; x > 0 {
			tin = x
		} else {
			tout = -x
		}
		todo = append(todo, restore{
			s: flashgrab.Sale{ID: s.ID, MerchantID: s.MerchantID, PriceCents: s.PriceCents, Stock: sh.Stock, Sold: sh.Sold,
				PerUserLimit: s.PerUserLimit, StartsAt: s.StartsAt, EndsAt: s.EndsAt},
			init:  init,
			extra: []any{"tot", s.Stock, "shards", k, "parts", FormatParts(s.ShardPartitions), "tin", tin, "tout", tout},
		})
	}
	for _, r := range todo {
		s := r.s
		// The buyers hash is staged first, restoreChunk pairs per HSET,
		// and the script renames it into place (sale_restore.lua).
		staged := e.keys.BuyersStaged(p, s.ID)
		var pairs []any
		held := map[string]int64{}
		var users []string
		for _, o := range bySale[s.ID] {
			if _, ok := held[o.UserID]; !ok {
				users = append(users, o.UserID)
			}
			held[o.UserID] += o.Qty
			if o.KeyKnown {
				pairs = append(pairs, "k:"+o.UserID+":"+o.Key,
					o.ID+"|"+strconv.FormatInt(o.Qty, 10)+"|"+strconv.FormatInt(o.AmountCents, 10))
			}
		}
		for _, u := range users {
			pairs = append(pairs, "u:"+u, held[u])
		}
		// A staged hash left by a rebuild that died half-way is dropped
		// whatever happens: only a whole one may be renamed.
		_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Del(ctx, staged)
			for len(pairs) > 0 {
				n := min(len(pairs), 2*restoreChunk)
				pipe.HSet(ctx, staged, pairs[:n]...)
				pairs = pairs[n:]
			}
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("restore sale %s: stage its buyers: %w", s.ID, wrapRedis(err))
		}
		args := []any{s.MerchantID, s.PriceCents, s.Stock, r.init, s.Sold, s.PerUserLimit,
			s.StartsAt.UnixMilli(), s.EndsAt.UnixMilli(), len(r.extra) / 2}
		args = append(args, r.extra...)
		v, err := e.saleRestore.Run(ctx, e.rdb, []string{e.keys.Sale(p, s.ID), e.keys.Buyers(p, s.ID), staged}, args...).Int64Slice()
		if err != nil {
			return out, fmt.Errorf("restore sale %s: %w", s.ID, wrapRedis(err))
		}
		if v[0] == 1 {
			out.Sales++
		}
		out.Buyers += int(v[1])
	}
	// Order records, for paying (engine.Order) and expiry (ReleaseOrder), as
	// long as their retention lasts: each into its bucket unless there,
	// and each bucket kept at least as long as its longest-lived record
	// (NX when it has no expiry yet, GT when it would end sooner).
	now := time.Now()
	var cmds []*redis.BoolCmd
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		keep := map[string]time.Duration{}
		var buckets []string
		for _, o := range st.Orders {
			left := e.retention - now.Sub(o.CreatedAt)
			if left <= 0 {
				continue
			}
			key := noKey
			if o.KeyKnown {
				key = o.Key
			}
			rec := o.SaleID + "|" + o.UserID + "|" + o.MerchantID + "|" + strconv.FormatInt(o.Qty, 10) + "|" +
				strconv.FormatInt(o.AmountCents, 10) + "|" + strconv.FormatInt(o.CreatedAt.UnixMilli(), 10) + "|" + key
			bucket := e.keys.Orders(p, o.ID)
			cmds = append(cmds, pipe.HSetNX(ctx, bucket, o.ID, rec))
			if have, ok := keep[bucket]; !ok {
				buckets = append(buckets, bucket)
				keep[bucket] = left
			} else if left > have {
				keep[bucket] = left
			}
		}
		for _, b := range buckets {
			pipe.Do(ctx, "pexpire", b, keep[b].Milliseconds(), "nx")
			pipe.Do(ctx, "pexpire", b, keep[b].Milliseconds(), "gt")
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("restore order records of partition %d: %w", p, wrapRedis(err))
	}
	for _, c := range cmds {
		if c.Val() {
			out.Orders++
		}
	}
	for _, pk := range st.Packets {
		args := []any{pk.ID, pk.SenderID, pk.TotalCents, pk.Count, pk.Mode, pk.RemainingCents, pk.RemainingCount,
			pk.ExpiresAt.UnixMilli(), pk.CreatedAt.UnixMilli(), e.retention.Milliseconds()}
		for _, g := range pk.Grabs {
			args = append(args, g.UserID, strconv.FormatInt(g.AmountCents, 10)+"|"+strconv.FormatInt(g.At.UnixMilli(), 10)+"|"+
				strconv.FormatInt(g.Seq, 10))
		}
		n, err := e.packetRestore.Run(ctx, e.rdb, []string{e.keys.Packet(p, pk.ID), e.keys.PacketGrabs(p, pk.ID), e.keys.PacketExpiry(p)},
			args...).Int()
		if err != nil {
			return out, fmt.Errorf("restore packet %s: %w", pk.ID, wrapRedis(err))
		}
		out.Packets += n
	}
	return out, nil
}

// SalesAbsent returns those of ids (sales and shards of sales on partition
// p) whose hash Redis does not hold there: the ones Restore will write,
// since the partition is fenced and nothing else creates a sale's hash
// until it is marked rebuilt.
func (e *Engine) SalesAbsent(ctx context.Context, p int, ids []string) ([]string, error) {
	exist, err := e.exist(ctx, ids, func(id string) string { return e.keys.Sale(p, id) })
	if err != nil {
		return nil, fmt.Errorf("look up sales of partition %d in Redis: %w", p, err)
	}
	var out []string
	for i, id := range ids {
		if !exist[i] {
			out = append(out, id)
		}
	}
	return out, nil
}

// PacketsInRedis reports, for each id, whether its packet hash exists.
func (e *Engine) PacketsInRedis(ctx context.Context, ids []string) (map[string]bool, error) {
	exist, err := e.exist(ctx, ids, func(id string) string { return e.keys.Packet(e.keys.Partition(id), id) })
	if err != nil {
		return nil, fmt.Errorf("look up packets in Redis: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for i, id := range ids {
		out[id] = exist[i]
	}
	return out, nil
}

// exist reports, for each of ids, whether its key exists, in one pipeline.
func (e *Engine) exist(ctx context.Context, ids []string, key func(id string) string) ([]bool, error) {
	cmds := make([]*redis.IntCmd, len(ids))
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = pipe.Exists(ctx, key(id))
		}
		return nil
	})
	if err != nil {
		return nil, wrapRedis(err)
	}
	out := make([]bool, len(ids))
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}
