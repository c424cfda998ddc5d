package settle

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// Rebuilder restores partitions whose Redis state was lost, from MySQL
// (issue 9 item 2). A partition without its epoch marker is fenced by the
// scripts (engine/rebuild.go); the rebuilder that takes the partition's lock
// (MySQL GET_LOCK, one per partition and key prefix) settles what the
// partition's stream still holds, reads the partition from MySQL, restores
// it through the engine and writes the marker last. A partition MySQL knows
// nothing of (a fresh deployment) only gets its marker. Every instance may
// run one: the others find the lock taken and wait, their grabs answering
// 503, until the marker is back. Make one with NewRebuilder.
type Rebuilder struct {
	engine  *engine.Engine
	books   *Books
	settler *Settler // its Apply settles the stream's events first

	// Interval is how often Run checks the markers (default 1s; a fenced
	// answer makes it check at once).
	Interval time.Duration
	Logger   *slog.Logger // default slog.Default()
}

// NewRebuilder returns a rebuilder restoring eng's partitions from books,
// settling stream events through settler's Apply, with every option at its
// default.
func NewRebuilder(eng *engine.Engine, books *Books, settler *Settler) *Rebuilder {
	return &Rebuilder{engine: eng, books: books, settler: settler, Interval: time.Second, Logger: slog.Default()}
}

// Outcomes of a partition's rebuild.
const (
	RebuildIntact      = "intact"      // the marker was there: nothing to do
	RebuildInitialised = "initialised" // MySQL knows nothing of the partition: marker written
	RebuildDone        = "rebuilt"     // state restored from MySQL, marker written
	RebuildBusy        = "busy"        // another instance holds the partition's lock
)

// RebuildResult is what one partition's rebuild did.
type RebuildResult struct {
	Partition int
	Outcome   string
	// EventsSettled counts the stream entries settled before MySQL was read.
	EventsSettled int
	engine.Restored
	// PacketsRefunded counts expired packets whose keys were gone, refunded
	// from MySQL (RefundedCents in all); StrandedResolved the orders whose
	// stock had been stranded (released = 2) and is now back in the sale.
	PacketsRefunded  int
	RefundedCents    int64
	StrandedResolved int
	// ShardStockShort is the units a restored shard's stock came out below
	// 0 by, clamped: counted twice or more by its rebuild, they are not
	// sold (reconcile's moves check shows them).
	ShardStockShort int64
}

func (r RebuildResult) String() string {
	if r.Outcome != RebuildDone {
		return fmt.Sprintf("partition %d: %s", r.Partition, r.Outcome)
	}
	return fmt.Sprintf("partition %d: rebuilt: %d stream events settled first; restored %d sales, %d buyer sets, %d order records, %d live packets; "+
		"%d expired packets refunded from MySQL (%d fen); %d stranded orders resolved; %d shard units short",
		r.Partition, r.EventsSettled, r.Sales, r.Buyers, r.Orders, r.Packets, r.PacketsRefunded, r.RefundedCents, r.StrandedResolved, r.ShardStockShort)
}

// Run checks every partition's marker each Interval (and at once when the
// engine saw a fenced answer) and rebuilds those that lost it, until ctx
// ends. Its first round runs at once: on a fresh deployment it writes the
// markers.
func (r *Rebuilder) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		if missing, err := r.engine.MissingEpochs(ctx); err != nil {
			if ctx.Err() == nil {
				r.Logger.Warn("rebuilder: check epoch markers failed; will retry", "err", err)
			}
		} else {
			for _, p := range missing {
				res, err := r.Rebuild(ctx, p)
				switch {
				case err != nil && ctx.Err() == nil:
					r.Logger.Error("rebuilder: rebuild failed; will retry", "partition", p, "err", err)
				case err == nil && res.Outcome == RebuildDone:
					r.Logger.Warn("rebuilder: Redis had lost the partition's state; rebuilt from MySQL", "partition", p, "result", res.String())
				case err == nil && res.Outcome == RebuildInitialised:
					r.Logger.Info("rebuilder: partition initialised", "partition", p)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.engine.FenceSeen():
		}
	}
}

// RebuildAll rebuilds every partition that lost its marker, in order, and
// returns what each one did.
func (r *Rebuilder) RebuildAll(ctx context.Context) ([]RebuildResult, error) {
	var out []RebuildResult
	for p := range r.engine.Keys().Partitions {
		res, err := r.Rebuild(ctx, p)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// rebuildLock names partition p's rebuild lock, given the database and key
// prefix as its arguments: GET_LOCK's locks are the server's, shared by every
// database on it, and their names are at most 64 characters, so the database
// and the prefix go in as a digest.
const rebuildLock = `CONCAT('flashgrab:rebuild:', MD5(CONCAT(DATABASE(), ':', ?)), ':', ?)`

// Rebuild restores partition p from MySQL if its marker is missing and no
// other instance is at it (RebuildBusy).
func (r *Rebuilder) Rebuild(ctx context.Context, p int) (RebuildResult, error) {
	res := RebuildResult{Partition: p}
	keys := r.engine.Keys()
	if p < 0 || p >= keys.Partitions {
		return res, fmt.Errorf("rebuild partition %d: there are %d partitions", p, keys.Partitions)
	}
	// The lock lives as long as its connection: a rebuilder that dies
	// frees it.
	conn, err := r.books.DB.Conn(ctx)
	if err != nil {
		return res, fmt.Errorf("rebuild partition %d: %w", p, unavailable(err))
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(`+rebuildLock+`, 0)`, keys.Prefix, p).Scan(&got); err != nil {
		return res, fmt.Errorf("rebuild partition %d: take its lock: %w", p, unavailable(err))
	}
	if got.Int64 != 1 {
		res.Outcome = RebuildBusy
		return res, nil
	}
	defer conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK(`+rebuildLock+`)`, keys.Prefix, p)

	// Under the lock, the marker may be back already (a rebuild that
	// finished just before).
	if ok, err := r.engine.HasEpoch(ctx, p); err != nil || ok {
		res.Outcome = RebuildIntact
		return res, err
	}
	var epoch int64
	if res.EventsSettled, epoch, err = r.closeEpoch(ctx, p); err != nil {
		return res, fmt.Errorf("rebuild partition %d: %w", p, err)
	}
	st, expired, stranded, err := r.books.partitionState(ctx, keys, p)
	if err != nil {
		return res, fmt.Errorf("rebuild partition %d: %w", p, err)
	}
	if len(st.Sales) == 0 && len(st.Shards) == 0 && len(st.Packets) == 0 && len(expired) == 0 && len(stranded) == 0 {
		res.Outcome = RebuildInitialised
		return res, r.engine.MarkEpoch(ctx, p, epoch)
	}
	if len(expired) > 0 {
		inRedis, err := r.engine.PacketsInRedis(ctx, expired)
		if err != nil {
			return res, fmt.Errorf("rebuild partition %d: %w", p, err)
		}
		for _, id := range expired {
			if inRedis[id] {
				continue // the sweeper expires it through Redis
			}
			cents, done, err := r.books.RefundLostPacket(ctx, id)
			if err != nil {
				return res, fmt.Errorf("rebuild partition %d: %w", p, err)
			}
			if done {
				res.PacketsRefunded++
				res.RefundedCents += cents
			}
		}
	}
	// Each sharded sale's lock is held from the shard's stock being
	// counted until it is restored (conn's locks go with it).
	short, release, err := r.shardState(ctx, conn, p, &st, &stranded)
	defer release()
	if err != nil {
		return res, fmt.Errorf("rebuild partition %d: %w", p, err)
	}
	res.ShardStockShort = short
	// Stranded orders are resolved before their units go back, not after:
	// st counts them as not held either way, so a Restore that fails leaves
	// them resolved and the retry restores the same stock, whereas a
	// resolve that failed after a Restore was never retried (the retry
	// finds the sale's hash written and does not count it as restored).
	if len(stranded) > 0 {
		absent, err := r.engine.SalesAbsent(ctx, p, st.SaleIDs())
		if err != nil {
			return res, fmt.Errorf("rebuild partition %d: %w", p, err)
		}
		if res.StrandedResolved, err = r.books.resolveStranded(ctx, stranded, absent); err != nil {
			return res, fmt.Errorf("rebuild partition %d: %w", p, err)
		}
	}
	if testHookBeforeRestore != nil {
		if err := testHookBeforeRestore(p); err != nil {
			return res, fmt.Errorf("rebuild partition %d: %w", p, err)
		}
	}
	if res.Restored, err = r.engine.Restore(ctx, p, st); err != nil {
		return res, fmt.Errorf("rebuild partition %d: %w", p, err)
	}
	if err := r.engine.MarkEpoch(ctx, p, epoch); err != nil {
		return res, err
	}
	res.Outcome = RebuildDone
	return res, nil
}

// testHookBeforeRestore, when set (by a test), runs in Rebuild just before
// the partition's keys are written; an error it returns fails the rebuild
// there, as a Redis that went away at that instant would.
var testHookBeforeRestore func(p int) error

// shardLock names a sharded sale's rebuild lock, given the key prefix and
// the sale id: the rebuilds of its shards' partitions take turns, so each
// one counts the shards restored before it and none gives the same units.
const shardLock = `CONCAT('flashgrab:shard:', MD5(CONCAT(DATABASE(), ':', ?, ':', ?)))`

// shardState fills in the stock, sold count and orders of the shards of
// sharded sales on partition p (st.Shards), taking each sale's lock on
// conn (released with it) so that no other partition's rebuild restores a
// shard of the sale meanwhile. A lost shard i of a sale gets
//
//	initial − Σ levels of the other shards present (stock + sold)
//	        − units in transit
//	        − units held by MySQL's orders of shard i and of the shards absent,
//
// read in that order: a grab between the reads is counted twice (a unit
// left unsold), never missed. It returns the units clamped off (a stock
// below 0). Shard i's own stranded orders (released = 2) hold nothing: their
// units are in the stock it gets, and their ids are added to stranded, for
// resolveStranded once the shard is restored.
//
// release lets the locks go (conn goes back to the pool, not away): call
// it once the shards are restored, whatever the error.
func (r *Rebuilder) shardState(ctx context.Context, conn *sql.Conn, p int, st *engine.PartitionState, stranded *[]string) (short int64, release func(), err error) {
	var locked []string
	release = func() {
		for _, id := range locked {
			conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK(`+shardLock+`)`, r.engine.Keys().Prefix, id)
		}
	}
	short, err = r.shardLevels(ctx, conn, p, st, stranded, &locked)
	return short, release, err
}

func (r *Rebuilder) shardLevels(ctx context.Context, conn *sql.Conn, p int, st *engine.PartitionState, stranded, locked *[]string) (int64, error) {
	var short int64
	for n := range st.Shards {
		sh := &st.Shards[n]
		s := sh.Sale
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(`+shardLock+`, 10)`, r.engine.Keys().Prefix, s.ID).Scan(&got); err != nil {
			return 0, fmt.Errorf("take the lock of sharded sale %s: %w", s.ID, unavailable(err))
		}
		if got.Int64 != 1 {
			return 0, fmt.Errorf("take the lock of sharded sale %s: another rebuild holds it", s.ID)
		}
		*locked = append(*locked, s.ID)
		lv, err := r.engine.SaleShardLevels(ctx, s.ID, s.ShardPartitions)
		if err != nil {
			return 0, err
		}
		// Absent shards sell nothing (their partitions are fenced, and
		// only a rebuild, under this lock, brings them back): what their
		// streams hold goes to MySQL before it is read, and their epochs
		// end, so that no batch of theirs in flight lands after the read.
		for j, q := range s.ShardPartitions {
			if !lv.Present[j] && q != p {
				if err := r.closeOtherEpoch(ctx, conn, q); err != nil {
					return 0, fmt.Errorf("sale %s shard %d: %w", s.ID, j, err)
				}
			}
		}
		orders, err := r.books.heldOrders(ctx, s.ID)
		if err != nil {
			return 0, err
		}
		stock := s.Stock - lv.Transit
		for j, level := range lv.Level {
			if j != sh.Index {
				stock -= level
			}
		}
		for _, o := range orders {
			q, err := strconv.Atoi(o.ID[strings.LastIndexByte(o.ID, '-')+1:]) // <snowflake>-<partition>
			j := slices.Index(s.ShardPartitions, q)
			switch {
			case err == nil && j == sh.Index && o.stranded:
				// Its release found this shard's keys gone and gave
				// nothing back: its units are in the stock counted here
				// (the order was cancelled, so neither sold nor its
				// buyer's), and it is resolved once the shard is restored.
				*stranded = append(*stranded, o.ID)
			case err == nil && j == sh.Index:
				sh.Sold += o.Qty
				st.Orders = append(st.Orders, o.Order)
			case err == nil && j >= 0 && lv.Present[j]:
				// In that shard's level (a stranded order of a present
				// shard too: that shard came back counting it as sold).
			default:
				// A shard still absent: its orders, stranded ones
				// included, are held until its own rebuild counts them.
				stock -= o.Qty
			}
		}
		stock -= sh.Sold
		if stock < 0 {
			short += -stock
			stock = 0
		}
		sh.Stock = stock
	}
	return short, nil
}

// closeEpoch ends partition p's epoch before its state is read from MySQL:
// it settles what MySQL must know first (settleFirst), then raises p's epoch
// (Books.bumpEpoch), which waits for the settler batches already past their
// epoch check; any later batch read from p's stream before the loss is
// refused. It returns the events settled and the new epoch. p is fenced
// (its marker is missing), so no entry joins its stream meanwhile.
func (r *Rebuilder) closeEpoch(ctx context.Context, p int) (settled int, epoch int64, err error) {
	if settled, err = r.settleFirst(ctx, p); err != nil {
		return 0, 0, err
	}
	epoch, err = r.books.bumpEpoch(ctx, p)
	return settled, epoch, err
}

// closeOtherEpoch settles partition q's stream, q holding an absent shard
// of a sale partition p's rebuild restores, and ends q's epoch when q lost
// its marker (closeEpoch), under q's rebuild lock taken on conn: without the
// lock, q's own rebuild could write its marker between the check and the
// raise, leaving every later entry of q an epoch behind MySQL. The lock is
// only tried: when q's rebuild holds it, this one fails and is retried
// (q's rebuild may need the sale's lock this one holds).
func (r *Rebuilder) closeOtherEpoch(ctx context.Context, conn *sql.Conn, q int) error {
	prefix := r.engine.Keys().Prefix
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(`+rebuildLock+`, 0)`, prefix, q).Scan(&got); err != nil {
		return fmt.Errorf("take partition %d's rebuild lock: %w", q, unavailable(err))
	}
	if got.Int64 != 1 {
		return fmt.Errorf("partition %d is being rebuilt by another instance: %w", q, flashgrab.ErrUnavailable)
	}
	defer conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK(`+rebuildLock+`)`, prefix, q)
	marked, err := r.engine.HasEpoch(ctx, q)
	if err != nil {
		return err
	}
	if marked {
		_, err = r.settleStream(ctx, q)
	} else {
		_, _, err = r.closeEpoch(ctx, q)
	}
	return err
}

// settleFirst settles what MySQL must know before partition p is read:
// what p's stream still holds (settleStream), and the creations of sharded
// sales with a shard on p that other partitions' streams hold unsettled (a
// sharded sale's creation is recorded on shard 0's partition only): without
// them a shard lost before its sale's creation settled would not be
// restored, and its partition would be marked rebuilt without it.
func (r *Rebuilder) settleFirst(ctx context.Context, p int) (int, error) {
	n, err := r.settleStream(ctx, p)
	if err != nil {
		return 0, err
	}
	sales, err := r.engine.ShardedSaleCreations(ctx, p)
	if err != nil {
		return 0, fmt.Errorf("settle sharded sales' creations first: %w", err)
	}
	if err := r.apply(ctx, p, sales); err != nil {
		return 0, err
	}
	return n + len(sales), nil
}

// settleStream applies what partition p's stream still holds, so that MySQL
// counts every win Redis kept (when only some keys were lost) before it is
// read: nothing is then sold twice. The entries stay for the settler, whose
// replay changes nothing.
func (r *Rebuilder) settleStream(ctx context.Context, p int) (int, error) {
	events, err := r.engine.PartitionEvents(ctx, p)
	if err != nil {
		return 0, err
	}
	if err := r.apply(ctx, p, events); err != nil {
		return 0, err
	}
	return len(events), nil
}

// apply settles events for partition p's rebuild, 500 at a time. An event
// that cannot be settled is skipped here (the settler dead-letters it).
func (r *Rebuilder) apply(ctx context.Context, p int, events []flashgrab.Event) error {
	for rest := events; len(rest) > 0; {
		n := min(len(rest), 500)
		if err := r.settler.Apply(ctx, rest[:n]); err != nil {
			if outage(err) {
				return fmt.Errorf("settle the stream first: %w", err)
			}
			for _, ev := range rest[:n] {
				if err := r.settler.Apply(ctx, []flashgrab.Event{ev}); err != nil {
					if outage(err) {
						return fmt.Errorf("settle the stream first: %w", err)
					}
					r.Logger.Error("rebuilder: stream event cannot be settled; left for the settler", "partition", p,
						"stream_partition", ev.Partition, "id", ev.ID, "err", err)
				}
			}
		}
		rest = rest[n:]
	}
	return nil
}
