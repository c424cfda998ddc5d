package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/panjf2000/ants/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// Settler drains the partition streams into MySQL. Each partition has one
// consumer group; a settler instance reads a batch per partition, applies it
// in one transaction through its ants pool, acknowledges the entries after the
// commit and trims the settled history, so the streams stay short. Entries left pending by a
// settler that died are claimed again after ClaimIdle. Run several instances
// (with distinct Consumer names) for availability.
//
// An event that cannot be settled for a reason of its own (an order id taken
// by another order, a value MySQL rejects) is isolated from its batch and,
// after Tries, moved to the partition's dead-letter stream, Keys.Events(p) +
// "-dead", with the reason; the rest of the partition settles. An outage
// (MySQL unreachable, deadlocks, lock timeouts, conflicts) never
// dead-letters anything: the batch waits and is retried.
//
// Make one with NewSettler. Run owns the partition goroutines: it returns
// once ctx is cancelled and every one of them has finished its batch.
type Settler struct {
	redis redis.UniversalClient
	// books is where events are settled: its DB, and its per-account turns,
	// which cover the API's writes too when the process shares one Books.
	books *Books
	keys  engine.Keyspace
	pool  *ants.Pool // bounds concurrent MySQL transactions across partitions

	// The options below are set by NewSettler; change them before Run.
	// BatchSize, Block and ClaimIdle must stay positive.

	Group     string        // consumer group; default "settlers"
	Consumer  string        // this instance's name; default host-pid
	BatchSize int64         // entries per batch; default 1000
	Block     time.Duration // idle wait per read; default 200ms
	ClaimIdle time.Duration // reclaim entries pending this long; default 30s
	// Linger is how long a partition waits after a batch smaller than
	// BatchSize before reading again (default 10ms; zero or negative:
	// never), so that a moderate stream of events becomes a few large
	// transactions rather than many small ones: fewer fsyncs in MySQL, fewer
	// XACKs in Redis.
	Linger time.Duration
	// Tries is how often an event that fails on its own, for a reason other
	// than an outage, is applied before it is dead-lettered (default 3).
	Tries   int
	Logger  *slog.Logger // default slog.Default()
	Metrics *Metrics     // optional
}

// NewSettler returns a settler of the partitions in keys that reads them
// through rdb (blocking one connection per partition: give it a client of
// its own), writes through books and runs its transactions on pool, with
// every option at its default. Apply needs books only; Run needs them all.
func NewSettler(rdb redis.UniversalClient, books *Books, keys engine.Keyspace, pool *ants.Pool) *Settler {
	host, _ := os.Hostname()
	return &Settler{
		redis:     rdb,
		books:     books,
		keys:      keys,
		pool:      pool,
		Group:     "settlers",
		Consumer:  host + "-" + strconv.Itoa(os.Getpid()),
		BatchSize: 1000,
		Block:     200 * time.Millisecond,
		ClaimIdle: 30 * time.Second,
		Linger:    10 * time.Millisecond,
		Tries:     3,
		Logger:    slog.Default(),
	}
}

// Run settles every partition until ctx is cancelled, then finishes the
// batches in flight (commit and acknowledge) and returns.
func (s *Settler) Run(ctx context.Context) error {
	if s.redis == nil {
		return errors.New("settler: nil Redis client")
	}
	if s.pool == nil {
		return errors.New("settler: nil ants pool")
	}
	if s.books == nil {
		return errors.New("settler: nil Books")
	}
	var wg sync.WaitGroup
	for p := 0; p < s.keys.Partitions; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runPartition(ctx, p)
		}()
	}
	wg.Wait()
	return nil
}

// runPartition is one partition's loop.
//
// After a restart it first settles its own pending entries ("0"), then new
// ones (">"), and every ClaimIdle/2 it claims entries another consumer left
// pending for ClaimIdle.
//
// A batch that fails is an outage: flush has already isolated and
// dead-lettered every event that failed on its own. The loop then retries
// what is left of that batch from memory, with backoff (only the entries
// still pending for it: XPENDING does not touch idle time), and does not read
// the stream again: re-reading its own pending entries would reset their idle
// time on every try, so that a settler that cannot reach MySQL while others
// can would hold them forever; left idle, they are claimed by a healthy
// settler after ClaimIdle (a double apply changes nothing). Reading new
// entries meanwhile would only fail the same way and pile them up in this
// consumer's pending list.
func (s *Settler) runPartition(ctx context.Context, p int) {
	stream := s.keys.Events(p)
	backoff := time.Duration(0)
	ownPending := true // entries this consumer read before a restart
	nextClaim := time.Time{}
	grouped := false             // the group is known to exist; created once, again only after NOGROUP
	var retry []redis.XMessage   // what is left of a batch that failed
	var orphans []redis.XMessage // a failed batch whose stream Redis lost: see settleOrphans
	for ctx.Err() == nil {
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		if len(orphans) > 0 {
			if err := s.settleOrphans(p, orphans); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = s.fail(p, "settle entries whose stream was lost", err, backoff)
				continue
			}
			orphans, grouped, backoff = nil, false, 0
			continue
		}
		var msgs []redis.XMessage
		if len(retry) > 0 {
			var err error
			var lost bool
			if msgs, lost, err = s.stillOwned(ctx, stream, retry); lost {
				orphans, retry = retry, nil
				continue
			} else if err != nil {
				if ctx.Err() != nil {
					return
				}
				if isNoGroup(err) {
					// The stream went with its entries: nothing left to retry.
					grouped, retry = false, nil
				}
				backoff = s.fail(p, "read pending entries", err, backoff)
				continue
			}
			retry = nil
			if len(msgs) == 0 {
				continue
			}
		} else {
			if !grouped {
				if err := s.ensureGroup(ctx, stream); err != nil {
					if ctx.Err() != nil {
						return
					}
					backoff = s.fail(p, "create consumer group", err, backoff)
					continue
				}
				grouped = true
			}
			var err error
			msgs, err = s.next(ctx, stream, &ownPending, &nextClaim)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if isNoGroup(err) {
					grouped = false // the stream was deleted (or Redis lost it): create it again
				}
				backoff = s.fail(p, "read stream", err, backoff)
				continue
			}
			// The backoff paces retries after a failure; a read that
			// worked ends it, or a backoff longer than ClaimIdle/2 would
			// have every turn claim (and find nothing) instead of read.
			backoff = 0
			if len(msgs) == 0 {
				continue
			}
		}
		if rest, err := s.flush(p, msgs); err != nil {
			retry = rest
			backoff = s.fail(p, "settle batch", err, backoff)
			continue
		}
		backoff = 0
		if int64(len(msgs)) < s.BatchSize && s.Linger > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.Linger):
			}
		}
	}
}

// next reads the partition's next batch: this consumer's own pending entries
// while ownPending, entries idle for ClaimIdle once nextClaim has passed, new
// entries otherwise. It may return none.
func (s *Settler) next(ctx context.Context, stream string, ownPending *bool, nextClaim *time.Time) ([]redis.XMessage, error) {
	switch {
	case *ownPending:
		msgs, err := s.read(ctx, stream, "0", -1)
		if err == nil && len(msgs) == 0 {
			*ownPending = false
		}
		return msgs, err
	case time.Now().After(*nextClaim):
		*nextClaim = time.Now().Add(s.ClaimIdle / 2)
		msgs, _, err := s.redis.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: stream, Group: s.Group, Consumer: s.Consumer,
			MinIdle: s.ClaimIdle, Start: "0-0", Count: s.BatchSize,
		}).Result()
		return msgs, err
	default:
		return s.read(ctx, stream, ">", s.Block)
	}
}

// stillOwned returns those of msgs still pending for this consumer: while it
// retried, another settler may have claimed them, settled or dead-lettered
// them. XPENDING, unlike a read, leaves their idle time alone.
// lost is true when Redis lost the stream and its group (a restart without
// persistence, a flush) while the batch waited: no pending list is left for
// anyone to claim the entries from, and this memory is their only copy.
func (s *Settler) stillOwned(ctx context.Context, stream string, msgs []redis.XMessage) (owned []redis.XMessage, lost bool, err error) {
	pending, err := s.redis.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: s.Group, Consumer: s.Consumer,
		Start: msgs[0].ID, End: msgs[len(msgs)-1].ID, Count: int64(len(msgs)) + s.BatchSize,
	}).Result()
	if redis.HasErrorPrefix(err, "NOGROUP") {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("pending entries of %s in %s: %w", s.Consumer, stream, err)
	}
	mine := make(map[string]bool, len(pending))
	for _, x := range pending {
		mine[x.ID] = true
	}
	owned = msgs[:0:0]
	for _, m := range msgs {
		if mine[m.ID] {
			owned = append(owned, m)
		}
	}
	return owned, false, nil
}

// settleOrphans settles a batch whose stream Redis lost while the batch
// waited for MySQL. The entries' epoch decides (epoch.go): before the
// partition's rebuild has raised it they are settled, and the rebuild, which
// waits for them, counts them; after, they are refused and dropped, as the
// other wins that went with the stream.
func (s *Settler) settleOrphans(p int, msgs []redis.XMessage) error {
	_, err := s.flush(p, msgs)
	return err
}

func (s *Settler) fail(p int, what string, err error, backoff time.Duration) time.Duration {
	s.Logger.Warn("settler: "+what+" failed; will retry", "partition", p, "err", err)
	if s.Metrics != nil {
		s.Metrics.Failures.Inc()
	}
	return min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
}

// ensureGroup creates the partition's consumer group (and its stream), or
// finds it there (BUSYGROUP). runPartition calls it once, and again only
// after a read answered NOGROUP: sent on every read it cost a round trip and
// an error reply each time (issue 11: 1,112 BUSYGROUP errors on one master).
func (s *Settler) ensureGroup(ctx context.Context, stream string) error {
	err := s.redis.XGroupCreateMkStream(ctx, stream, s.Group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("create group %s on %s: %w", s.Group, stream, err)
	}
	return nil
}

// isNoGroup reports whether Redis answered that the stream or its consumer
// group does not exist: deleted, or lost with a Redis that restarted empty.
// A read blocked on the stream when it was deleted is answered UNBLOCKED
// (Redis 7) instead.
func isNoGroup(err error) bool {
	return err != nil && (redis.HasErrorPrefix(err, "NOGROUP") ||
		redis.HasErrorPrefix(err, "UNBLOCKED") && strings.Contains(err.Error(), "no longer exists"))
}

func (s *Settler) read(ctx context.Context, stream, from string, block time.Duration) ([]redis.XMessage, error) {
	res, err := s.redis.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: s.Group, Consumer: s.Consumer, Streams: []string{stream, from},
		Count: s.BatchSize, Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil || len(res) == 0 {
		return nil, err
	}
	return res[0].Messages, nil
}

// entry is a stream entry and the events it carries (one, or every order of
// a grab batch). It is settled, dead-lettered and acknowledged as a whole.
type entry struct {
	msg redis.XMessage
	evs []flashgrab.Event
}

// flush settles one batch: entries deleted while pending are acknowledged,
// unreadable ones dead-lettered, and the events applied by settle. It runs to
// completion even when Run's context is cancelled, so shutdown never abandons
// a half-done batch. On an outage it returns the entries not yet settled,
// dead-lettered or acknowledged, for the caller to retry.
func (s *Settler) flush(p int, msgs []redis.XMessage) ([]redis.XMessage, error) {
	batch := make([]entry, 0, len(msgs))
	var gone []string
	for _, m := range msgs {
		if m.Values == nil { // deleted while pending: nothing left to settle
			gone = append(gone, m.ID)
			continue
		}
		evs, err := engine.ParseEntry(p, m)
		if err != nil {
			if err := s.deadLetter(p, m, err); err != nil {
				return msgs, err
			}
			continue
		}
		batch = append(batch, entry{m, evs})
	}
	if len(gone) > 0 {
		if err := s.ack(p, gone); err != nil {
			return msgs, err
		}
	}
	done := make(map[string]bool, len(batch))
	if err := s.settle(p, batch, done); err != nil {
		var rest []redis.XMessage
		for _, e := range batch {
			if !done[e.msg.ID] {
				rest = append(rest, e.msg)
			}
		}
		return rest, err
	}
	return nil, nil
}

// settle applies entries in one transaction and acknowledges them. When that
// fails for a reason other than an outage, some event in it cannot be
// settled: the halves are settled apart, in stream order, down to the lone
// event, which is tried Tries times and then dead-lettered, so that one bad
// event costs its batch about 2·log2(n) extra transactions and never holds
// the good ones. Every entry settled or dead-lettered is marked in done.
func (s *Settler) settle(p int, batch []entry, done map[string]bool) error {
	if len(batch) == 0 {
		return nil
	}
	err := s.apply(p, batch)
	var stale *StaleEpochError
	if errors.As(err, &stale) {
		return s.dropStale(p, batch, stale, done)
	}
	if err == nil || outage(err) {
		if err == nil {
			for _, e := range batch {
				done[e.msg.ID] = true
			}
		}
		return err
	}
	if len(batch) > 1 {
		half := len(batch) / 2
		if err := s.settle(p, batch[:half], done); err != nil {
			return err
		}
		return s.settle(p, batch[half:], done)
	}
	for try := 1; try < s.Tries; try++ {
		time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		if err = s.apply(p, batch); err == nil || outage(err) {
			if err == nil {
				done[batch[0].msg.ID] = true
			}
			return err
		}
	}
	if err := s.deadLetter(p, batch[0].msg, err); err != nil {
		return err
	}
	done[batch[0].msg.ID] = true
	return nil
}

// dropStale handles a batch refused with stale: the entries of an epoch
// older than the partition's are dropped (acknowledged, logged, counted:
// their wins went with the partition's Redis state, and the rebuild restored
// it from MySQL without them), and the rest is settled on its own.
func (s *Settler) dropStale(p int, batch []entry, stale *StaleEpochError, done map[string]bool) error {
	var old, rest []entry
	var ids []string
	events := 0
	for _, e := range batch {
		if ep := e.evs[0].Epoch; e.evs[0].Partition == stale.Partition && ep > 0 && ep < stale.Current {
			old, ids = append(old, e), append(ids, e.msg.ID)
			events += len(e.evs)
		} else {
			rest = append(rest, e)
		}
	}
	if len(old) == 0 { // the epoch moved on again between the check and now: try again
		return fmt.Errorf("partition %d: %w: %v", p, flashgrab.ErrUnavailable, stale)
	}
	if err := s.ack(p, ids); err != nil {
		return err
	}
	s.Logger.Error("settler: entries of an epoch before the partition's rebuild are dropped: the rebuild restored the partition from MySQL without them, and settling them now would count them twice",
		"partition", p, "entries", len(old), "events", events, "epoch", stale.Epoch, "current", stale.Current,
		"first", old[0].msg.ID, "last", old[len(old)-1].msg.ID)
	if s.Metrics != nil {
		s.Metrics.Stale.Add(float64(events))
	}
	for _, e := range old {
		done[e.msg.ID] = true
	}
	return s.settle(p, rest, done)
}

// apply commits entries' events in one transaction through the ants pool
// and, only after the commit, acknowledges and deletes the entries.
func (s *Settler) apply(p int, batch []entry) error {
	events := make([]flashgrab.Event, 0, len(batch))
	ids := make([]string, len(batch))
	for i, e := range batch {
		events, ids[i] = append(events, e.evs...), e.msg.ID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	if err := s.pool.Submit(func() {
		// ants recovers a task's panic and drops it: without an answer on
		// done this partition would wait here for good. A panic is the
		// events' fault as far as settling goes: the batch is split, and
		// the entry that panics alone is dead-lettered.
		defer func() {
			if v := recover(); v != nil {
				s.Logger.Error("settler: settling a batch panicked", "partition", p, "events", len(events),
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				done <- fmt.Errorf("settling panicked: %v", v)
			}
		}()
		done <- s.Apply(ctx, events)
	}); err != nil {
		return fmt.Errorf("submit batch: %w: %v", flashgrab.ErrUnavailable, err)
	}
	if err := <-done; err != nil {
		return err
	}
	if s.Metrics != nil {
		s.Metrics.observe(events, time.Since(start))
	}
	return s.ack(p, ids)
}

// outage reports whether err means MySQL (or Redis) could not do the work,
// rather than that the events themselves cannot be settled: unreachable,
// timed out, deadlocked, out of compare-and-set attempts, or failing for a
// reason of the server's own (a missing table, no permission, read-only).
// Only MySQL's data and integrity errors (SQLSTATE classes 22 and 23) and
// the settler's own checks (ErrOrderConflict, a missing account) are the
// events' fault.
func outage(err error) bool {
	if errors.Is(err, flashgrab.ErrUnavailable) || errors.Is(err, errConflict) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		class := string(me.SQLState[:2])
		return class != "22" && class != "23"
	}
	return false
}

// ack acknowledges settled entries and trims the stream up to the oldest
// entry still pending or unread (engine.AckSettled): one call, instead of an
// XDEL per entry. Failing, it reports an outage: the entries stay pending
// and their replay changes nothing.
func (s *Settler) ack(p int, ids []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := s.keys.Events(p)
	if _, err := engine.AckSettled(ctx, s.redis, stream, s.Group, ids...); err != nil {
		return fmt.Errorf("acknowledge %d entries of %s: %w: %v", len(ids), stream, flashgrab.ErrUnavailable, err)
	}
	return nil
}

// Apply writes a batch of events to MySQL in one transaction. Every write is
// keyed by its event, so applying the same events again changes nothing.
// Events of a partition epoch a rebuild has left fail it whole with a
// *StaleEpochError (epoch.go).
func (s *Settler) Apply(ctx context.Context, events []flashgrab.Event) error {
	if s.books == nil {
		return errors.New("settler: nil Books")
	}
	var postings []Posting
	for _, e := range events {
		postings = append(postings, postingsOf(e)...)
	}
	return s.books.Tx(ctx, func(tx *sql.Tx) error {
		if err := checkEpochs(ctx, tx, events); err != nil {
			return err
		}
		if err := s.insertSales(ctx, tx, events); err != nil {
			return err
		}
		if err := s.insertOrders(ctx, tx, events); err != nil {
			return err
		}
		if err := insertGrabs(ctx, tx, events); err != nil {
			return err
		}
		if err := closeRefunded(ctx, tx, events); err != nil {
			return err
		}
		_, err := post(ctx, tx, postings, false)
		return err
	}, accountsOf(postings))
}

// postingsOf returns the balance changes an event carries.
func postingsOf(e flashgrab.Event) []Posting {
	switch e.Kind {
	case flashgrab.EventGrab:
		g := e.Grab
		return []Posting{{EventID: "grab:" + g.PacketID + ":" + g.UserID, Account: g.UserID,
			Delta: g.AmountCents, Kind: "grab", Ref: g.PacketID}}
	case flashgrab.EventRefund:
		r := e.Refund
		return []Posting{{EventID: "refund:" + r.PacketID, Account: r.SenderID,
			Delta: r.AmountCents, Kind: "refund", Ref: r.PacketID}}
	}
	return nil
}

func (s *Settler) insertSales(ctx context.Context, tx *sql.Tx, events []flashgrab.Event) error {
	var args []any
	for _, e := range events {
		if e.Kind == flashgrab.EventSale {
			v := e.Sale
			args = append(args, v.ID, v.MerchantID, v.PriceCents, v.Stock, v.PerUserLimit, v.StartsAt, v.EndsAt,
				v.ShardCount(), engine.FormatParts(v.ShardPartitions))
		}
	}
	if len(args) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, "INSERT IGNORE INTO sales (id, merchant_id, price_cents, stock, per_user_limit, starts_at, ends_at, shards, shard_partitions) VALUES "+
		placeholders(len(args)/9, "(?,?,?,?,?,?,?,?,?)"), args...)
	return unavailable(err)
}

// insertOrders writes the batch's orders. INSERT IGNORE makes a replay
// harmless; checkOrders then makes sure that what was ignored was the same
// order and not another one under the same id.
func (s *Settler) insertOrders(ctx context.Context, tx *sql.Tx, events []flashgrab.Event) error {
	var args []any
	var orders []flashgrab.Order
	for _, e := range events {
		if e.Kind == flashgrab.EventOrder {
			o := e.Order
			orders = append(orders, o)
			args = append(args, o.ID, o.SaleID, o.UserID, o.MerchantID, o.Qty, o.AmountCents,
				o.CreatedAt, o.CreatedAt.Add(s.books.orderTTL()), e.ID, idemKey(o))
		}
	}
	if len(args) == 0 {
		return nil
	}
	res, err := tx.ExecContext(ctx, "INSERT IGNORE INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, expires_at, event_id, idem_key) VALUES "+
		placeholders(len(args)/10, "(?,?,?,?,?,?,?,?,?,?)"), args...)
	if err != nil {
		return unavailable(err)
	}
	// Every row inserted (the common case: no replay) leaves nothing that
	// could be another order under the same id; only a batch that had rows
	// ignored is read back.
	if n, err := res.RowsAffected(); err == nil && n == int64(len(orders)) {
		return nil
	}
	return checkOrders(ctx, tx, orders)
}

// idemKey is the orders.idem_key of o: NULL when its key is not known.
func idemKey(o flashgrab.Order) any {
	if !o.KeyKnown {
		return nil
	}
	return o.Key
}

// ErrOrderConflict means an order id is already taken by a different order
// (another buyer, sale, merchant, quantity or amount): two winners were given
// one id. Ignoring it would let the second buyer's payment settle the first
// buyer's order, so it fails the write instead; the settler dead-letters the
// event.
var ErrOrderConflict = errors.New("order id taken by a different order")

// queryer is what checkOrders reads through: a transaction or the pool.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// checkOrders reads back the orders just inserted with INSERT IGNORE and fails
// with ErrOrderConflict when a row under one of their ids holds a different
// order. An identical row (a replay) passes.
func checkOrders(ctx context.Context, q queryer, orders []flashgrab.Order) error {
	ids := make([]any, len(orders))
	for i, o := range orders {
		ids[i] = o.ID
	}
	rows, err := q.QueryContext(ctx, "SELECT id, sale_id, user_id, merchant_id, qty, amount_cents FROM orders WHERE id IN ("+
		placeholders(len(ids), "?")+")", ids...)
	if err != nil {
		return unavailable(err)
	}
	defer rows.Close()
	have := make(map[string]flashgrab.Order, len(orders))
	for rows.Next() {
		var o flashgrab.Order
		if err := rows.Scan(&o.ID, &o.SaleID, &o.UserID, &o.MerchantID, &o.Qty, &o.AmountCents); err != nil {
			return unavailable(err)
		}
		have[o.ID] = o
	}
	if err := rows.Err(); err != nil {
		return unavailable(err)
	}
	for _, o := range orders {
		h, ok := have[o.ID]
		if !ok {
			return fmt.Errorf("order %s: not found after insert: %w", o.ID, flashgrab.ErrUnavailable)
		}
		if h.SaleID != o.SaleID || h.UserID != o.UserID || h.MerchantID != o.MerchantID || h.Qty != o.Qty || h.AmountCents != o.AmountCents {
			return fmt.Errorf("order %s for user %s (sale %s, merchant %s, qty %d, %d fen): id held by user %s (sale %s, merchant %s, qty %d, %d fen): %w",
				o.ID, o.UserID, o.SaleID, o.MerchantID, o.Qty, o.AmountCents, h.UserID, h.SaleID, h.MerchantID, h.Qty, h.AmountCents, ErrOrderConflict)
		}
	}
	return nil
}
