package engine

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// packetRandomRange bounds the random number a packet grab hands the script,
// which draws the random share from it.
const packetRandomRange = 1 << 40

// NewPacket validates the terms of a packet and gives it an id and expiry.
// ttl 0 means DefaultPacketTTL.
func (e *Engine) NewPacket(sender string, total, count int64, mode string, ttl time.Duration) (flashgrab.Packet, error) {
	if ttl == 0 {
		ttl = flashgrab.DefaultPacketTTL
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	pk := flashgrab.Packet{SenderID: sender, TotalCents: total, Count: count, Mode: mode, CreatedAt: now, ExpiresAt: now.Add(ttl),
		RemainingCents: total, RemainingCount: count}
	if err := pk.Validate(); err != nil {
		return flashgrab.Packet{}, err
	}
	id, err := e.ids.Next()
	if err != nil {
		return flashgrab.Packet{}, fmt.Errorf("new packet of %s: %w", sender, err)
	}
	pk.ID = strconv.FormatInt(id, 10)
	return pk, nil
}

// PublishPacket makes a funded packet grabbable. Publishing twice is harmless.
func (e *Engine) PublishPacket(ctx context.Context, pk flashgrab.Packet) error {
	p := e.keys.Partition(pk.ID)
	cmd, durErr := e.runDurable(ctx, e.packetCreate, []string{e.keys.Packet(p, pk.ID), e.keys.PacketExpiry(p), e.keys.Epoch(p)},
		pk.ID, pk.SenderID, pk.TotalCents, pk.Count, pk.Mode, pk.ExpiresAt.UnixMilli(), pk.CreatedAt.UnixMilli())
	if err := cmd.Err(); err != nil {
		return fmt.Errorf("publish packet %s: %w", pk.ID, e.noteFenced(p, wrapRedis(err)))
	}
	if durErr != nil {
		return fmt.Errorf("publish packet %s: %w", pk.ID, durErr)
	}
	return nil
}

// Packet returns a packet with its remainder and the list of grabs in order.
func (e *Engine) Packet(ctx context.Context, id string) (flashgrab.Packet, error) {
	if !flashgrab.ValidID(id) {
		return flashgrab.Packet{}, fmt.Errorf("packet %q: %w", id, flashgrab.ErrNotFound)
	}
	p := e.keys.Partition(id)
	pipe := e.rdb.Pipeline()
	h := pipe.HGetAll(ctx, e.keys.Packet(p, id))
	g := pipe.HGetAll(ctx, e.keys.PacketGrabs(p, id))
	if _, err := pipe.Exec(ctx); err != nil {
		return flashgrab.Packet{}, fmt.Errorf("get packet %s: %w", id, wrapRedis(err))
	}
	v := h.Val()
	if len(v) == 0 {
		return flashgrab.Packet{}, fmt.Errorf("packet %s: %w", id, flashgrab.ErrNotFound)
	}
	d := recordDecoder{key: e.keys.Packet(p, id)}
	n := func(k string) int64 { return d.int(k, v[k]) }
	pk := flashgrab.Packet{ID: id, SenderID: v["sender"], TotalCents: n("total"), Count: n("count"), Mode: v["mode"],
		CreatedAt: time.UnixMilli(n("at")).UTC(), ExpiresAt: time.UnixMilli(n("exp")).UTC(),
		RemainingCents: n("rem"), RemainingCount: n("left"), Expired: v["st"] == "expired"}
	if r, ok := v["refund"]; ok { // set when the packet expires
		pk.RefundCents = d.int("refund", r)
	}
	if d.err != nil {
		return flashgrab.Packet{}, fmt.Errorf("packet %s: %w", id, d.err)
	}
	for user, rec := range g.Val() {
		s, err := parseShare(user, rec)
		if err != nil {
			return flashgrab.Packet{}, fmt.Errorf("packet %s: %w", id, err)
		}
		pk.Grabs = append(pk.Grabs, s)
	}
	slices.SortFunc(pk.Grabs, func(a, b flashgrab.PacketShare) int { return cmp.Compare(a.Seq, b.Seq) })
	return pk, nil
}

// parseShare reads a grabs-hash record "amount|at_ms|seq".
func parseShare(user, rec string) (flashgrab.PacketShare, error) {
	parts := strings.Split(rec, "|")
	if len(parts) != 3 {
		return flashgrab.PacketShare{}, fmt.Errorf("grab record of %s is %q", user, rec)
	}
	amt, err1 := strconv.ParseInt(parts[0], 10, 64)
	at, err2 := strconv.ParseInt(parts[1], 10, 64)
	seq, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return flashgrab.PacketShare{}, fmt.Errorf("grab record of %s is %q", user, rec)
	}
	return flashgrab.PacketShare{UserID: user, AmountCents: amt, Seq: seq, At: time.UnixMilli(at).UTC()}, nil
}

// GrabPacket decides one user's grab of a packet: the share (the same share,
// with Repeat, when the user grabbed before), or ErrEmpty, ErrExpired,
// ErrNotFound.
func (e *Engine) GrabPacket(ctx context.Context, packetID, user string) (flashgrab.PacketGrabResult, error) {
	if !flashgrab.ValidID(user) {
		return flashgrab.PacketGrabResult{}, flashgrab.InvalidID("user")
	}
	if !flashgrab.ValidID(packetID) {
		return flashgrab.PacketGrabResult{}, fmt.Errorf("packet %q: %w", packetID, flashgrab.ErrNotFound)
	}
	h := e.packetHead(packetID)
	v, err := e.batch.do(ctx, &h.call, nil, user, rand.Int64N(packetRandomRange))
	if err != nil {
		return flashgrab.PacketGrabResult{}, fmt.Errorf("grab packet %s: %w", packetID, e.noteFenced(e.keys.Partition(packetID), err))
	}
	return packetOutcome(packetID, v)
}

// packetHead is what every grab of one packet sends alike: the script's head
// keys (packet, grabs, events, expiry, epoch) and args (packet id, how long an
// emptied packet's keys are kept).
type packetHead struct {
	keys [5]string
	args [2]any
	call batchCall
}

func (e *Engine) packetHead(id string) *packetHead {
	return e.pkts.get(id, func() *packetHead {
		p := e.keys.Partition(id)
		h := &packetHead{keys: [5]string{e.keys.Packet(p, id), e.keys.PacketGrabs(p, id), e.keys.Events(p), e.keys.PacketExpiry(p), e.keys.Epoch(p)},
			args: [2]any{id, e.retention.Milliseconds()}}
		h.call = batchCall{Target: h.keys[0], Script: e.packetGrab, Keys: h.keys[:], Args: h.args[:], Width: 4}
		return h
	})
}

// The packet grab script's outcomes (packet_grab.lua), the first of each
// user's four reply values.
const (
	packetOK = iota
	packetRepeat
	packetEmpty
	packetExpired
	packetNotFound
)

// packetOutcome reads one user's four values of the packet grab script's
// reply: outcome, amount, remaining count, remaining cents.
func packetOutcome(packetID string, v []int64) (flashgrab.PacketGrabResult, error) {
	if len(v) < 4 {
		return flashgrab.PacketGrabResult{}, fmt.Errorf("grab packet %s: script replied %d values, want 4", packetID, len(v))
	}
	res := flashgrab.PacketGrabResult{PacketID: packetID, AmountCents: v[1], RemainingCount: v[2], RemainingCents: v[3]}
	switch v[0] {
	case packetOK:
		return res, nil
	case packetRepeat:
		res.Repeat = true
		return res, nil
	case packetEmpty:
		return res, fmt.Errorf("packet %s: %w", packetID, flashgrab.ErrEmpty)
	case packetExpired:
		return res, fmt.Errorf("packet %s: %w", packetID, flashgrab.ErrExpired)
	case packetNotFound:
		return res, fmt.Errorf("packet %s: %w", packetID, flashgrab.ErrNotFound)
	}
	return res, fmt.Errorf("grab packet %s: unknown script outcome %d", packetID, v[0])
}

// ExpirePackets closes the partition's packets whose expiry has passed and
// appends each one's refund to the stream. Many instances may run it at once:
// the script refunds each packet exactly once. It returns how many packets it
// closed.
func (e *Engine) ExpirePackets(ctx context.Context, p int) (int, error) {
	due, err := e.rdb.ZRangeByScore(ctx, e.keys.PacketExpiry(p), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(time.Now().UnixMilli(), 10), Count: 500}).Result()
	if err != nil {
		return 0, fmt.Errorf("expire packets of partition %d: %w", p, wrapRedis(err))
	}
	closed := 0
	for _, id := range due {
		r, err := e.packetExpire.Run(ctx, e.rdb,
			[]string{e.keys.Packet(p, id), e.keys.PacketExpiry(p), e.keys.Events(p), e.keys.PacketGrabs(p, id), e.keys.Epoch(p)},
			id, e.retention.Milliseconds()).Int64()
		if err != nil {
			return closed, fmt.Errorf("expire packet %s: %w", id, e.noteFenced(p, wrapRedis(err)))
		}
		if r >= 0 {
			closed++
		}
	}
	return closed, nil
}

// OpenPackets counts the packets that still have shares and have not been
// closed by expiry, over every partition: one ZCARD per partition's expiry
// set, in one pipeline, so the cost does not grow with the packets.
func (e *Engine) OpenPackets(ctx context.Context) (int64, error) {
	cmds := make([]*redis.IntCmd, e.keys.Partitions)
	_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range cmds {
			cmds[p] = pipe.ZCard(ctx, e.keys.PacketExpiry(p))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count open packets: %w", wrapRedis(err))
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}
