// Package engine runs flashgrab's sales and red packets over Redis: Lua
// scripts decide every grab atomically and append the win to its
// partition's settlement stream in the same step. It lays out the keys and
// partitions, generates ids, coalesces concurrent grabs into one script call,
// keeps the sold-out mark, and reads stream entries back as events
// (ParseEntry). The vocabulary it speaks (Sale, Order, Packet, Event, the
// errors) is the root package flashgrab's.
package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/scripts"
)

// DefaultRetention is how long Redis keeps finished records by default.
const DefaultRetention = 7 * 24 * time.Hour

// Config wires an Engine. Redis and Keys are required.
type Config struct {
	Redis redis.UniversalClient
	Keys  Keyspace
	// IDs generates order and packet ids. A deployment passes a generator
	// whose node is leased (NewLeasedIDs, held by cmd/flashgrab with
	// settle.NodeLease); nil gives a fixed node distinct among this
	// process's engines, enough for tests and benchmarks.
	IDs *IDs
	// Retention is how long Redis keeps an order's record, and a red packet
	// once emptied or expired (default 7 days). It must outlast the
	// unpaid-order deadline, since expiry reads the order record to return
	// the stock. MySQL keeps orders and packets for good.
	Retention time.Duration

	// NoCoalesce sends one script call per grab instead of batching
	// concurrent grabs of a target (the baseline of the benchmarks).
	NoCoalesce bool
	// MaxBatch bounds the users one script call decides (default 64).
	MaxBatch int
	// MaxPipelines bounds the round trips to Redis in flight at once for
	// coalesced grabs (default 4); batches ready meanwhile share the next.
	MaxPipelines int

	// Durability is the guarantee a won grab carries when answered
	// (durability.go); empty is DurabilityNone. Only DurabilityReplica
	// changes what the engine sends: a WAIT after every round of writes.
	Durability Durability
	// WaitTimeout bounds DurabilityReplica's WAIT (default 50ms).
	WaitTimeout time.Duration

	// SoldOutTTL is how long a sale seen with no stock left is answered
	// "sold out" from memory before Redis is asked again (default 1s): the
	// longest a grab can be refused while an expired order's stock is back.
	// Negative turns the mark off.
	SoldOutTTL time.Duration
	// SoldOutMaxBuyers is the largest buyers hash the mark loads (default
	// 1,000,000 fields); a sale with more is always asked in Redis.
	SoldOutMaxBuyers int
	// Clock tells the sold-out mark the time; nil is time.Now. Tests set it.
	Clock func() time.Time

	// DetectLoss leaves the partitions' epoch markers to a rebuilder
	// (settle.Rebuilder): a partition without one stays fenced (grabs and
	// creates answer ErrRebuilding) until it is initialised or rebuilt from
	// MySQL. serve sets it. Off (tests, benchmarks), New writes every
	// missing marker itself, as on a fresh deployment.
	DetectLoss bool
}

// Engine runs sales and red packets over Redis. It is safe for concurrent use.
type Engine struct {
	rdb  redis.UniversalClient
	keys Keyspace
	ids  *IDs

	retention  time.Duration
	durability Durability

	saleCreate   *redis.Script
	saleGrab     *redis.Script
	orderRelease *redis.Script
	packetCreate *redis.Script
	packetGrab   *redis.Script
	packetExpire *redis.Script
	// The rebuild's restores (rebuild.go).
	saleRestore   *redis.Script
	packetRestore *redis.Script
	// The sharded sale's scripts (shard.go).
	saleShardCreate, saleTake, saleGive *redis.Script

	// Coalescing of grabs (coalesce.go), the sold-out mark (soldout.go) and
	// the sale heads grabs reuse (sale.go), each with what this engine knows
	// of its sale's layout (shard.go).
	batch   *batcher
	soldOut *soldOutMarks
	heads   headCache[saleHead]
	pkts    headCache[packetHead]
	bg      *background // the goroutines of batch, soldOut and the breakers' probes; Close stops them
	// breakers fail calls to an unreachable Redis node fast (breaker.go).
	breakers *breakers
	// fences tracks partitions without their epoch marker (rebuild.go).
	fences *fences
}

// New returns an Engine and loads its scripts into Redis (a later NOSCRIPT,
// after a Redis restart, reloads them transparently). It adds a hook to the
// Redis client (to each node client of a cluster): the circuit breaker that
// fails calls to an unreachable node fast (breaker.go).
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Redis == nil {
		return nil, errors.New("engine: nil Redis client")
	}
	if cfg.Keys.Partitions < 1 {
		return nil, fmt.Errorf("engine: %d partitions, need at least 1", cfg.Keys.Partitions)
	}
	if cfg.Keys.Prefix == "" {
		return nil, errors.New("engine: empty key prefix")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	e := &Engine{
		rdb:           cfg.Redis,
		keys:          cfg.Keys,
		ids:           cfg.IDs,
		retention:     cfg.Retention,
		durability:    cfg.Durability,
		saleCreate:    redis.NewScript(scripts.SaleCreate),
		saleGrab:      redis.NewScript(scripts.SaleGrab),
		orderRelease:  redis.NewScript(scripts.OrderRelease),
		packetCreate:  redis.NewScript(scripts.PacketCreate),
		packetGrab:    redis.NewScript(scripts.PacketGrab),
		packetExpire:  redis.NewScript(scripts.PacketExpire),
		saleRestore:   redis.NewScript(scripts.SaleRestore),
		packetRestore: redis.NewScript(scripts.PacketRestore),
		bg:            newBackground(),
		fences:        newFences(),

		saleShardCreate: redis.NewScript(scripts.SaleShardCreate),
		saleTake:        redis.NewScript(scripts.SaleTake),
		saleGive:        redis.NewScript(scripts.SaleGive),
	}
	wait, err := newReplicaWait(cfg)
	if err != nil {
		return nil, err
	}
	e.breakers = newBreakers(e.bg)
	e.breakers.watch(ctx, cfg.Redis)
	e.batch = newBatcher(cfg.Redis, cfg, e.bg)
	e.batch.wait = wait
	e.soldOut = newSoldOutMarks(cfg, e.bg)
	if e.ids == nil {
		e.ids = localIDs()
	}
	for _, s := range []*redis.Script{e.saleCreate, e.saleGrab, e.orderRelease, e.packetCreate, e.packetGrab, e.packetExpire,
		e.saleRestore, e.packetRestore, e.saleShardCreate, e.saleTake, e.saleGive} {
		if err := s.Load(ctx, e.rdb).Err(); err != nil {
			return nil, fmt.Errorf("engine: load script: %w", wrapRedis(err))
		}
	}
	if !cfg.DetectLoss {
		if err := e.initEpochs(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Close stops the engine's background work and waits for it: sold-out mark
// loads are cancelled, batches already sent are delivered. Grabs after
// Close still work, sent from the caller's goroutine. Close can be called
// twice; it does not close the Redis client, which the caller owns.
func (e *Engine) Close() {
	e.bg.close()
}

// Durability returns the guarantee the engine's won grabs carry when
// answered (Config.Durability; an empty one is DurabilityNone).
func (e *Engine) Durability() Durability {
	if e.durability == "" {
		return DurabilityNone
	}
	return e.durability
}

// Keys returns the engine's key layout.
func (e *Engine) Keys() Keyspace { return e.keys }

// Ping reports whether Redis answers.
func (e *Engine) Ping(ctx context.Context) error { return wrapRedis(e.rdb.Ping(ctx).Err()) }

// wrapRedis turns a transport failure (refused, timed out, pool exhausted,
// cluster down) into ErrUnavailable, so callers can answer 503 and retry;
// errors Redis itself replied with (a script bug) pass through unchanged.
func wrapRedis(err error) error {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, flashgrab.ErrUnavailable) {
		return err
	}
	if redis.HasErrorPrefix(err, fencedPrefix) {
		return fmt.Errorf("%w (%v)", flashgrab.ErrRebuilding, err)
	}
	var reply redis.Error
	if errors.As(err, &reply) && !transientReply(err) {
		return err
	}
	return fmt.Errorf("%w: redis: %v", flashgrab.ErrUnavailable, err)
}

// transientReply reports whether Redis answered "not now" (loading its data,
// a cluster without quorum or mid-migration, a replica or a master that is
// down): the same call can succeed later, so it is an outage, not a bug.
func transientReply(err error) bool {
	return redis.IsLoadingError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsReadOnlyError(err)
}
