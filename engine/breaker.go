package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/flashgrab/flashgrab"
)

// A circuit breaker per Redis node (issue 9 item 6). Without it every grab
// on a dead node paid for dials and retries (~1.6 s each) before its 503,
// and a 32-worker client fell to ~20 requests/s. With it, breakerFailures
// consecutive connection failures open the node's breaker: its calls then
// fail at once with ErrUnavailable without touching the network, and one
// background probe PINGs the node every probeEvery until it answers, which
// closes the breaker. There is no half-open trial of real traffic: the probe
// is the trial, so a returning node sees one PING, not a burst of grabs.
//
// Hand-written rather than github.com/sony/gobreaker: what counts as a
// failure (the transport, never a reply) and the probe that closes the
// breaker are most of the code, and gobreaker's half-open state lets real
// requests through as probes, which is what this avoids.
const (
	// breakerFailures consecutive connection failures open a breaker: one
	// is a dropped connection that a retry heals, three in a row an outage.
	breakerFailures = 3
	// probeEvery is how often an open breaker's probe PINGs its node: it
	// bounds the time to recover once the node is back, at one dial per
	// tick.
	probeEvery = 100 * time.Millisecond
	// probeTimeout bounds one probe's dial and PING.
	probeTimeout = 100 * time.Millisecond
)

// breaker guards the calls to one Redis node, named by its address.
type breaker struct {
	addr  string
	node  *redis.Options // the node client's options: where and how the probe connects
	bg    *background
	open  atomic.Bool
	fails atomic.Int32 // consecutive connection failures while closed
}

// errOpen is what a call to a node with an open breaker fails with.
func (b *breaker) errOpen() error {
	return fmt.Errorf("%w: redis %s unreachable (circuit open, probing every %v)", flashgrab.ErrUnavailable, b.addr, probeEvery)
}

// observe counts the outcome of one call that reached the network. Any
// reply, an error reply included (a script's business error, NOSCRIPT,
// CLUSTERDOWN), shows the node answers and resets the count; a caller's
// cancellation says nothing about the node.
func (b *breaker) observe(err error) {
	switch {
	case err != nil && errors.Is(err, context.Canceled):
	case !connFailure(err):
		b.fails.Store(0)
	case b.fails.Add(1) >= breakerFailures && b.open.CompareAndSwap(false, true):
		if !b.bg.start(b.probe) {
			// The engine is closed: nothing would ever close the breaker.
			b.open.Store(false)
		}
	}
}

// probe PINGs the node until it answers, then closes the breaker.
func (b *breaker) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.fails.Store(0)
			b.open.Store(false)
			return
		case <-t.C:
		}
		if b.ping(ctx) == nil {
			b.fails.Store(0)
			b.open.Store(false)
			return
		}
	}
}

// ping sends one PING to the node on a client of its own, made for this
// one PING (one connection, no retries): once a pool has failed as many dials
// as it has connections, go-redis refuses its calls until a dial of its own
// succeeds, tried once a second, so a reused probe client (or the node's)
// would see a returning node up to a second late.
func (b *breaker) ping(ctx context.Context) error {
	n := b.node
	c := redis.NewClient(&redis.Options{Network: n.Network, Addr: n.Addr, Dialer: n.Dialer, TLSConfig: n.TLSConfig,
		Username: n.Username, Password: n.Password, CredentialsProvider: n.CredentialsProvider,
		CredentialsProviderContext: n.CredentialsProviderContext, DB: n.DB, Protocol: n.Protocol,
		PoolSize: 1, MaxRetries: -1, DialerRetries: 1,
		DialTimeout: probeTimeout, ReadTimeout: probeTimeout, WriteTimeout: probeTimeout,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return c.Ping(pctx).Err()
}

// connFailure reports whether err says the node could not be reached or
// stopped answering: refused or timed-out dials, i/o timeouts, a connection
// closed under the call, an exhausted pool. Replies never are.
func connFailure(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	// A caller's deadline passing before the call reached the network (in
	// the pool queue, say) is the caller's budget, not the node's health.
	// context.DeadlineExceeded is itself a net.Error, hence this order.
	if errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// DialHook leaves dials alone: while the breaker is open no call reaches the
// pool, so nothing dials but the probe.
func (b *breaker) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook fails a call at once while the breaker is open, and otherwise
// counts its outcome.
func (b *breaker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if b.open.Load() {
			err := b.errOpen()
			cmd.SetErr(err)
			return err
		}
		err := next(ctx, cmd)
		b.observe(err)
		return err
	}
}

// ProcessPipelineHook is ProcessHook for a pipeline: a transport failure
// fails every command of it, so the pipeline counts as one call.
func (b *breaker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if b.open.Load() {
			err := b.errOpen()
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		err := next(ctx, cmds)
		b.observe(err)
		return err
	}
}

// breakers holds an engine's breakers, one per node address. A single Redis
// has one, shared by every partition; in a Redis Cluster each node client
// gets its own as go-redis creates it, so a dead master fails fast for the
// partitions whose slots it serves and for no other.
type breakers struct {
	bg *background

	mu     sync.Mutex
	byAddr map[string]*breaker
	hooked map[*redis.Client]bool
}

func newBreakers(bg *background) *breakers {
	return &breakers{bg: bg, byAddr: map[string]*breaker{}, hooked: map[*redis.Client]bool{}}
}

// watch puts a breaker on rdb's node clients: rdb itself when it is one
// Redis, each node of a cluster (those known now and those go-redis creates
// later). Other kinds of client go without.
func (bs *breakers) watch(ctx context.Context, rdb redis.UniversalClient) {
	switch c := rdb.(type) {
	case *redis.Client:
		bs.hook(c)
	case *redis.ClusterClient:
		c.OnNewNode(bs.hook)
		// The nodes created before OnNewNode (the seeds, those the first
		// commands reached). An error leaves them without a breaker until
		// go-redis replaces them; grabs still answer, only more slowly.
		_ = c.ForEachShard(ctx, func(_ context.Context, n *redis.Client) error { bs.hook(n); return nil })
	}
}

// hook adds the breaker of n's address to n, once per client.
func (bs *breakers) hook(n *redis.Client) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.hooked[n] {
		return
	}
	bs.hooked[n] = true
	addr := n.Options().Addr
	b := bs.byAddr[addr]
	if b == nil {
		b = &breaker{addr: addr, node: n.Options(), bg: bs.bg}
		bs.byAddr[addr] = b
	}
	n.AddHook(b)
}

// isOpen reports whether the breaker of addr is open.
func (bs *breakers) isOpen(addr string) bool {
	bs.mu.Lock()
	b := bs.byAddr[addr]
	bs.mu.Unlock()
	return b != nil && b.open.Load()
}

// anyOpen reports whether some breaker is open.
func (bs *breakers) anyOpen() bool {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, b := range bs.byAddr {
		if b.open.Load() {
			return true
		}
	}
	return false
}

// PartitionsDown returns the partitions, in order, whose Redis node is
// unreachable: its breaker is open, or (in a cluster) no node serves the
// partition's slot. Their grabs answer ErrUnavailable; the others go on.
func (e *Engine) PartitionsDown(ctx context.Context) []int {
	var down []int
	c, cluster := e.rdb.(*redis.ClusterClient)
	if !cluster {
		if e.breakers.anyOpen() {
			for p := range e.keys.Partitions {
				down = append(down, p)
			}
		}
		return down
	}
	for p := range e.keys.Partitions {
		n, err := c.MasterForKey(ctx, e.keys.Events(p))
		if err != nil || e.breakers.isOpen(n.Options().Addr) {
			down = append(down, p)
		}
	}
	return down
}
