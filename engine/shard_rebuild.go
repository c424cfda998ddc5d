package engine

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// Rebuilding a lost shard of a sharded sale (settle.Rebuilder).
//
// A shard's units are, at every moment, in its stock, held by its orders
// (sold), or in a transit hash on their way to another shard. Grabs and
// releases move units between stock and sold only, so stock + sold of a
// shard (its level) changes only when a transfer takes from it or gives to
// it, and each of those also bumps its tout or tin. A lost shard's stock
// is then what the sale's initial stock leaves after the surviving shards'
// levels, the transfers in transit, and the units MySQL's orders of the
// lost shards hold.

// ShardLevels is what Redis holds of a sharded sale's shards: read by
// SaleShardLevels.
type ShardLevels struct {
	// Present tells, per shard, whether its sale hash exists; Level is its
	// stock + sold (0 when absent).
	Present []bool
	Level   []int64
	// Transit is the units of every transfer found in any shard's transit
	// hash, each transfer once.
	Transit int64
}

// shardRound is one read of every shard.
type shardRound struct {
	present  []bool
	level    []int64
	moves    []string // tin|tout per shard
	transits map[string]int64
}

// SaleShardLevels reads the levels of sale id's shards on parts. The shards
// are read one after another while transfers go on, so the reads are
// repeated until two rounds in a row find every shard's tin and tout
// unchanged (no transfer took or gave meanwhile); the transfers of both
// rounds are counted. A unit is then counted at least once: in a level, or
// in transit. It may be counted twice (a transfer given between the reads),
// which leaves units unsold, never sells one twice.
func (e *Engine) SaleShardLevels(ctx context.Context, id string, parts []int) (ShardLevels, error) {
	prev, err := e.shardRound(ctx, id, parts)
	if err != nil {
		return ShardLevels{}, err
	}
	for range 20 {
		cur, err := e.shardRound(ctx, id, parts)
		if err != nil {
			return ShardLevels{}, err
		}
		stable := true
		for j := range parts {
			if cur.present[j] != prev.present[j] || cur.moves[j] != prev.moves[j] {
				stable = false
			}
		}
		if stable {
			out := ShardLevels{Present: cur.present, Level: cur.level}
			for tid, n := range cur.transits {
				prev.transits[tid] = n
			}
			for _, n := range prev.transits {
				out.Transit += n
			}
			return out, nil
		}
		prev = cur
	}
	return ShardLevels{}, fmt.Errorf("read shards of sale %s: stock kept moving between them; try again", id)
}

func (e *Engine) shardRound(ctx context.Context, id string, parts []int) (shardRound, error) {
	counts := make([]*redis.SliceCmd, len(parts))
	transits := make([]*redis.MapStringStringCmd, len(parts))
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for j, p := range parts {
			// The counters first: a take between the two reads is then
			// counted twice, not missed.
			counts[j] = pipe.HMGet(ctx, e.keys.Sale(p, id), "mch", "stock", "sold", "tin", "tout")
			transits[j] = pipe.HGetAll(ctx, e.keys.Transit(p, id))
		}
		return nil
	})
	if err != nil {
		return shardRound{}, fmt.Errorf("read shards of sale %s: %w", id, wrapRedis(err))
	}
	r := shardRound{present: make([]bool, len(parts)), level: make([]int64, len(parts)), moves: make([]string, len(parts)),
		transits: map[string]int64{}}
	for j, c := range counts {
		// A lost shard whose transit hash survived: its transfers count
		// too.
		for tid, rec := range transits[j].Val() {
			t, err := parseTransfer(j, tid, rec)
			if err != nil {
				return shardRound{}, fmt.Errorf("sale %s shard %d: %w", id, j, err)
			}
			r.transits[tid] = t.units
		}
		v := c.Val()
		if v[0] == nil {
			continue
		}
		d := recordDecoder{key: e.keys.Sale(parts[j], id)}
		r.present[j] = true
		r.level[j] = d.int("stock", str(v[1])) + d.int("sold", str(v[2]))
		r.moves[j] = str(v[3]) + "|" + str(v[4])
		if d.err != nil {
			return shardRound{}, fmt.Errorf("sale %s: %w", id, d.err)
		}
	}
	return r, nil
}

// ShardedSaleCreations returns the creation events of sharded sales with a
// shard on partition p that the other partitions' streams still hold,
// settled or not. A sharded sale's creation is recorded on shard 0's
// partition only, so a rebuild of p reads every other stream for them and
// settles them before it reads MySQL: a shard lost before its sale's
// creation was settled is then restored like any other. Every stream is
// read whole (what is still there: the settled history is trimmed), but
// only entries of kind sale are decoded.
func (e *Engine) ShardedSaleCreations(ctx context.Context, p int) ([]flashgrab.Event, error) {
	var out []flashgrab.Event
	for q := range e.keys.Partitions {
		if q == p {
			continue // its own stream is settled whole
		}
		err := e.streamEntries(ctx, q, func(m redis.XMessage) {
			if m.Values["k"] != flashgrab.EventSale {
				return
			}
			evs, err := ParseEntry(q, m)
			if err == nil && slices.Contains(evs[0].Sale.ShardPartitions, p) {
				out = append(out, evs[0])
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
