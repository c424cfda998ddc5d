package engine

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/scripts"
)

// streamAck is scripts/stream_ack.lua; a Script is safe for concurrent use.
var streamAck = redis.NewScript(scripts.StreamAck)

// AckSettled acknowledges ids, entries of a partition stream that group has
// settled, and trims the stream's history in the same step: every entry
// older than the oldest one any group has pending or not yet read goes. A
// dead consumer's pending entries, and whatever follows them, stay until
// they are claimed and acknowledged, so XAUTOCLAIM finds them. It returns
// how many of ids were pending and are now acknowledged.
func AckSettled(ctx context.Context, rdb redis.Scripter, stream, group string, ids ...string) (int64, error) {
	args := make([]any, 0, 1+len(ids))
	args = append(args, group)
	for _, id := range ids {
		args = append(args, id)
	}
	return streamAck.Run(ctx, rdb, []string{stream}, args...).Int64()
}
