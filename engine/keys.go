package engine

import (
	"hash/crc32"
	"strconv"
	"time"
)

// DefaultPartitions is the partition count of a deployment that sets none.
const DefaultPartitions = 16

// Keyspace lays out every Redis key. Each entity lives in one partition and
// each of its keys carries that partition as a hash tag ("{p3}"), so that every
// script touches a single slot and runs unchanged on Redis Cluster.
//
// Prefix is "fg" in production; tests use their own so concurrent runs never
// share a key.
type Keyspace struct {
	Prefix     string
	Partitions int
}

// Partition returns crc32(id) mod P, the partition of a sale or packet.
func (k Keyspace) Partition(id string) int {
	return int(crc32.ChecksumIEEE([]byte(id)) % uint32(k.Partitions))
}

func (k Keyspace) tag(p int) string {
	return k.Prefix + ":{p" + strconv.Itoa(p) + "}:"
}

// Sale is the hash holding a sale's terms, remaining stock and sold count.
func (k Keyspace) Sale(p int, id string) string { return k.tag(p) + "sale:" + id }

// Buyers is the hash of a sale's buyers: quantity held per user and the order
// each idempotency key produced.
func (k Keyspace) Buyers(p int, id string) string { return k.tag(p) + "sale:" + id + ":buyers" }

// BuyersStaged is where a rebuild builds a sale's buyers hash before it is
// renamed into place (Buyers); it exists only while a rebuild runs.
func (k Keyspace) BuyersStaged(p int, id string) string {
	return k.tag(p) + "sale:" + id + ":buyers-staged"
}

// Transit is the hash of a sale shard's outgoing stock transfers not yet
// known to be applied: transfer id → "dst_partition|units|at_ms".
func (k Keyspace) Transit(p int, id string) string { return k.tag(p) + "sale:" + id + ":transit" }

// Applied is the hash of the transfers a sale shard received: transfer id →
// units. It makes applying a transfer idempotent.
func (k Keyspace) Applied(p int, id string) string { return k.tag(p) + "sale:" + id + ":applied" }

// Orders is the hash holding order orderID's record, in its sale's
// partition p: order id → "sale|user|merchant|qty|amount|at_ms|key". Orders
// are kept in time buckets, one hash per partition and OrderBucket of id
// time, so that a grab batch writes all its orders with one HSET and one
// PEXPIRE instead of a key per order; the bucket is read from the id
// (ordersBucket), so finding an order takes no lookup.
func (k Keyspace) Orders(p int, orderID string) string {
	return k.ordersKey(p, ordersBucket(orderNumber(orderID)))
}

// ordersKey is the hash of partition p's orders of the bucket starting at
// Unix second bucket.
func (k Keyspace) ordersKey(p int, bucket int64) string { return ordersIn(k.tag(p), bucket) }

// ordersIn is ordersKey given the partition's key tag.
func ordersIn(tag string, bucket int64) string {
	return tag + "orders:" + strconv.FormatInt(bucket, 10)
}

// OrderBucket is the span of id time whose orders share one hash
// (Keyspace.Orders): short enough that a bucket of a busy partition stays
// a hash Redis frees at expiry without a noticeable pause, long enough that
// one script call nearly always writes one bucket.
const OrderBucket = 10 * time.Second

// Packet is the hash holding a red packet's terms and remainder.
func (k Keyspace) Packet(p int, id string) string { return k.tag(p) + "pkt:" + id }

// PacketGrabs is the hash of a packet's winners: user → "amount:at_ms:seq".
func (k Keyspace) PacketGrabs(p int, id string) string { return k.tag(p) + "pkt:" + id + ":grabs" }

// PacketExpiry is the partition's sorted set of open packets by expiry time.
func (k Keyspace) PacketExpiry(p int) string { return k.tag(p) + "pkt-expiry" }

// Events is the partition's settlement stream.
func (k Keyspace) Events(p int) string { return k.tag(p) + "events" }

// Epoch is the partition's epoch marker: written when the partition's state
// is initialised or rebuilt from MySQL, so its absence means Redis lost the
// partition's state (rebuild.go). Every grab and create script checks it.
func (k Keyspace) Epoch(p int) string { return k.tag(p) + "epoch" }

// Global keys are not tied to a partition and never touched by a script.

// waitMark is the counter replica durability INCRs before each WAIT
// (durability.go): one key, since that mode runs on a single Redis.
func (k Keyspace) waitMark() string { return k.Prefix + ":wait-mark" }
