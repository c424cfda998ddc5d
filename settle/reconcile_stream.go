package settle

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// snapshot is one partition's Redis state read in a single MULTI (every key
// carries the partition's hash tag), so the sales' counters, the stream and
// the consumer group's progress are seen at one instant.
type snapshot struct {
	p         int
	epoch     bool      // the partition's epoch marker exists: Redis has not lost its state
	now       time.Time // Redis's clock, which also stamps stream ids
	last      streamID  // the last id the stream generated; later orders are not in this snapshot
	unsettled []redis.XMessage
	dead      int64
	firstDead map[string]any
	sales     map[string][]any // sale id → HMGET stock, sold, init, tin, tout
}

// saleRow is a sale as MySQL holds it; a sharded sale has one row per
// shard, in the shard's partition, with the shard's share as initial.
type saleRow struct {
	id      string
	initial int64
	shards  int // > 1: a shard of a sharded sale
}

// streamID is a stream entry id, "<ms>-<seq>", compared numerically.
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) streamID {
	ms, seq, _ := strings.Cut(s, "-")
	a, _ := strconv.ParseUint(ms, 10, 64)
	b, _ := strconv.ParseUint(seq, 10, 64)
	return streamID{a, b}
}

func (a streamID) after(b streamID) bool {
	return a.ms > b.ms || (a.ms == b.ms && a.seq > b.seq)
}

// salesByPartition lists MySQL's sales by partition; the snapshot reads
// their counters.
func (r *Reconciler) salesByPartition(ctx context.Context) ([][]saleRow, error) {
	out := make([][]saleRow, r.Keys.Partitions)
	rows, err := r.DB.QueryContext(ctx, `SELECT id, stock, shards, shard_partitions FROM sales`)
	if err != nil {
		return nil, fmt.Errorf("list sales: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s saleRow
		var layout string
		if err := rows.Scan(&s.id, &s.initial, &s.shards, &layout); err != nil {
			return nil, fmt.Errorf("list sales: %w", err)
		}
		if s.shards <= 1 || layout == "" {
			p := r.Keys.Partition(s.id)
			out[p] = append(out[p], saleRow{id: s.id, initial: s.initial})
			continue
		}
		parts, err := engine.ParseParts(layout)
		if err != nil || len(parts) != s.shards {
			return nil, fmt.Errorf("list sales: sale %s: %d shards on partitions %q", s.id, s.shards, layout)
		}
		for i, p := range parts {
			if p >= r.Keys.Partitions {
				return nil, fmt.Errorf("list sales: sale %s: shard %d on partition %d of %d", s.id, i, p, r.Keys.Partitions)
			}
			out[p] = append(out[p], saleRow{id: s.id, initial: engine.ShardStock(s.initial, s.shards, i), shards: s.shards})
		}
	}
	return out, rows.Err()
}

// snapshot reads partition p. An entry is unsettled while it is pending in
// the settlers' group or not yet delivered to it (or there is no group yet);
// one the group acknowledged is settled even if its XDEL has not happened.
func (r *Reconciler) snapshot(ctx context.Context, p int, sales []saleRow) (*snapshot, error) {
	stream := r.Keys.Events(p)
	var (
		timeCmd   *redis.TimeCmd
		epoch     *redis.IntCmd
		exists    *redis.IntCmd
		info      *redis.XInfoStreamCmd
		groups    *redis.XInfoGroupsCmd
		pending   *redis.XPendingExtCmd
		entries   *redis.XMessageSliceCmd
		deadLen   *redis.IntCmd
		deadFirst *redis.XMessageSliceCmd
		saleCmds  = make([]*redis.SliceCmd, len(sales))
	)
	// Per-command errors (no stream, no group yet) are read from each
	// command below; TxPipelined's own error is the first of them.
	r.Redis.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		timeCmd = pipe.Time(ctx)
		epoch = pipe.Exists(ctx, r.Keys.Epoch(p))
		exists = pipe.Exists(ctx, stream)
		info = pipe.XInfoStream(ctx, stream)
		groups = pipe.XInfoGroups(ctx, stream)
		pending = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: r.Group, Start: "-", End: "+", Count: 1 << 20})
		entries = pipe.XRange(ctx, stream, "-", "+")
		deadLen = pipe.XLen(ctx, stream+"-dead")
		deadFirst = pipe.XRangeN(ctx, stream+"-dead", "-", "+", 1)
		for i, s := range sales {
			// tin and tout: units a shard of a sharded sale received and gave.
			saleCmds[i] = pipe.HMGet(ctx, r.Keys.Sale(p, s.id), "stock", "sold", "init", "tin", "tout")
		}
		return nil
	})
	if err := timeCmd.Err(); err != nil {
		return nil, fmt.Errorf("snapshot partition %d: %w", p, err)
	}
	s := &snapshot{p: p, now: timeCmd.Val(), epoch: epoch.Val() == 1, sales: map[string][]any{}}
	for i, c := range saleCmds {
		if err := c.Err(); err != nil {
			return nil, fmt.Errorf("snapshot partition %d: sale %s: %w", p, sales[i].id, err)
		}
		s.sales[sales[i].id] = c.Val()
	}
	if err := deadLen.Err(); err != nil {
		return nil, fmt.Errorf("snapshot partition %d: dead letters: %w", p, err)
	}
	if s.dead = deadLen.Val(); s.dead > 0 && len(deadFirst.Val()) > 0 {
		s.firstDead = deadFirst.Val()[0].Values
	}
	if exists.Val() == 0 {
		// No stream (none yet, or Redis lost it and no event came since a
		// rebuild): every event MySQL holds is older than this instant,
		// and stream ids are Redis's clock.
		s.last = streamID{ms: uint64(s.now.UnixMilli())}
		return s, nil
	}
	if err := info.Err(); err != nil {
		return nil, fmt.Errorf("snapshot partition %d: stream: %w", p, err)
	}
	if err := entries.Err(); err != nil {
		return nil, fmt.Errorf("snapshot partition %d: stream: %w", p, err)
	}
	s.last = parseStreamID(info.Val().LastGeneratedID)
	if s.last == (streamID{}) {
		// The stream exists but never held an entry: a settler's XGROUP
		// CREATE MKSTREAM made it after Redis lost the old one. As with no
		// stream, every event MySQL holds is older than this instant
		// (without this, every order settled before the loss was ignored
		// and its sale reported as units LOST; found by the chaos suite).
		s.last = streamID{ms: uint64(s.now.UnixMilli())}
	}
	var delivered *streamID
	for _, g := range groups.Val() {
		if g.Name == r.Group {
			id := parseStreamID(g.LastDeliveredID)
			delivered = &id
		}
	}
	if delivered == nil {
		s.unsettled = entries.Val()
		return s, nil
	}
	if err := pending.Err(); err != nil {
		return nil, fmt.Errorf("snapshot partition %d: pending entries: %w", p, err)
	}
	isPending := make(map[string]bool, len(pending.Val()))
	for _, e := range pending.Val() {
		isPending[e.ID] = true
	}
	for _, m := range entries.Val() {
		if isPending[m.ID] || parseStreamID(m.ID).after(*delivered) {
			s.unsettled = append(s.unsettled, m)
		}
	}
	return s, nil
}

// salesMatchOrders: invariant 1, checked against MySQL rather than by
// construction. Per sale, Redis's sold counter equals the units MySQL's
// orders hold (pending, paid, or cancelled with the stock not returned:
// released 0 or 2) up to the partition's stream position at the snapshot,
// plus the orders still in flight; Redis's stock equals MySQL's initial stock minus the same.
// An order in flight in another sale or partition hides nothing. A partition
// that differs is read again once, so an expiry that returned stock between
// the Redis and the MySQL read does not count as a difference.
func (r *Reconciler) salesMatchOrders(ctx context.Context, st *state) (Check, error) {
	c := Check{Name: "sale sold/stock in Redis = MySQL orders (inv. 1)"}
	for p, sales := range st.sales {
		if len(sales) == 0 {
			continue
		}
		c.Checked += len(sales)
		diffs, err := r.compareSales(ctx, st.snaps[p], sales)
		if err != nil {
			return c, err
		}
		if len(diffs) > 0 {
			again, err := r.snapshot(ctx, p, sales)
			if err != nil {
				return c, err
			}
			if diffs, err = r.compareSales(ctx, again, sales); err != nil {
				return c, err
			}
		}
		c.Diffs = append(c.Diffs, diffs...)
	}
	return c, nil
}

func (r *Reconciler) compareSales(ctx context.Context, s *snapshot, sales []saleRow) ([]string, error) {
	flying := map[string]flashgrab.Order{}
	for _, m := range s.unsettled {
		evs, _ := engine.ParseEntry(s.p, m) // an unreadable entry holds no order to count
		for _, ev := range evs {
			if ev.Kind == flashgrab.EventOrder {
				flying[ev.Order.ID] = ev.Order
			}
		}
	}
	ids := make([]string, 0, len(flying))
	for id := range flying {
		ids = append(ids, id)
	}
	// One read-only transaction: InnoDB's consistent read makes both
	// queries see MySQL at one instant, so an order settling between them
	// is counted once.
	tx, err := r.DB.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	settledFlying := map[string]bool{} // settled since the snapshot: MySQL counts them
	for len(ids) > 0 {
		n := min(len(ids), 500)
		rows, err := tx.QueryContext(ctx, "SELECT id FROM orders WHERE id IN ("+placeholders(n, "?")+")", anys(ids[:n])...)
		if err != nil {
			return nil, fmt.Errorf("read orders in flight: %w", err)
		}
		for rows.Next() {
			var id string
			rows.Scan(&id)
			settledFlying[id] = true
		}
		rows.Close()
		ids = ids[n:]
	}
	held := map[string]int64{}
	var plain, sharded []saleRow
	for _, sr := range sales {
		if sr.shards > 1 {
			sharded = append(sharded, sr)
		} else {
			plain = append(plain, sr)
		}
	}
	// A shard's orders are those of its sale whose id carries this
	// partition (<snowflake>-<p>): the shard won them.
	if err := r.sumHeld(ctx, tx, s, plain, "", held); err != nil {
		return nil, err
	}
	if err := r.sumHeld(ctx, tx, s, sharded, " AND SUBSTRING_INDEX(id, '-', -1) = '"+strconv.Itoa(s.p)+"'", held); err != nil {
		return nil, err
	}
	inFlight := map[string]int64{}
	for id, o := range flying {
		if !settledFlying[id] {
			inFlight[o.SaleID] += o.Qty
		}
	}
	var diffs []string
	for _, sr := range sales {
		v := s.sales[sr.id]
		name := "sale " + sr.id
		if sr.shards > 1 {
			name = fmt.Sprintf("sale %s shard in partition %d", sr.id, s.p)
		}
		if v[0] == nil {
			// Its counters went with it: what it sold beyond MySQL cannot
			// be counted any more.
			diffs = append(diffs, fmt.Sprintf("%s: in MySQL (%d units held by its orders), missing in Redis: Redis lost it; "+
				"`flashgrab rebuild` restores it from MySQL", name, held[sr.id]))
			continue
		}
		stock, sold, init := atoi(v[0]), atoi(v[1]), atoi(v[2])
		units := held[sr.id] + inFlight[sr.id]
		if init != sr.initial {
			diffs = append(diffs, fmt.Sprintf("%s: initial stock %d in Redis, %d in MySQL", name, init, sr.initial))
		}
		switch {
		case sold > units:
			// Wins Redis answered whose events are neither settled nor in
			// the stream: lost with the stream (Redis lost some keys, or a
			// restart from an older file than the counters').
			diffs = append(diffs, fmt.Sprintf("%s: %d units LOST: Redis sold %d, MySQL orders hold %d (%d settled + %d in flight)",
				name, sold-units, sold, units, held[sr.id], inFlight[sr.id]))
		case sold < units:
			diffs = append(diffs, fmt.Sprintf("%s: Redis sold %d, fewer than MySQL orders hold: %d (%d settled + %d in flight)",
				name, sold, units, held[sr.id], inFlight[sr.id]))
		}
		// A shard's stock also moves between shards: what it received
		// (tin) and gave (tout) count; for a sale of one shard both are 0.
		tin, tout := atoi(v[3]), atoi(v[4])
		switch want := sr.initial + tin - tout - units; {
		case stock == want:
		case sr.shards > 1:
			diffs = append(diffs, fmt.Sprintf("%s: Redis stock %d, MySQL initial %d + moved in %d - out %d - %d held = %d",
				name, stock, sr.initial, tin, tout, units, want))
		default:
			diffs = append(diffs, fmt.Sprintf("%s: Redis stock %d, MySQL initial %d - %d held = %d",
				name, stock, sr.initial, units, want))
		}
	}
	return diffs, nil
}

// sumHeld adds to held, per sale of rows, the units MySQL's orders hold up
// to the snapshot's stream position (pending, paid, or cancelled with the
// stock not returned); where narrows the orders further.
func (r *Reconciler) sumHeld(ctx context.Context, tx *sql.Tx, s *snapshot, sales []saleRow, where string, held map[string]int64) error {
	for rest := sales; len(rest) > 0; {
		n := min(len(rest), 500)
		args := make([]any, 0, n+4)
		for _, sr := range rest[:n] {
			args = append(args, sr.id)
		}
		args = append(args, OrderPending, OrderPaid, OrderCancelled, OrderRefunded, s.last.ms, s.last.seq)
		// event_id is the order's stream entry id ('' when the pay path
		// wrote it first, from an order already in Redis).
		rows, err := tx.QueryContext(ctx, `SELECT sale_id, COALESCE(SUM(qty), 0) FROM orders
			WHERE sale_id IN (`+placeholders(n, "?")+`) AND (status IN (?, ?) OR (status IN (?, ?) AND released <> 1))
			AND (CAST(SUBSTRING_INDEX(event_id, '-', 1) AS UNSIGNED), CAST(SUBSTRING_INDEX(event_id, '-', -1) AS UNSIGNED)) <= (?, ?)`+
			where+` GROUP BY sale_id`, args...)
		if err != nil {
			return fmt.Errorf("sum orders of sales: %w", err)
		}
		for rows.Next() {
			var id string
			var q int64
			if err := rows.Scan(&id, &q); err != nil {
				rows.Close()
				return fmt.Errorf("sum orders of sales: %w", err)
			}
			held[id] = q
		}
		rows.Close()
		rest = rest[n:]
	}
	return nil
}

// settlementNotStuck: a partition whose oldest unsettled entry is older than
// StuckAfter is failing to settle (settler down, a batch MySQL keeps
// refusing); its entries are reported with their age, not as in flight.
func (r *Reconciler) settlementNotStuck(_ context.Context, st *state) (Check, error) {
	c := Check{Name: "settlement not stuck in any partition"}
	for _, s := range st.snaps {
		c.Checked++
		if len(s.unsettled) == 0 {
			continue
		}
		oldest := s.unsettled[0].ID // XRANGE is in id order
		age := s.now.Sub(time.UnixMilli(int64(parseStreamID(oldest).ms)))
		if age > r.StuckAfter {
			c.Diffs = append(c.Diffs, fmt.Sprintf("partition %d: settlement stuck, oldest unsettled event %s is %s old (%d unsettled)",
				s.p, oldest, age.Round(time.Second), len(s.unsettled)))
			st.rep.InFlight -= len(s.unsettled)
		}
	}
	return c, nil
}

// noDeadLetters: an event the settler could not settle went to the
// partition's "-dead" stream; until someone settles it by hand, what it
// carries is missing from MySQL.
func (r *Reconciler) noDeadLetters(_ context.Context, st *state) (Check, error) {
	c := Check{Name: "no dead letters in any partition"}
	var total int64
	var parts []string
	var first map[string]any
	for _, s := range st.snaps {
		c.Checked++
		if s.dead > 0 {
			total += s.dead
			parts = append(parts, fmt.Sprintf("%d (%d)", s.p, s.dead))
			if first == nil {
				first = s.firstDead
			}
		}
	}
	if total > 0 {
		reason, _ := first["reason"].(string)
		c.Diffs = append(c.Diffs, fmt.Sprintf("%d dead letters in partitions %s; first reason: %q",
			total, strings.Join(parts, ", "), reason))
	}
	return c, nil
}

// shardMovesAddUp: no stock is lost or made between the shards of a sharded
// sale. Each shard's stock already accounts for what it gave (tout) and
// received (tin) (salesMatchOrders); here, per sale, what left some shard
// and reached none is exactly what its transit hashes still hold unapplied.
// The shards are on different partitions, read one after another, so a sale
// that differs (a transfer moving meanwhile) is read again once.
func (r *Reconciler) shardMovesAddUp(ctx context.Context, st *state) (Check, error) {
	c := Check{Name: "sharded sale: moved out - moved in = in transit"}
	parts := map[string][]int{}
	var ids []string
	for p, sales := range st.sales {
		for _, sr := range sales {
			if sr.shards > 1 {
				if parts[sr.id] == nil {
					ids = append(ids, sr.id)
				}
				parts[sr.id] = append(parts[sr.id], p)
			}
		}
	}
	for _, id := range ids {
		c.Checked++
		diff, err := r.movesDiff(ctx, id, parts[id])
		if err == nil && diff != "" {
			diff, err = r.movesDiff(ctx, id, parts[id])
		}
		if err != nil {
			return c, err
		}
		if diff != "" {
			c.Diffs = append(c.Diffs, diff)
		}
	}
	return c, nil
}

func (r *Reconciler) movesDiff(ctx context.Context, id string, parts []int) (string, error) {
	counts := make([]*redis.SliceCmd, len(parts))
	transits := make([]*redis.MapStringStringCmd, len(parts))
	_, err := r.Redis.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range parts {
			counts[i] = pipe.HMGet(ctx, r.Keys.Sale(p, id), "tin", "tout")
			transits[i] = pipe.HGetAll(ctx, r.Keys.Transit(p, id))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read moves of sale %s: %w", id, err)
	}
	var in, out, pending int64
	for i := range parts {
		v := counts[i].Val()
		in, out = in+atoi(v[0]), out+atoi(v[1])
		for tid, rec := range transits[i].Val() {
			// "dst_partition|units|at_ms", see sale_take.lua.
			f := strings.Split(rec, "|")
			dst, err := strconv.Atoi(f[0])
			if len(f) != 3 || err != nil {
				return fmt.Sprintf("sale %s: transfer %s malformed: %q", id, tid, rec), nil
			}
			applied, err := r.Redis.HExists(ctx, r.Keys.Applied(dst, id), tid).Result()
			if err != nil {
				return "", fmt.Errorf("read transfer %s of sale %s: %w", tid, id, err)
			}
			if !applied {
				pending += atoi(f[1])
			}
		}
	}
	if out-in > pending {
		// Units that left a shard and reached none, with no transfer for
		// them: a rebuild counted them twice (left unsold), or they were
		// lost.
		return fmt.Sprintf("sale %s: %d units stranded: shards gave %d and received %d, but %d are in transit", id, out-in-pending, out, in, pending), nil
	}
	if out-in != pending {
		return fmt.Sprintf("sale %s: shards gave %d and received %d, but %d are in transit", id, out, in, pending), nil
	}
	return "", nil
}
