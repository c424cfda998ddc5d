package settle

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// PartitionBacklog is what one partition's stream holds that MySQL does not
// yet: the settlement lag an operator watches.
type PartitionBacklog struct {
	Partition int
	// Length is the stream's length: events not yet settled, since a batch's
	// entries are deleted once it commits (acknowledged ones awaiting their
	// XDEL included, for a moment).
	Length int64
	// Pending is how many of them a settler has read and not yet committed.
	Pending int64
	// OldestAge is how long the oldest event in the stream has waited
	// (zero when the stream is empty): the partition's settlement lag.
	OldestAge time.Duration
	// Dead is the length of the partition's dead-letter stream.
	Dead int64
}

// Backlog reads every partition's backlog in one pipeline of four commands
// per partition (XLEN, the XPENDING summary, the first entry, XLEN of the
// dead letters), so its cost does not grow with the backlog. A stream or
// group that does not exist yet reads as empty. Ages are measured against
// this process's clock from the millisecond in the entry id, which is
// Redis's.
func (s *Settler) Backlog(ctx context.Context) ([]PartitionBacklog, error) {
	type cmds struct {
		length  *redis.IntCmd
		pending *redis.XPendingCmd
		first   *redis.XMessageSliceCmd
		dead    *redis.IntCmd
	}
	cs := make([]cmds, s.keys.Partitions)
	// Per-command errors (NOGROUP before the settler's first read) are read
	// from each command below.
	_, _ = s.redis.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range cs {
			stream := s.keys.Events(p)
			cs[p] = cmds{
				length:  pipe.XLen(ctx, stream),
				pending: pipe.XPending(ctx, stream, s.Group),
				first:   pipe.XRangeN(ctx, stream, "-", "+", 1),
				dead:    pipe.XLen(ctx, deadLetterStream(s.keys, p)),
			}
		}
		return nil
	})
	now := time.Now()
	out := make([]PartitionBacklog, len(cs))
	for p, c := range cs {
		for _, err := range []error{c.length.Err(), c.first.Err(), c.dead.Err()} {
			if err != nil {
				return nil, fmt.Errorf("backlog of partition %d: %w", p, err)
			}
		}
		b := PartitionBacklog{Partition: p, Length: c.length.Val(), Dead: c.dead.Val()}
		switch err := c.pending.Err(); {
		case err == nil:
			b.Pending = c.pending.Val().Count
		case !redis.HasErrorPrefix(err, "NOGROUP"):
			return nil, fmt.Errorf("backlog of partition %d: pending entries: %w", p, err)
		}
		if first := c.first.Val(); len(first) > 0 {
			if at, ok := entryTime(first[0].ID); ok && now.After(at) {
				b.OldestAge = now.Sub(at)
			}
		}
		out[p] = b
	}
	return out, nil
}

// entryTime is the moment a stream entry was appended: the millisecond its
// id starts with.
func entryTime(id string) (time.Time, bool) {
	sid := parseStreamID(id)
	if sid.ms == 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(sid.ms)), true
}
