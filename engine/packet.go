package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Packet modes.
const (
	ModeRandom = "random" // 拼手气: shares split at random
	ModeFixed  = "fixed"  // every share equal
)

// Limits on red packets (DESIGN.md); the API rejects anything outside them.
const (
	MaxPacketCount    = 1000
	MaxPacketCents    = 2_000_000
	DefaultPacketTTL  = 24 * time.Hour
	MaxPacketTTL      = 7 * 24 * time.Hour
	MinPacketTTL      = time.Second
	packetRandomRange = 1 << 40
)

// Packet is a red packet: TotalCents split into Count shares.
type Packet struct {
	ID             string
	SenderID       string
	TotalCents     int64
	Count          int64
	Mode           string
	CreatedAt      time.Time
	ExpiresAt      time.Time
	RemainingCents int64
	RemainingCount int64
	Expired        bool  // closed by expiry; RefundCents went back to the sender
	RefundCents    int64 // set once expired
	Grabs          []PacketShare
}

// PacketShare is one user's share of a packet.
type PacketShare struct {
	UserID      string
	AmountCents int64
	Seq         int64
	At          time.Time
}

// NewPacket validates the terms of a packet and gives it an id and expiry.
// ttl 0 means DefaultPacketTTL.
func (e *Engine) NewPacket(sender string, total, count int64, mode string, ttl time.Duration) (Packet, error) {
	if ttl == 0 {
		ttl = DefaultPacketTTL
	}
	switch {
	case !ValidID(sender):
		return Packet{}, Invalid("sender", "must be 1-64 of [A-Za-z0-9_-]")
	case count < 1 || count > MaxPacketCount:
		return Packet{}, Invalid("count", fmt.Sprintf("must be in [1, %d]", MaxPacketCount))
	case total < count || total > MaxPacketCents:
		return Packet{}, Invalid("total_cents", fmt.Sprintf("must be in [count, %d]: every share is at least 1 fen", MaxPacketCents))
	case mode != ModeRandom && mode != ModeFixed:
		return Packet{}, Invalid("mode", `must be "random" or "fixed"`)
	case mode == ModeFixed && total%count != 0:
		return Packet{}, Invalid("total_cents", "a fixed packet's total must divide evenly by count")
	case ttl < MinPacketTTL || ttl > MaxPacketTTL:
		return Packet{}, Invalid("expires_in_s", fmt.Sprintf("must be in [%d, %d]", int(MinPacketTTL.Seconds()), int(MaxPacketTTL.Seconds())))
	}
	id, err := e.ids.Next()
	if err != nil {
		return Packet{}, fmt.Errorf("new packet of %s: %w", sender, err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	return Packet{ID: strconv.FormatInt(id, 10), SenderID: sender, TotalCents: total, Count: count,
		Mode: mode, CreatedAt: now, ExpiresAt: now.Add(ttl), RemainingCents: total, RemainingCount: count}, nil
}

// PublishPacket makes a funded packet grabbable. Publishing twice is harmless.
func (e *Engine) PublishPacket(ctx context.Context, pk Packet) error {
	p := e.keys.Partition(pk.ID)
	err := e.packetCreate.Run(ctx, e.rdb, []string{e.keys.Packet(p, pk.ID), e.keys.PacketExpiry(p)},
		pk.ID, pk.SenderID, pk.TotalCents, pk.Count, pk.Mode, pk.ExpiresAt.UnixMilli(), pk.CreatedAt.UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("publish packet %s: %w", pk.ID, wrapRedis(err))
	}
	return nil
}

// Packet returns a packet with its remainder and the list of grabs in order.
func (e *Engine) Packet(ctx context.Context, id string) (Packet, error) {
	if !ValidID(id) {
		return Packet{}, fmt.Errorf("packet %q: %w", id, ErrNotFound)
	}
	p := e.keys.Partition(id)
	pipe := e.rdb.Pipeline()
	h := pipe.HGetAll(ctx, e.keys.Packet(p, id))
	g := pipe.HGetAll(ctx, e.keys.PacketGrabs(p, id))
	if _, err := pipe.Exec(ctx); err != nil {
		return Packet{}, fmt.Errorf("get packet %s: %w", id, wrapRedis(err))
	}
	v := h.Val()
	if len(v) == 0 {
		return Packet{}, fmt.Errorf("packet %s: %w", id, ErrNotFound)
	}
	d := recordDecoder{key: e.keys.Packet(p, id)}
	n := func(k string) int64 { return d.int(k, v[k]) }
	pk := Packet{ID: id, SenderID: v["sender"], TotalCents: n("total"), Count: n("count"), Mode: v["mode"],
		CreatedAt: time.UnixMilli(n("at")).UTC(), ExpiresAt: time.UnixMilli(n("exp")).UTC(),
		RemainingCents: n("rem"), RemainingCount: n("left"), Expired: v["st"] == "expired"}
	if r, ok := v["refund"]; ok { // set when the packet expires
		pk.RefundCents = d.int("refund", r)
	}
	if d.err != nil {
		return Packet{}, fmt.Errorf("packet %s: %w", id, d.err)
	}
	for user, rec := range g.Val() {
		s, err := parseShare(user, rec)
		if err != nil {
			return Packet{}, fmt.Errorf("packet %s: %w", id, err)
		}
		pk.Grabs = append(pk.Grabs, s)
	}
	sortShares(pk.Grabs)
	return pk, nil
}

// parseShare reads a grabs-hash record "amount|at_ms|seq".
func parseShare(user, rec string) (PacketShare, error) {
	parts := strings.Split(rec, "|")
	if len(parts) != 3 {
		return PacketShare{}, fmt.Errorf("grab record of %s is %q", user, rec)
	}
	amt, err1 := strconv.ParseInt(parts[0], 10, 64)
	at, err2 := strconv.ParseInt(parts[1], 10, 64)
	seq, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return PacketShare{}, fmt.Errorf("grab record of %s is %q", user, rec)
	}
	return PacketShare{UserID: user, AmountCents: amt, Seq: seq, At: time.UnixMilli(at).UTC()}, nil
}

func sortShares(s []PacketShare) {
	for i := 1; i < len(s); i++ { // insertion sort: at most 1000, mostly small
		for j := i; j > 0 && s[j].Seq < s[j-1].Seq; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// PacketGrabResult is a user's share of a packet and what is left after it.
type PacketGrabResult struct {
	PacketID       string
	AmountCents    int64
	RemainingCount int64
	RemainingCents int64
	Repeat         bool
}

// GrabPacket decides one user's grab of a packet: the share (the same share,
// with Repeat, when the user grabbed before), or ErrEmpty, ErrExpired,
// ErrNotFound.
func (e *Engine) GrabPacket(ctx context.Context, packetID, user string) (PacketGrabResult, error) {
	if !ValidID(user) {
		return PacketGrabResult{}, Invalid("user", "must be 1-64 of [A-Za-z0-9_-]")
	}
	if !ValidID(packetID) {
		return PacketGrabResult{}, fmt.Errorf("packet %q: %w", packetID, ErrNotFound)
	}
	h := e.packetHead(packetID)
	v, err := e.batch.do(ctx, &h.call, nil, user, rand.Int64N(packetRandomRange))
	if err != nil {
		return PacketGrabResult{}, fmt.Errorf("grab packet %s: %w", packetID, err)
	}
	return packetOutcome(packetID, v)
}

// packetHead is what every grab of one packet sends alike: the script's head
// keys (packet, grabs, events, expiry) and args (packet id, how long an
// emptied packet's keys are kept).
type packetHead struct {
	keys [4]string
	args [2]any
	call batchCall
}

func (e *Engine) packetHead(id string) *packetHead {
	return e.pkts.get(id, func() *packetHead {
		p := e.keys.Partition(id)
		h := &packetHead{keys: [4]string{e.keys.Packet(p, id), e.keys.PacketGrabs(p, id), e.keys.Events(p), e.keys.PacketExpiry(p)},
			args: [2]any{id, e.retention.Milliseconds()}}
		h.call = batchCall{Target: h.keys[0], Script: e.packetGrab, Keys: h.keys[:], Args: h.args[:], Width: 4}
		return h
	})
}

// packetOutcome reads one user's four values of the packet grab script's reply.
func packetOutcome(packetID string, v []any) (PacketGrabResult, error) {
	if len(v) < 4 {
		return PacketGrabResult{}, fmt.Errorf("grab packet %s: script replied %d values, want 4", packetID, len(v))
	}
	outcome, _ := v[0].(string)
	amount, _ := v[1].(int64)
	left, _ := v[2].(int64)
	rem, _ := v[3].(int64)
	res := PacketGrabResult{PacketID: packetID, AmountCents: amount, RemainingCount: left, RemainingCents: rem}
	switch outcome {
	case "ok":
		return res, nil
	case "repeat":
		res.Repeat = true
		return res, nil
	case "empty":
		return res, fmt.Errorf("packet %s: %w", packetID, ErrEmpty)
	case "expired":
		return res, fmt.Errorf("packet %s: %w", packetID, ErrExpired)
	case "not_found":
		return res, fmt.Errorf("packet %s: %w", packetID, ErrNotFound)
	}
	return res, fmt.Errorf("grab packet %s: unknown script outcome %q", packetID, outcome)
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
			[]string{e.keys.Packet(p, id), e.keys.PacketExpiry(p), e.keys.Events(p), e.keys.PacketGrabs(p, id)},
			id, e.retention.Milliseconds()).Int64()
		if err != nil {
			return closed, fmt.Errorf("expire packet %s: %w", id, wrapRedis(err))
		}
		if r >= 0 {
			closed++
		}
	}
	return closed, nil
}
