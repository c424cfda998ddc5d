package engine

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgrab/flashgrab"
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
// milliseconds, 10 bits of node number and 12 bits of sequence. Uniqueness
// rests on no two live instances sharing a node number: in production the
// number is leased (settle.NodeLease, a MySQL row with an expiry, renewed
// while the instance runs), and the generator refuses ids once the lease
// may have run out (NewLeasedIDs); tests and benchmarks use a fixed node.
type IDs struct {
	mu   sync.Mutex
	node int64
	last int64
	seq  int64
	now  func() time.Time
	// leased generators hand out ids only before until, by this process's
	// clock (zero: no lease held).
	leased bool
	until  time.Time
}

// NewIDs returns a generator for a fixed node (0..1023), for an instance
// that knows no other instance uses the number (tests, benchmarks).
func NewIDs(node int64) *IDs {
	return &IDs{node: node & maxNode, now: time.Now}
}

// NewLeasedIDs returns a generator that holds no node yet: Next fails with
// ErrUnavailable until Hold gives it a leased node.
func NewLeasedIDs() *IDs {
	return &IDs{leased: true, now: time.Now}
}

// Hold makes node the generator's number until until (this process's
// clock); it is called on each claim and renewal of the node's lease, with a
// time safely before the lease can expire. Past until, Next fails until the
// next Hold: a renewal that keeps failing stops ids rather than risk a
// second holder of the node.
func (g *IDs) Hold(node int64, until time.Time) {
	g.mu.Lock()
	g.node, g.until = node&maxNode, until
	g.mu.Unlock()
}

// Drop stops the generator at once: the lease is lost or released.
func (g *IDs) Drop() {
	g.mu.Lock()
	g.until = time.Time{}
	g.mu.Unlock()
}

// Next returns a new id. Within one millisecond it hands out 4096 ids, then
// borrows from the next millisecond rather than sleeping, so a burst never
// stalls the grab path and ids stay strictly increasing. A leased generator
// whose lease may have run out returns ErrUnavailable.
func (g *IDs) Next() (int64, error) {
	g.mu.Lock()
	now := g.now()
	if g.leased && !now.Before(g.until) {
		g.mu.Unlock()
		return 0, fmt.Errorf("%w: no valid lease on an id node", flashgrab.ErrUnavailable)
	}
	ms := now.UnixMilli() - epoch
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
	return id, nil
}

// localNodes numbers the engines of this process that were given no IDs, so
// that two of them (a test's second instance) never share a node.
var localNodes atomic.Int64

// localIDs returns a fixed-node generator of the next process-local number.
func localIDs() *IDs { return NewIDs((localNodes.Add(1) - 1) & maxNode) }

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

// orderNumber returns the id number of an order id ("<id>-<partition>"),
// or 0 when it has none.
func orderNumber(orderID string) int64 {
	i := strings.LastIndexByte(orderID, '-')
	if i < 0 {
		return 0
	}
	n, _ := strconv.ParseInt(orderID[:i], 10, 64)
	return n
}

// ordersBucket returns the bucket (Keyspace.Orders) of the order with id
// number id: the Unix second its OrderBucket starts, from the id's
// millisecond.
func ordersBucket(id int64) int64 {
	const span = int64(OrderBucket / time.Second)
	sec := (id>>(nodeBits+seqBits) + epoch) / 1000
	return sec - sec%span
}

// NewID returns a fresh time-ordered id, for entities the engine does not
// keep in Redis (top-ups); ErrUnavailable while the engine holds no node.
func (e *Engine) NewID() (string, error) {
	id, err := e.ids.Next()
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(id, 10), nil
}
