package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// Coalescing of grabs.
//
// One EVALSHA per grab leaves Redis mostly idle and burns the Go process's CPU
// on round trips. The grab scripts therefore decide a whole batch of users of
// one target (a sale or a packet) in one call, and the batcher gathers the
// batches:
//
//   - Per target at most one script call is in flight. A grab that finds its
//     target idle is sent at once, so a lone request waits for nothing; grabs
//     that arrive while a call is in flight queue up and go together, in
//     arrival order, as the next call (at most MaxBatch users each).
//   - Batches of different targets that are ready at the same moment share one
//     pipeline (one round trip); at most MaxPipelines pipelines are in flight.
//   - No goroutine runs while idle: the first grab of an idle batcher sends
//     its own pipeline inline; when more work queued meanwhile, a goroutine
//     carries on until the queues are empty, so the grab that started it
//     returns as soon as its own answer is in.
//
// The script sees exactly the sequence of users it would have seen from one
// call per user, so results and invariants are the same; only the number of
// round trips changes.

// Defaults of the batcher's Config knobs.
const (
	DefaultMaxBatch     = 64
	DefaultMaxPipelines = 4
	// maxTargetsPerPipeline bounds one pipeline's script calls, so one round
	// trip's reply stays a sensible size.
	maxTargetsPerPipeline = 64
)

// batchCall is the part of a script call that every user of one target
// shares. The script takes a head (Keys, Args) common to every user of the
// target, then per user a tuple of keys and args in batch order, and replies
// Width integers per user in the same order (integers only: the reply is
// read into one []int64, with no allocation per user or value).
//
// A script of this shape is all a grab needs to be coalesced: red packets use
// the batcher exactly as sales do.
type batchCall struct {
	// Target names what the call is decided against; calls with equal Target
	// are batched together. The target's main Redis key is a good choice (it
	// is unique and carries the partition, so one batch touches one slot).
	Target string
	Script *redis.Script
	// Keys and Args are the head of the call; every call of one Target must
	// pass the same head (the batch uses its first call's).
	Keys []string
	Args []any
	// Width is the number of reply values per user.
	Width int
}

// BatchStats counts the batcher's work since the engine started.
type BatchStats struct {
	Users     int64 // users decided by script calls
	Calls     int64 // script calls (EVALSHA), each deciding one batch
	Pipelines int64 // round trips, each carrying one or more calls
	MaxBatch  int64 // the largest batch seen
}

// batcher gathers concurrent calls per target; see the package comment above.
type batcher struct {
	rdb          redis.UniversalClient
	maxBatch     int
	maxPipelines int
	direct       bool        // one call per user, no queueing (Config.NoCoalesce)
	wait         replicaWait // DurabilityReplica: WAIT after every round (durability.go)
	bg           *background // runs the sender loops

	mu      sync.Mutex
	queues  map[string]*targetQueue
	ready   []*targetQueue // targets with waiters and no call in flight
	running int            // pipelines in flight (or about to be)

	users, calls, pipelines, biggest atomic.Int64
}

// targetQueue is one target's waiting grabs.
type targetQueue struct {
	target  string
	waiting []*waiter
	busy    bool // a call of this target is in flight
	queued  bool // on batcher.ready
}

// waiter is one pending call and, once decided, its answer.
type waiter struct {
	ctx   context.Context
	call  batchCall
	reply []int64
	err   error
	done  chan struct{} // buffered: the deliverer never blocks on a waiter that gave up
	// The user's tuple: copied into keyBuf and argBuf when it fits, so the
	// caller's slices stay on its stack.
	userKeys []string
	userArgs []any
	keyBuf   [2]string
	argBuf   [6]any
}

// batch is one target's calls going out as one script call.
type batch struct {
	q       *targetQueue
	waiters []*waiter
	cmd     *redis.IntSliceCmd
	// durErr, set when no replica acknowledged the round (DurabilityReplica),
	// replaces every answer of the batch: none may be answered as won.
	durErr error
}

var waiterPool = sync.Pool{New: func() any { return &waiter{done: make(chan struct{}, 1)} }}

func newBatcher(rdb redis.UniversalClient, cfg Config, bg *background) *batcher {
	b := &batcher{rdb: rdb, maxBatch: cfg.MaxBatch, maxPipelines: cfg.MaxPipelines, direct: cfg.NoCoalesce,
		queues: map[string]*targetQueue{}, bg: bg}
	if b.maxBatch <= 0 {
		b.maxBatch = DefaultMaxBatch
	}
	if b.maxPipelines <= 0 {
		b.maxPipelines = DefaultMaxPipelines
	}
	return b
}

func (b *batcher) stats() BatchStats {
	return BatchStats{Users: b.users.Load(), Calls: b.calls.Load(), Pipelines: b.pipelines.Load(),
		MaxBatch: b.biggest.Load()}
}

// do decides one user's grab of c's target, given as the user's tuple of
// keys and args, together with whatever else is waiting for the target, and
// returns the user's Width reply values. The slice aliases the batch's
// reply: read it, do not keep it. Cancelling ctx abandons only this call: if
// it was not yet sent it never is; if it was, its result is dropped (the
// script may have decided it, exactly as with a cancelled single call).
func (b *batcher) do(ctx context.Context, c *batchCall, userKeys []string, userArgs ...any) ([]int64, error) {
	w := waiterPool.Get().(*waiter)
	w.ctx, w.call = ctx, *c
	if len(userKeys) <= len(w.keyBuf) && len(userArgs) <= len(w.argBuf) {
		w.userKeys = append(w.keyBuf[:0], userKeys...)
		w.userArgs = append(w.argBuf[:0], userArgs...)
	} else {
		w.userKeys = append([]string(nil), userKeys...)
		w.userArgs = append([]any(nil), userArgs...)
	}
	if b.direct {
		b.exec(ctx, []batch{{waiters: []*waiter{w}}})
		<-w.done // delivered synchronously
		return b.recycle(w)
	}

	b.mu.Lock()
	q := b.queues[c.Target]
	if q == nil {
		q = &targetQueue{target: c.Target}
		b.queues[c.Target] = q
	}
	q.waiting = append(q.waiting, w)
	var round []batch
	sender := false
	if !q.busy && !q.queued {
		q.queued = true
		b.ready = append(b.ready, q)
		if b.running < b.maxPipelines {
			b.running++
			sender = true
			round = b.takeLocked()
		}
	}
	b.mu.Unlock()

	if sender {
		// Send inline; whatever queued meanwhile is carried on by a
		// goroutine, so this grab returns as soon as its answer is in.
		b.execRound(round)
		if next := b.finish(round); next != nil {
			// The loop's rounds run under their waiters' contexts (see
			// roundContext), not the background one: Close waits for the
			// answers already asked for rather than dropping them. Once
			// closed, this grab carries the queue on itself.
			if !b.bg.start(func(context.Context) { b.loop(next) }) {
				b.loop(next)
			}
		}
	}
	select {
	case <-w.done:
		return b.recycle(w)
	case <-ctx.Done():
		// select picks at random among ready cases: an answer that arrived
		// before or with the deadline (a won grab) must not be lost to it.
		select {
		case <-w.done:
			return b.recycle(w)
		default:
		}
		// The waiter may still be delivered to later; it is not reused.
		return nil, fmt.Errorf("%w: %w", flashgrab.ErrUnavailable, ctx.Err())
	}
}

// recycle returns a delivered waiter's answer and puts it back in the pool.
func (b *batcher) recycle(w *waiter) ([]int64, error) {
	reply, err := w.reply, w.err
	*w = waiter{done: w.done} // drop references, so the pool keeps nothing alive
	waiterPool.Put(w)
	return reply, err
}

// loop sends rounds until no target is ready; it holds one pipeline slot.
func (b *batcher) loop(round []batch) {
	for round != nil {
		b.execRound(round)
		round = b.finish(round)
	}
}

// execRound sends a round under a context of its own (see roundContext).
func (b *batcher) execRound(round []batch) {
	if len(round) == 0 {
		return // every waiter taken had given up
	}
	ctx, cancel := roundContext(round)
	b.exec(ctx, round)
	cancel()
}

// takeLocked moves up to maxBatch live waiters of each ready target into the
// next round, which is never nil. A waiter whose context ended before it was sent is dropped: it
// has already returned.
func (b *batcher) takeLocked() []batch {
	n := min(len(b.ready), maxTargetsPerPipeline)
	round := make([]batch, 0, n)
	for _, q := range b.ready[:n] {
		q.queued = false
		live := q.waiting[:0:len(q.waiting)]
		taken := 0
		for _, w := range q.waiting {
			if taken == b.maxBatch {
				break
			}
			taken++
			if w.ctx.Err() == nil {
				live = append(live, w)
			}
		}
		rest := q.waiting[taken:]
		if len(rest) == 0 {
			rest = nil
		}
		// live shares q.waiting's array up to taken; rest starts after it, so
		// later appends to rest never write into live.
		q.waiting = rest
		if len(live) == 0 {
			b.idleLocked(q)
			continue
		}
		q.busy = true
		round = append(round, batch{q: q, waiters: live[:len(live):len(live)]})
	}
	b.ready = append(b.ready[:0], b.ready[n:]...)
	return round
}

// idleLocked puts q back on the ready list if grabs wait for it, or forgets
// it when none do, so the map holds only targets being grabbed.
func (b *batcher) idleLocked(q *targetQueue) {
	q.busy = false
	switch {
	case len(q.waiting) > 0 && !q.queued:
		q.queued = true
		b.ready = append(b.ready, q)
	case len(q.waiting) == 0 && !q.queued:
		delete(b.queues, q.target)
	}
}

// finish releases a sent round's targets and returns the next round (maybe
// empty, when all its waiters gave up), or nil, giving up the pipeline slot,
// when nothing is ready.
func (b *batcher) finish(round []batch) []batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range round {
		b.idleLocked(round[i].q)
	}
	if len(b.ready) == 0 {
		b.running--
		return nil
	}
	return b.takeLocked()
}

// exec sends a round (one call per batch, one pipeline for all) and delivers
// every waiter's answer. A script cache emptied by a Redis restart or SCRIPT
// FLUSH (NOSCRIPT) is reloaded and the affected calls sent again: a call that
// got NOSCRIPT did not run.
func (b *batcher) exec(ctx context.Context, round []batch) {
	cmds := make([]redis.Cmder, len(round))
	for i := range round {
		round[i].cmd = redis.NewIntSliceCmd(ctx, evalShaArgs(round[i].waiters)...)
		cmds[i] = round[i].cmd
	}
	durErr := b.send(ctx, cmds)
	var retry []redis.Cmder
	for i := range round {
		round[i].durErr = durErr
		if !isNoScript(round[i].cmd.Err()) {
			continue
		}
		s := round[i].waiters[0].call.Script
		if err := s.Load(ctx, b.rdb).Err(); err != nil {
			round[i].cmd.SetErr(fmt.Errorf("reload script after NOSCRIPT: %w", err))
			continue
		}
		round[i].cmd = redis.NewIntSliceCmd(ctx, round[i].cmd.Args()...)
		retry = append(retry, round[i].cmd)
	}
	if retry != nil {
		durErr := b.send(ctx, retry)
		for i := range round {
			if isRetried(round[i].cmd, retry) {
				round[i].durErr = durErr
			}
		}
	}
	for i := range round {
		b.deliver(&round[i])
	}
}

// send runs cmds: alone, or in one pipeline. Each command keeps its own
// error. In replica mode a mark's INCR and a WAIT end the pipeline, on the
// connection that carried the writes; the error it returns then says the round is not yet on
// any replica.
func (b *batcher) send(ctx context.Context, cmds []redis.Cmder) (durErr error) {
	b.pipelines.Add(1)
	if len(cmds) == 1 && !b.wait.on() {
		_ = b.rdb.Process(ctx, cmds[0])
		return nil
	}
	pipe := b.rdb.Pipeline()
	for _, c := range cmds {
		_ = pipe.Process(ctx, c)
	}
	var mark, wait *redis.IntCmd
	if b.wait.on() {
		mark, wait = b.wait.cmds(ctx)
		_ = pipe.Process(ctx, mark)
		_ = pipe.Process(ctx, wait)
	}
	_, _ = pipe.Exec(ctx)
	if wait != nil {
		return b.wait.check(mark, wait)
	}
	return nil
}

// isRetried reports whether c is one of the commands sent again.
func isRetried(c *redis.IntSliceCmd, retry []redis.Cmder) bool {
	for _, r := range retry {
		if r == redis.Cmder(c) {
			return true
		}
	}
	return false
}

// deliver hands each waiter of a batch its slice of the reply, or the error.
func (b *batcher) deliver(bt *batch) {
	n := int64(len(bt.waiters))
	b.users.Add(n)
	b.calls.Add(1)
	for {
		m := b.biggest.Load()
		if n <= m || b.biggest.CompareAndSwap(m, n) {
			break
		}
	}
	width := bt.waiters[0].call.Width
	reply, err := bt.cmd.Result()
	if err == nil && len(reply) != len(bt.waiters)*width {
		err = fmt.Errorf("script replied %d values for %d users, want %d each", len(reply), len(bt.waiters), width)
	}
	if err != nil {
		err = wrapRedis(err)
	} else if bt.durErr != nil {
		err = bt.durErr
	}
	for i, w := range bt.waiters {
		if err != nil {
			w.err = err
		} else {
			w.reply = reply[i*width : (i+1)*width : (i+1)*width]
		}
		w.done <- struct{}{}
	}
}

// evalShaArgs lays out one EVALSHA deciding every waiter of a batch: the
// head keys, each user's keys, the head args, each user's args.
func evalShaArgs(ws []*waiter) []any {
	head := ws[0].call
	nk, na := len(head.Keys), len(head.Args)
	for _, w := range ws {
		nk += len(w.userKeys)
		na += len(w.userArgs)
	}
	args := make([]any, 0, 3+nk+na)
	args = append(args, "evalsha", head.Script.Hash(), nk)
	for _, k := range head.Keys {
		args = append(args, k)
	}
	for _, w := range ws {
		for _, k := range w.userKeys {
			args = append(args, k)
		}
	}
	args = append(args, head.Args...)
	for _, w := range ws {
		args = append(args, w.userArgs...)
	}
	return args
}

// roundContext bounds a round by the latest deadline among its waiters: the
// round serves them all, so no single waiter's cancellation may cut it short.
// When some waiter has no deadline the round has none either (go-redis's own
// read and write timeouts still apply).
func roundContext(round []batch) (context.Context, context.CancelFunc) {
	var latest time.Time
	for i := range round {
		for _, w := range round[i].waiters {
			d, ok := w.ctx.Deadline()
			if !ok {
				return context.Background(), func() {}
			}
			if d.After(latest) {
				latest = d
			}
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}
