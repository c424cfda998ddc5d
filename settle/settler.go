package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/engine"
)

// Settler drains the partition streams into MySQL. Each partition has one
// consumer group; a settler instance reads a batch per partition, applies it
// in one transaction through its ants pool, acknowledges the entries after the
// commit and deletes them, so the streams stay short. Entries left pending by a
// settler that died are claimed again after ClaimIdle. Run several instances
// (with distinct Consumer names) for availability.
type Settler struct {
	Redis redis.UniversalClient
	DB    *sql.DB
	Keys  engine.Keyspace
	Pool  *ants.Pool // bounds concurrent MySQL transactions across partitions

	Group     string        // consumer group; default "settlers"
	Consumer  string        // this instance's name; default host-pid
	BatchSize int64         // entries per batch; default 1000
	Block     time.Duration // idle wait per read; default 200ms
	ClaimIdle time.Duration // reclaim entries pending this long; default 30s
	// Linger is how long a partition waits after a batch smaller than
	// BatchSize before reading again (default 10ms; negative: never), so that
	// a moderate stream of events becomes a few large transactions rather
	// than many small ones: fewer fsyncs in MySQL, fewer XACKs in Redis.
	Linger  time.Duration
	Logger  *slog.Logger
	Metrics *Metrics // optional
	// Books posts the balance changes; nil makes one on DB. Share the
	// process's Books so its per-account turns cover the API's writes too.
	Books *Books

	once sync.Once
}

func (s *Settler) defaults() {
	s.once.Do(func() {
		if s.Group == "" {
			s.Group = "settlers"
		}
		if s.Consumer == "" {
			host, _ := os.Hostname()
			s.Consumer = host + "-" + strconv.Itoa(os.Getpid())
		}
		if s.BatchSize <= 0 {
			s.BatchSize = 1000
		}
		if s.Block <= 0 {
			s.Block = 200 * time.Millisecond
		}
		if s.ClaimIdle <= 0 {
			s.ClaimIdle = 30 * time.Second
		}
		if s.Linger == 0 {
			s.Linger = 10 * time.Millisecond
		}
		if s.Logger == nil {
			s.Logger = slog.Default()
		}
		if s.Books == nil {
			s.Books = &Books{DB: s.DB}
		}
	})
}

// Run settles every partition until ctx is cancelled, then finishes the
// batches in flight (commit and acknowledge) and returns.
func (s *Settler) Run(ctx context.Context) error {
	s.defaults()
	if s.Pool == nil {
		return errors.New("settler: nil ants pool")
	}
	var wg sync.WaitGroup
	for p := 0; p < s.Keys.Partitions; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runPartition(ctx, p)
		}()
	}
	wg.Wait()
	return nil
}

// runPartition is one partition's loop. After a failed batch it reads its own
// pending entries ("0") before any new ones (">"), so a batch that failed is
// retried, in order, until it commits.
func (s *Settler) runPartition(ctx context.Context, p int) {
	stream := s.Keys.Events(p)
	backoff := time.Duration(0)
	ownPending := true // entries this consumer read before a restart
	nextClaim := time.Time{}
	for ctx.Err() == nil {
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		if err := s.ensureGroup(ctx, stream); err != nil {
			backoff = s.fail(p, "create group", err, backoff)
			continue
		}
		var msgs []redis.XMessage
		var err error
		switch {
		case ownPending:
			msgs, err = s.read(ctx, stream, "0", -1)
			if err == nil && len(msgs) == 0 {
				ownPending = false
				continue
			}
		case time.Now().After(nextClaim):
			nextClaim = time.Now().Add(s.ClaimIdle / 2)
			msgs, _, err = s.Redis.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: stream, Group: s.Group, Consumer: s.Consumer,
				MinIdle: s.ClaimIdle, Start: "0-0", Count: s.BatchSize,
			}).Result()
			if err == nil && len(msgs) == 0 {
				continue
			}
		default:
			msgs, err = s.read(ctx, stream, ">", s.Block)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = s.fail(p, "read stream", err, backoff)
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		if err := s.flush(p, msgs); err != nil {
			ownPending = true
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

func (s *Settler) fail(p int, what string, err error, backoff time.Duration) time.Duration {
	s.Logger.Warn("settler: "+what+" failed; will retry", "partition", p, "err", err)
	if s.Metrics != nil {
		s.Metrics.Failures.Inc()
	}
	return min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
}

func (s *Settler) ensureGroup(ctx context.Context, stream string) error {
	err := s.Redis.XGroupCreateMkStream(ctx, stream, s.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

func (s *Settler) read(ctx context.Context, stream, from string, block time.Duration) ([]redis.XMessage, error) {
	res, err := s.Redis.XReadGroup(ctx, &redis.XReadGroupArgs{
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

// flush applies one batch in the ants pool and, only after the commit,
// acknowledges and deletes its entries. It runs to completion even when Run's
// context is cancelled, so shutdown never abandons a half-done batch.
func (s *Settler) flush(p int, msgs []redis.XMessage) error {
	events := make([]engine.Event, 0, len(msgs))
	var poison []redis.XMessage
	for _, m := range msgs {
		if m.Values == nil { // deleted while pending: nothing left to settle
			poison = append(poison, m)
			continue
		}
		ev, err := engine.ParseEvent(p, m)
		if err != nil {
			s.Logger.Error("settler: unreadable event moved to dead-letter stream", "partition", p, "id", m.ID, "err", err)
			poison = append(poison, m)
			continue
		}
		events = append(events, ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	if err := s.Pool.Submit(func() { done <- s.Apply(ctx, events) }); err != nil {
		return fmt.Errorf("submit batch: %w", err)
	}
	if err := <-done; err != nil {
		return err
	}
	if s.Metrics != nil {
		s.Metrics.observe(events, time.Since(start))
	}
	return s.ack(ctx, p, msgs, poison)
}

func (s *Settler) ack(ctx context.Context, p int, msgs, poison []redis.XMessage) error {
	stream := s.Keys.Events(p)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	_, err := s.Redis.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, m := range poison {
			if m.Values != nil {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream + "-dead", Values: m.Values})
			}
		}
		pipe.XAck(ctx, stream, s.Group, ids...)
		pipe.XDel(ctx, stream, ids...)
		return nil
	})
	if err != nil {
		// The batch is committed; left pending, it is replayed later and the
		// replay changes nothing.
		return fmt.Errorf("acknowledge %d entries: %w", len(ids), err)
	}
	return nil
}

// Apply writes a batch of events to MySQL in one transaction. Every write is
// keyed by its event, so applying the same events again changes nothing.
func (s *Settler) Apply(ctx context.Context, events []engine.Event) error {
	s.defaults()
	var postings []Posting
	for _, e := range events {
		postings = append(postings, postingsOf(e)...)
	}
	return s.Books.Tx(ctx, func(tx *sql.Tx) error {
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
func postingsOf(e engine.Event) []Posting {
	switch e.Kind {
	case engine.EventGrab:
		g := e.Grab
		return []Posting{{EventID: "grab:" + g.PacketID + ":" + g.UserID, Account: g.UserID,
			Delta: g.AmountCents, Kind: "grab", Ref: g.PacketID}}
	case engine.EventRefund:
		r := e.Refund
		return []Posting{{EventID: "refund:" + r.PacketID, Account: r.SenderID,
			Delta: r.AmountCents, Kind: "refund", Ref: r.PacketID}}
	}
	return nil
}

func (s *Settler) insertSales(ctx context.Context, tx *sql.Tx, events []engine.Event) error {
	var args []any
	for _, e := range events {
		if e.Kind == engine.EventSale {
			v := e.Sale
			args = append(args, v.ID, v.MerchantID, v.PriceCents, v.Stock, v.PerUserLimit, v.StartsAt, v.EndsAt)
		}
	}
	if len(args) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, "INSERT IGNORE INTO sales (id, merchant_id, price_cents, stock, per_user_limit, starts_at, ends_at) VALUES "+
		placeholders(len(args)/7, "(?,?,?,?,?,?,?)"), args...)
	return unavailable(err)
}

func (s *Settler) insertOrders(ctx context.Context, tx *sql.Tx, events []engine.Event) error {
	var args []any
	for _, e := range events {
		if e.Kind == engine.EventOrder {
			o := e.Order
			args = append(args, o.ID, o.SaleID, o.UserID, o.MerchantID, o.Qty, o.AmountCents,
				o.CreatedAt, o.CreatedAt.Add(s.Books.orderTTL()), e.ID)
		}
	}
	if len(args) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, "INSERT IGNORE INTO orders (id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, expires_at, event_id) VALUES "+
		placeholders(len(args)/9, "(?,?,?,?,?,?,?,?,?)"), args...)
	return unavailable(err)
}
