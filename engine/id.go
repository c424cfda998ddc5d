package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// epoch is the origin of id timestamps (2024-01-01 UTC); it leaves 69 years of ids.
const epoch = 1704067200000

const (
	nodeBits = 10
	seqBits  = 12
	maxSeq   = 1<<seqBits - 1
	maxNode  = 1<<nodeBits - 1
)

// IDs generates time-ordered 63-bit ids, unique across instances: 41 bits of
// milliseconds, 10 bits of node number (handed out by Redis INCR at start-up,
// so no two live instances share one) and 12 bits of sequence.
type IDs struct {
	mu   sync.Mutex
	node int64
	last int64
	seq  int64
	now  func() time.Time
}

// NewIDs returns a generator for node (0..1023).
func NewIDs(node int64) *IDs {
	return &IDs{node: node & maxNode, now: time.Now}
}

// ClaimNode takes the next node number from Redis.
func ClaimNode(ctx context.Context, rdb redis.UniversalClient, ks Keyspace) (int64, error) {
	n, err := rdb.Incr(ctx, ks.NodeCounter()).Result()
	if err != nil {
		return 0, fmt.Errorf("claim id node: %w", err)
	}
	return n & maxNode, nil
}

// Next returns a new id. Within one millisecond it hands out 4096 ids, then
// borrows from the next millisecond rather than sleeping, so a burst never
// stalls the grab path and ids stay strictly increasing.
func (g *IDs) Next() int64 {
	g.mu.Lock()
	ms := g.now().UnixMilli() - epoch
	if ms > g.last {
		g.last, g.seq = ms, 0
	} else {
		g.seq++
		if g.seq > maxSeq {
			g.last++
			g.seq = 0
		}
	}
	id := g.last<<(nodeBits+seqBits) | g.node<<seqBits | g.seq
	g.mu.Unlock()
	return id
}

// An order lives in its sale's partition, so that the grab script can write it
// in the same atomic step; the partition therefore travels inside the order id
// as a suffix: "<id>-<partition>".

// orderPartition returns the partition an order id names.
func (k Keyspace) orderPartition(orderID string) (int, bool) {
	i := strings.LastIndexByte(orderID, '-')
	if i <= 0 {
		return 0, false
	}
	if _, err := strconv.ParseInt(orderID[:i], 10, 64); err != nil {
		return 0, false
	}
	p, err := strconv.Atoi(orderID[i+1:])
	if err != nil || p < 0 || p >= k.Partitions {
		return 0, false
	}
	return p, true
}

// NewID returns a fresh time-ordered id, for entities the engine does not
// keep in Redis (top-ups).
func (e *Engine) NewID() string { return strconv.FormatInt(e.ids.Next(), 10) }
