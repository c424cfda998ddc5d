package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// Durability of wins.
//
// A grab is answered once its script has run; what a Redis crash can then
// take back depends on how Redis keeps its writes. The mode names the
// guarantee a 200 carries:
//
//   - DurabilityNone: none beyond Redis's own settings (snapshots, if any).
//   - DurabilityAOF: Redis runs with appendonly yes and appendfsync always,
//     and fsyncs the append-only file before it sends the replies of an
//     event-loop turn, so a coalesced batch of wins shares one fsync and
//     nothing extra is sent per batch. Only start-up checks the settings.
//   - DurabilityReplica: every round of script calls that can win is
//     followed, on the same connection, by the INCR of a mark key and
//     WAIT 1 <timeout> (see replicaWait); a round no
//     replica acknowledged in time fails with ErrUnavailable, so none of its
//     grabs is answered as won (the wins stand in Redis and settle; a retry
//     returns the same order).

// Durability is the guarantee a won grab carries when it is answered.
type Durability string

// The durability modes; see the comment above.
const (
	DurabilityNone    Durability = "none"
	DurabilityAOF     Durability = "aof"
	DurabilityReplica Durability = "replica"
)

// DefaultWaitTimeout is how long DurabilityReplica waits for a replica's
// acknowledgement of a round before answering its grabs 503.
const DefaultWaitTimeout = 50 * time.Millisecond

// ParseDurability reads a mode name as the --durability flag spells it.
func ParseDurability(s string) (Durability, error) {
	switch d := Durability(s); d {
	case DurabilityNone, DurabilityAOF, DurabilityReplica:
		return d, nil
	}
	return "", fmt.Errorf("durability %q: want none, aof or replica", s)
}

// replicaWait is what DurabilityReplica adds to a round: INCR of a mark
// key, then WAIT 1 timeout.
//
// WAIT waits for the replication offset of the connection's last write. A
// round that wrote nothing (every grab a repeat or a loss) would wait for an
// older offset, perhaps from before the win the repeat reports, which another
// connection wrote and no replica has yet; the mark's write moves the
// connection's offset past every write made so far. (Redis 7.0 happens to
// record the offset after read-only commands too, but WAIT's documented
// contract covers only the client's own writes.)
type replicaWait struct {
	timeout time.Duration // 0: no WAIT (modes none and aof)
	mark    string        // the key INCRed before each WAIT
}

// on reports whether rounds are followed by a WAIT.
func (r replicaWait) on() bool { return r.timeout > 0 }

// cmds are the mark and the WAIT to send after a round's writes, on their
// connection: WAIT counts only the writes of the client that sends it.
func (r replicaWait) cmds(ctx context.Context) (mark, wait *redis.IntCmd) {
	return redis.NewIntCmd(ctx, "incr", r.mark), redis.NewIntCmd(ctx, "wait", 1, r.timeout.Milliseconds())
}

// check turns a WAIT's reply into the error the round's grabs get instead of
// their answers, or nil when a replica acknowledged.
func (r replicaWait) check(mark, w *redis.IntCmd) error {
	if err := mark.Err(); err != nil {
		// Without the mark, the WAIT may cover less than the round reports.
		return fmt.Errorf("%w: durability replica: INCR %s: %v", flashgrab.ErrUnavailable, r.mark, err)
	}
	n, err := w.Result()
	if err != nil {
		return fmt.Errorf("%w: durability replica: WAIT 1 %d: %v", flashgrab.ErrUnavailable, r.timeout.Milliseconds(), err)
	}
	if n < 1 {
		return fmt.Errorf("%w: durability replica: no replica acknowledged the write within %v", flashgrab.ErrUnavailable, r.timeout)
	}
	return nil
}

// newReplicaWait validates the Config's durability and returns the batcher's
// WAIT setting.
func newReplicaWait(cfg Config) (replicaWait, error) {
	switch cfg.Durability {
	case "", DurabilityNone, DurabilityAOF:
		return replicaWait{}, nil
	case DurabilityReplica:
	default:
		return replicaWait{}, fmt.Errorf("engine: durability %q: want none, aof or replica", cfg.Durability)
	}
	if _, ok := cfg.Redis.(*redis.ClusterClient); ok {
		// A keyless WAIT in a cluster pipeline reaches some node, not
		// necessarily the one that took the write.
		return replicaWait{}, errors.New("engine: durability replica needs a single Redis, not a cluster (WAIT must follow the write on its connection)")
	}
	t := cfg.WaitTimeout
	if t == 0 {
		t = DefaultWaitTimeout
	}
	if t < time.Millisecond {
		// WAIT 1 0 would block forever.
		return replicaWait{}, fmt.Errorf("engine: wait timeout %v: need at least 1ms", cfg.WaitTimeout)
	}
	return replicaWait{timeout: t, mark: cfg.Keys.waitMark()}, nil
}

// runDurable runs a script that writes outside the batcher (sale creation,
// packet publishing) under the engine's durability: in replica mode the
// EVALSHA and a WAIT go in one pipeline. The script's own error is the
// command's; durErr says the write stands unacknowledged by any replica.
func (e *Engine) runDurable(ctx context.Context, s *redis.Script, keys []string, args ...any) (cmd *redis.Cmd, durErr error) {
	if !e.batch.wait.on() {
		return s.Run(ctx, e.rdb, keys, args...), nil
	}
	evalsha := func() *redis.Cmd {
		a := make([]any, 0, 3+len(keys)+len(args))
		a = append(a, "evalsha", s.Hash(), len(keys))
		for _, k := range keys {
			a = append(a, k)
		}
		return redis.NewCmd(ctx, append(a, args...)...)
	}
	cmd = evalsha()
	durErr = e.batch.send(ctx, []redis.Cmder{cmd})
	if isNoScript(cmd.Err()) {
		if err := s.Load(ctx, e.rdb).Err(); err != nil {
			cmd.SetErr(fmt.Errorf("reload script after NOSCRIPT: %w", err))
			return cmd, nil
		}
		cmd = evalsha()
		durErr = e.batch.send(ctx, []redis.Cmder{cmd})
	}
	return cmd, durErr
}

// DurabilityWarnings reads the Redis settings a mode relies on and returns
// one line for each way they fall short (nil: they honour it). serve logs
// them at start-up: a mismatch is a configuration mistake to fix, not a
// reason to refuse grabs. For a cluster every master is read.
func DurabilityWarnings(ctx context.Context, rdb redis.UniversalClient, mode Durability) []string {
	var (
		mu    sync.Mutex // ForEachMaster checks the masters concurrently
		warns []string
	)
	warn := func(format string, args ...any) {
		mu.Lock()
		warns = append(warns, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	check := func(ctx context.Context, c *redis.Client) error {
		addr := c.Options().Addr
		switch mode {
		case DurabilityAOF:
			cfg, err := c.ConfigGet(ctx, "append*").Result()
			if err != nil {
				warn("durability aof: cannot read %s's appendonly/appendfsync (CONFIG GET: %v); grabs may be answered before they are on disk", addr, err)
				return nil
			}
			if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
				warns = append(warns, fmt.Sprintf("durability aof: Redis %s has appendonly %q, appendfsync %q (want yes, always): answered grabs can be lost in a crash",
					addr, cfg["appendonly"], cfg["appendfsync"]))
			}
		case DurabilityReplica:
			info, err := c.Info(ctx, "replication").Result()
			if err != nil {
				warn("durability replica: cannot read %s's INFO replication: %v", addr, err)
				return nil
			}
			if onlineReplicas(info) < 1 {
				warn("durability replica: Redis %s has no online replica: every grab will answer 503 until one is", addr)
			}
		}
		return nil
	}
	if mode != DurabilityAOF && mode != DurabilityReplica {
		return nil
	}
	switch c := rdb.(type) {
	case *redis.Client:
		_ = check(ctx, c)
	case *redis.ClusterClient:
		if err := c.ForEachMaster(ctx, check); err != nil {
			warn("durability %s: cannot reach every cluster master: %v", mode, err)
		}
	default:
		warn("durability %s: cannot check a %T", mode, rdb)
	}
	return warns
}

// onlineReplicas counts the replicas INFO replication lists as online: one
// still loading its first sync is connected but acknowledges nothing yet.
func onlineReplicas(info string) int {
	n := 0
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, ",state=online,") {
			n++
		}
	}
	return n
}
