package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// Sharded sales.
//
// A sale created with Shards K > 1 spreads its stock over K partitions, chosen
// at create on distinct masters where the cluster has several. Shard i is the
// sale hash Keyspace.Sale(parts[i], id): the sale's terms, its share of the
// stock, its own sold count, buyers hash and orders, so sale_grab.lua decides
// its grabs unchanged and its order ids carry its partition (expiry returns
// the stock to the shard the order came from). Shard 0 is the sale's own
// partition; it is created last and alone records the sale event, so a sale
// exists once shard 0 does.
//
// A user belongs to one shard, crc32(user) mod K, where its limit and its
// attempts are recorded: the limit stays exact.
//
// A shard that runs dry while others hold stock pulls stock from the richest
// one (refill), in two steps that record the stock in transit:
// sale_take.lua on the source takes units into its transit hash under a
// transfer id; sale_give.lua on the destination adds them, once per id;
// then the transit entry is deleted. A process dying between the steps
// leaves the units in transit, never lost: a refill that finds every shard
// empty gives every transfer still in transit (again: giving twice applies
// once) before it answers sold out. Per shard, stock = init + tin - tout -
// sold at every moment, and reconcile checks it.
//
// "Sold out" is final only when every shard is empty and nothing is in
// transit. Then the sale counts as empty for shardEmptyHold: grabs on empty
// shards are answered sold out without reading every shard again. Stock
// that comes back meanwhile (an expired order, released on another
// instance) is found when the hold ends, so a user is told sold out while
// stock sits in another shard for at most shardEmptyHold plus one refill
// (the bound TestShardedSoldOutBound checks). Sharded sales do not use the
// in-process sold-out mark (soldout.go), which holds one partition's
// buyers: their sold-out answers come from the user's own shard.

// shardEmptyHold is how long a sharded sale found empty on every shard is
// not read again by this instance's refills.
const shardEmptyHold = 100 * time.Millisecond

// shardLayout is what an engine knows of a sale's sharding, read once from
// shard 0 and kept (the layout never changes).
type shardLayout struct {
	id     string
	parts  []int
	shards []shardState
	// emptyUntil, in the sold-out mark's clock nanoseconds: a refill before
	// it answers "nothing to move" without reading the shards.
	emptyUntil atomic.Int64
}

// shardState is one shard's grab head and the refill lock of this process.
type shardState struct {
	head *saleHead
	mu   sync.Mutex
	gen  atomic.Uint64 // bumped by each refill that moved stock here
}

// home returns the shard index of user.
func (l *shardLayout) home(user string) int {
	return int(crc32.ChecksumIEEE([]byte(user)) % uint32(len(l.parts)))
}

// ShardStock is shard i's share of a sale of total units over k shards: the
// first total mod k shards hold one unit more.
func ShardStock(total int64, k, i int) int64 {
	n := total / int64(k)
	if int64(i) < total%int64(k) {
		n++
	}
	return n
}

// FormatParts writes a sale's shard partitions as Redis, the stream and
// MySQL keep them: "3,7,12".
func FormatParts(parts []int) string {
	b := make([]byte, 0, 4*len(parts))
	for i, p := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(p), 10)
	}
	return string(b)
}

// ParseParts reads FormatParts's form.
func ParseParts(s string) ([]int, error) {
	f := strings.Split(s, ",")
	parts := make([]int, len(f))
	for i, x := range f {
		p, err := strconv.Atoi(x)
		if err != nil || p < 0 {
			return nil, fmt.Errorf("shard partitions %q: %q is not a partition", s, x)
		}
		parts[i] = p
	}
	return parts, nil
}

// unsharded is the layout of a sale known to have one shard.
var unsharded = &shardLayout{}

// saleLayout returns what this engine knows of the sale id whose head is h:
// its layout, or unsharded. The first grab reads it from the sale's hash
// (shard 0 of a sharded sale), one grab at a time, and keeps it in h: a
// layout never changes, and every grab of the head shares its refill locks. A
// sale that does not exist is remembered as absent for absentHold, so that
// a flood of grabs of it costs one read per hold, not one per grab (a
// create through this engine ends the hold at once); the partition's
// marker is read with the hash, so a partition that lost its state answers
// ErrRebuilding as the grab script would, not ErrNotFound.
func (e *Engine) saleLayout(ctx context.Context, h *saleHead, id string) (*shardLayout, error) {
	if l := h.layout.Load(); l != nil {
		return l, nil
	}
	if e.soldOut.now() < h.absentUntil.Load() {
		return nil, fmt.Errorf("sale %s: %w", id, flashgrab.ErrNotFound)
	}
	// One read at a time: the grabs that arrive meanwhile take its answer.
	h.reading.Lock()
	defer h.reading.Unlock()
	if l := h.layout.Load(); l != nil {
		return l, nil
	}
	now := e.soldOut.now()
	if now < h.absentUntil.Load() {
		return nil, fmt.Errorf("sale %s: %w", id, flashgrab.ErrNotFound)
	}
	creates := h.creates.Load()
	var fields *redis.SliceCmd
	var epoch *redis.IntCmd
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		fields = pipe.HMGet(ctx, h.keys[0], "mch", "parts")
		epoch = pipe.Exists(ctx, h.keys[3])
		return nil
	})
	if cerr := ctx.Err(); err != nil && cerr != nil {
		// As the batcher answers a grab whose context ended.
		return nil, fmt.Errorf("read layout of sale %s: %w: %w", id, flashgrab.ErrUnavailable, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("read layout of sale %s: %w", id, wrapRedis(err))
	}
	v := fields.Val()
	if v[0] == nil {
		if epoch.Val() == 0 {
			return nil, e.noteFenced(h.p, fmt.Errorf("sale %s: partition %d has no epoch marker: %w", id, h.p, flashgrab.ErrRebuilding))
		}
		h.absentUntil.Store(now + int64(absentHold))
		if h.creates.Load() != creates {
			h.absentUntil.Store(0) // created meanwhile (see Engine.created)
		}
		return nil, fmt.Errorf("sale %s: %w", id, flashgrab.ErrNotFound)
	}
	l := unsharded
	if s, ok := v[1].(string); ok {
		parts, err := ParseParts(s)
		if err != nil {
			return nil, fmt.Errorf("sale %s: %w", id, err)
		}
		l = e.newLayout(id, parts)
	}
	h.layout.Store(l)
	return l, nil
}

func (e *Engine) newLayout(id string, parts []int) *shardLayout {
	l := &shardLayout{id: id, parts: parts, shards: make([]shardState, len(parts))}
	for i, p := range parts {
		l.shards[i].head = e.newSaleHead(p, id)
	}
	return l
}

// createSharded creates a sale of s.Shards > 1 shards: the other shards
// first, shard 0 last (it records the sale). A retry finds the layout the
// first attempt chose in shard 0, or chooses the same one again.
func (e *Engine) createSharded(ctx context.Context, s flashgrab.Sale) (flashgrab.Sale, error) {
	k := s.Shards
	if k > e.keys.Partitions {
		return flashgrab.Sale{}, flashgrab.Invalid("shards", fmt.Sprintf("must be at most the deployment's %d partitions", e.keys.Partitions))
	}
	p0 := e.keys.Partition(s.ID)
	v, err := e.rdb.HMGet(ctx, e.keys.Sale(p0, s.ID), "mch", "parts").Result()
	if err != nil {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, wrapRedis(err))
	}
	var parts []int
	switch {
	case v[0] == nil:
		if parts, err = e.choosePartitions(ctx, p0, k); err != nil {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, err)
		}
		if err := e.noTouchedShards(ctx, s.ID, p0); err != nil {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, err)
		}
	case v[1] == nil:
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: taken by an unsharded sale: %w", s.ID, flashgrab.ErrExists)
	default:
		if parts, err = ParseParts(v[1].(string)); err != nil {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, err)
		}
		if len(parts) != k {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s: taken with %d shards: %w", s.ID, len(parts), flashgrab.ErrExists)
		}
	}
	layout := FormatParts(parts)
	for i := k - 1; i >= 0; i-- {
		p := parts[i]
		emit := 0
		if i == 0 {
			emit = 1
		}
		cmd, durErr := e.runDurable(ctx, e.saleShardCreate, []string{e.keys.Sale(p, s.ID), e.keys.Events(p), e.keys.Epoch(p)},
			s.ID, s.MerchantID, s.PriceCents, ShardStock(s.Stock, k, i), s.PerUserLimit,
			s.StartsAt.UnixMilli(), s.EndsAt.UnixMilli(), s.Stock, k, layout, emit)
		created, err := cmd.Int()
		if err != nil {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s shard %d (partition %d): %w", s.ID, i, p, e.noteFenced(p, wrapRedis(err)))
		}
		if durErr != nil {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", s.ID, durErr)
		}
		if created == 0 {
			return flashgrab.Sale{}, fmt.Errorf("create sale %s: other terms under this id: %w", s.ID, flashgrab.ErrExists)
		}
	}
	s.ShardPartitions = parts
	s.StartsAt, s.EndsAt = s.StartsAt.Truncate(time.Millisecond), s.EndsAt.Truncate(time.Millisecond)
	return s, nil
}

// noTouchedShards makes sure that no partition but p0 (sale id's own, where
// its hash is absent) holds a shard of id that sold or moved stock. Such a
// shard proves that shard 0 existed (only its layout leads grabs and
// refills to the others), so shard 0 was lost with its partition, and its
// creation with it, before MySQL learnt of the sale (otherwise a rebuild
// would have restored it). Creating the sale again, sharded or not, would
// sell its whole stock beside what the survivors sold, and instances that
// cached the old layout would go on selling the survivors' stock: units sold
// twice. Refused with ErrExists. Every partition is looked at, not only
// those a sharded create would choose now: another shard count, or a
// cluster whose slots moved, chooses others. Shards as a create leaves them
// (a create that stopped half-way, which its retry finishes) are no proof.
// A partition that does not answer is not looked at.
func (e *Engine) noTouchedShards(ctx context.Context, id string, p0 int) error {
	cmds := make([]*redis.SliceCmd, e.keys.Partitions)
	// Each partition's answer is read on its own. One that does not answer
	// (its master down) is passed over: refusing every create meanwhile
	// would take the creates of healthy partitions down with one master.
	e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range cmds {
			if p != p0 {
				cmds[p] = pipe.HMGet(ctx, e.keys.Sale(p, id), "mch", "sold", "tin", "tout")
			}
		}
		return nil
	})
	for p, c := range cmds {
		if c == nil || c.Err() != nil {
			continue
		}
		v := c.Val()
		if v[0] != nil && (str(v[1]) != "0" || str(v[2]) != "0" || str(v[3]) != "0") {
			return fmt.Errorf("a shard on partition %d sold or moved stock while shard 0 is gone: the sale was created and "+
				"lost with shard 0's partition before it was settled; creating it again would sell units twice: %w", p, flashgrab.ErrExists)
		}
	}
	return nil
}

// choosePartitions picks k distinct partitions for a sale's shards, p0
// first. On a cluster they go round the masters (by the slot of each
// partition's hash tag), so k ≤ masters puts every shard on its own master;
// on a single Redis they are p0 and the partitions after it.
func (e *Engine) choosePartitions(ctx context.Context, p0, k int) ([]int, error) {
	P := e.keys.Partitions
	masterOf := func(int) string { return "" }
	if cc, ok := e.rdb.(*redis.ClusterClient); ok {
		slots, err := cc.ClusterSlots(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("read cluster slots: %w", wrapRedis(err))
		}
		masterOf = func(p int) string {
			slot := int(keySlot("p" + strconv.Itoa(p)))
			for _, s := range slots {
				if slot >= s.Start && slot <= s.End && len(s.Nodes) > 0 {
					return s.Nodes[0].Addr
				}
			}
			return "" // an uncovered slot: grouped with the others uncovered
		}
	}
	// Candidates in order p0, p0+1, …, grouped by master in order of first
	// appearance, so p0's master is group 0.
	var groups [][]int
	index := map[string]int{}
	for d := range P {
		p := (p0 + d) % P
		m := masterOf(p)
		g, ok := index[m]
		if !ok {
			g = len(groups)
			index[m] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], p)
	}
	next := make([]int, len(groups))
	parts := []int{p0}
	next[0] = 1
	for g := 1 % len(groups); len(parts) < k; g = (g + 1) % len(groups) {
		if next[g] < len(groups[g]) {
			parts = append(parts, groups[g][next[g]])
			next[g]++
		}
	}
	return parts, nil
}

// keySlot is Redis Cluster's slot of a hash tag's content: CRC16 (XMODEM)
// mod 16384.
func keySlot(tag string) uint16 {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

// shardedSale reads a sharded sale's counters from every shard: the stock is
// what was created less what was sold, wherever it sits (a shard, or in
// transit between two).
func (e *Engine) shardedSale(ctx context.Context, s flashgrab.Sale, parts []int) (flashgrab.Sale, error) {
	cmds := make([]*redis.SliceCmd, len(parts))
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range parts {
			cmds[i] = pipe.HMGet(ctx, e.keys.Sale(p, s.ID), "init", "sold")
		}
		return nil
	})
	if err != nil {
		return flashgrab.Sale{}, fmt.Errorf("get sale %s shards: %w", s.ID, wrapRedis(err))
	}
	var init, sold int64
	for i, c := range cmds {
		v := c.Val()
		if v[0] == nil {
			return flashgrab.Sale{}, fmt.Errorf("sale %s: shard %d (partition %d) missing", s.ID, i, parts[i])
		}
		d := recordDecoder{key: e.keys.Sale(parts[i], s.ID)}
		init += d.int("init", str(v[0]))
		sold += d.int("sold", str(v[1]))
		if d.err != nil {
			return flashgrab.Sale{}, fmt.Errorf("sale %s: %w", s.ID, d.err)
		}
	}
	s.Stock, s.Sold = init-sold, sold
	s.Shards, s.ShardPartitions = len(parts), parts
	return s, nil
}

// grabSharded decides a grab on the user's shard; when it is dry, stock is
// moved to it from another shard and the grab tried again.
func (e *Engine) grabSharded(ctx context.Context, l *shardLayout, r flashgrab.GrabRequest) (flashgrab.GrabResult, error) {
	i := l.home(r.UserID)
	sh := &l.shards[i]
	for attempt := 0; ; attempt++ {
		seen := sh.gen.Load()
		id, err := e.ids.Next()
		if err != nil {
			return flashgrab.GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, err)
		}
		bucket, oid := sh.head.order(id)
		v, err := e.batch.do(ctx, &sh.head.call, []string{bucket}, r.UserID, r.Key, r.Qty, oid)
		if err != nil {
			return flashgrab.GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, e.noteFenced(sh.head.p, err))
		}
		res, err := sh.head.outcome(r.SaleID, oid, v)
		if !errors.Is(err, flashgrab.ErrSoldOut) || attempt >= len(l.parts) {
			return res.GrabResult, err
		}
		moved, rerr := e.refill(ctx, l, i, r.Qty, seen)
		if rerr != nil {
			return flashgrab.GrabResult{}, fmt.Errorf("grab sale %s: %w", r.SaleID, rerr)
		}
		if !moved {
			return res.GrabResult, err
		}
	}
}

// refill brings stock to shard i for a grab of want units that found it dry
// after the shard's refill generation seen. moved reports that stock may be
// there now (this or another goroutine's refill moved some, or it came
// back), so the grab is worth trying again; false means every shard was
// empty with nothing in transit, or too little to matter.
func (e *Engine) refill(ctx context.Context, l *shardLayout, i int, want int64, seen uint64) (moved bool, err error) {
	sh := &l.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gen.Load() != seen {
		return true, nil // refilled while this grab was being decided
	}
	now := e.soldOut.now()
	if now < l.emptyUntil.Load() {
		return false, nil
	}
	for range 3 {
		stock, transit, err := e.shardLevels(ctx, l)
		if err != nil {
			return false, err
		}
		if stock[i] >= want {
			sh.gen.Add(1)
			return true, nil // came back meanwhile (a released order)
		}
		donor := -1
		for j, n := range stock {
			if j != i && n > 0 && (donor < 0 || n > stock[donor]) {
				donor = j
			}
		}
		if donor >= 0 {
			tid, n, err := e.take(ctx, l, donor, i, want)
			if err != nil {
				return false, err
			}
			if n == 0 {
				continue // sold meanwhile: look again
			}
			if err := e.give(ctx, l, donor, tid, l.parts[i], n); err != nil {
				return false, err
			}
			sh.gen.Add(1)
			return true, nil
		}
		if len(transit) > 0 {
			// Stock taken by a mover that has not given it (yet, or ever:
			// it died). Giving it again is safe; then look again.
			for _, t := range transit {
				if err := e.give(ctx, l, t.src, t.id, t.dst, t.units); err != nil {
					return false, err
				}
			}
			continue
		}
		l.emptyUntil.Store(now + int64(shardEmptyHold))
		return false, nil
	}
	return false, nil
}

// transfer is one entry of a shard's transit hash.
type transfer struct {
	src   int // shard index
	id    string
	dst   int // partition
	units int64
}

// shardLevels reads every shard's stock and transit hash in one pipeline.
func (e *Engine) shardLevels(ctx context.Context, l *shardLayout) ([]int64, []transfer, error) {
	stocks := make([]*redis.StringCmd, len(l.parts))
	transits := make([]*redis.MapStringStringCmd, len(l.parts))
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for j, p := range l.parts {
			stocks[j] = pipe.HGet(ctx, e.keys.Sale(p, l.id), "stock")
			transits[j] = pipe.HGetAll(ctx, e.keys.Transit(p, l.id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read shards of sale %s: %w", l.id, wrapRedis(err))
	}
	stock := make([]int64, len(l.parts))
	var out []transfer
	for j := range l.parts {
		stock[j], _ = strconv.ParseInt(stocks[j].Val(), 10, 64)
		for id, v := range transits[j].Val() {
			t, err := parseTransfer(j, id, v)
			if err != nil {
				return nil, nil, fmt.Errorf("sale %s shard %d: %w", l.id, j, err)
			}
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b transfer) int { return strings.Compare(a.id, b.id) })
	return stock, out, nil
}

// parseTransfer reads a transit entry, "dst_partition|units|at_ms".
func parseTransfer(src int, id, v string) (transfer, error) {
	f := strings.Split(v, "|")
	if len(f) != 3 {
		return transfer{}, fmt.Errorf("transfer %s: malformed %q", id, v)
	}
	dst, err1 := strconv.Atoi(f[0])
	n, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return transfer{}, fmt.Errorf("transfer %s: malformed %q", id, v)
	}
	return transfer{src: src, id: id, dst: dst, units: n}, nil
}

// take is a transfer's first step: up to want units (at least half the
// source's stock) leave shard src into its transit hash, bound for shard
// dst. n is 0 when src had none.
func (e *Engine) take(ctx context.Context, l *shardLayout, src, dst int, want int64) (tid string, n int64, err error) {
	id, err := e.ids.Next()
	if err != nil {
		return "", 0, fmt.Errorf("move stock of sale %s: %w", l.id, err)
	}
	tid = "t" + strconv.FormatInt(id, 10)
	p := l.parts[src]
	n, err = e.saleTake.Run(ctx, e.rdb, []string{e.keys.Sale(p, l.id), e.keys.Transit(p, l.id)},
		tid, l.parts[dst], want).Int64()
	if err != nil {
		return "", 0, fmt.Errorf("move stock of sale %s from partition %d: %w", l.id, p, wrapRedis(err))
	}
	return tid, n, nil
}

// give is a transfer's second step: the units reach partition dst's shard
// (once, however often given), then leave the source's transit hash.
func (e *Engine) give(ctx context.Context, l *shardLayout, src int, tid string, dst int, n int64) error {
	r, err := e.saleGive.Run(ctx, e.rdb, []string{e.keys.Sale(dst, l.id), e.keys.Applied(dst, l.id)}, tid, n).Int()
	if err != nil {
		return fmt.Errorf("move stock of sale %s to partition %d (transfer %s): %w", l.id, dst, tid, wrapRedis(err))
	}
	if r == -2 {
		return fmt.Errorf("move stock of sale %s to partition %d (transfer %s): shard gone, units stay in transit: %w", l.id, dst, tid, flashgrab.ErrSaleGone)
	}
	if err := e.rdb.HDel(ctx, e.keys.Transit(l.parts[src], l.id), tid).Err(); err != nil {
		return fmt.Errorf("move stock of sale %s: clear transfer %s: %w", l.id, tid, wrapRedis(err))
	}
	return nil
}

// stockBack tells a sharded sale's layout that stock came back to one of its
// shards, so this instance's refills look again at once.
func (e *Engine) stockBack(id string) {
	if h := e.heads.peek(id); h != nil {
		if l := h.layout.Load(); l != nil && l != unsharded {
			l.emptyUntil.Store(0)
		}
	}
}
