package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/flashgrab/flashgrab"
)

// Packet statuses in MySQL.
const (
	PacketFunded   = "funded" // sender debited; not yet grabbable in Redis
	PacketLive     = "live"
	PacketRefunded = "refunded"
)

// FundPacket debits the sender by the packet's total (versioned
// compare-and-set; ErrInsufficientFunds when short) and records the packet,
// in one transaction. The packet is not grabbable until published to Redis.
func (b *Books) FundPacket(ctx context.Context, pk flashgrab.Packet) error {
	debit := Posting{EventID: "packet:" + pk.ID, Account: pk.SenderID, Delta: -pk.TotalCents, Kind: "packet", Ref: pk.ID}
	return b.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := post(ctx, tx, []Posting{debit}, true); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO packets (id, sender_id, total_cents, count, mode, status, created_at, expires_at)
			VALUES (?,?,?,?,?,?,?,?)`, pk.ID, pk.SenderID, pk.TotalCents, pk.Count, pk.Mode, PacketFunded, pk.CreatedAt, pk.ExpiresAt)
		return unavailable(err)
	}, []string{pk.SenderID})
}

// MarkPacketLive records that a funded packet was published to Redis.
func (b *Books) MarkPacketLive(ctx context.Context, id string) error {
	_, err := b.DB.ExecContext(ctx, `UPDATE packets SET status = ? WHERE id = ? AND status = ?`, PacketLive, id, PacketFunded)
	if err != nil {
		return fmt.Errorf("mark packet %s live: %w", id, unavailable(err))
	}
	return nil
}

// FundedPackets returns packets funded before cutoff and still not published:
// their create was interrupted between the debit and Redis.
func (b *Books) FundedPackets(ctx context.Context, cutoff time.Time) ([]flashgrab.Packet, error) {
	rows, err := b.DB.QueryContext(ctx, `SELECT id, sender_id, total_cents, count, mode, created_at, expires_at
		FROM packets WHERE status = ? AND created_at < ? LIMIT 500`, PacketFunded, cutoff)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var out []flashgrab.Packet
	for rows.Next() {
		var pk flashgrab.Packet
		if err := rows.Scan(&pk.ID, &pk.SenderID, &pk.TotalCents, &pk.Count, &pk.Mode, &pk.CreatedAt, &pk.ExpiresAt); err != nil {
			return nil, unavailable(err)
		}
		pk.CreatedAt, pk.ExpiresAt = pk.CreatedAt.UTC(), pk.ExpiresAt.UTC()
		out = append(out, pk)
	}
	return out, unavailable(rows.Err())
}

func insertGrabs(ctx context.Context, tx *sql.Tx, events []flashgrab.Event) error {
	var args []any
	for _, e := range events {
		if e.Kind == flashgrab.EventGrab {
			g := e.Grab
			args = append(args, g.PacketID, g.UserID, g.AmountCents, g.Seq, g.At)
		}
	}
	if len(args) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, "INSERT IGNORE INTO packet_grabs (packet_id, user_id, amount_cents, seq, grabbed_at) VALUES "+
		placeholders(len(args)/5, "(?,?,?,?,?)"), args...)
	return unavailable(err)
}

func closeRefunded(ctx context.Context, tx *sql.Tx, events []flashgrab.Event) error {
	for _, e := range events {
		if e.Kind != flashgrab.EventRefund {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE packets SET status = ?, refunded_cents = ? WHERE id = ?`,
			PacketRefunded, e.Refund.AmountCents, e.Refund.PacketID); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// Packet returns a packet as MySQL has settled it: its terms, its settled
// shares in grab order, and its refund. The API reads it when Redis no longer
// keeps the packet (past its retention).
func (b *Books) Packet(ctx context.Context, id string) (flashgrab.Packet, error) {
	pk := flashgrab.Packet{ID: id}
	var status string
	err := b.DB.QueryRowContext(ctx, `SELECT sender_id, total_cents, count, mode, status, refunded_cents, created_at, expires_at
		FROM packets WHERE id = ?`, id).Scan(&pk.SenderID, &pk.TotalCents, &pk.Count, &pk.Mode, &status, &pk.RefundCents,
		&pk.CreatedAt, &pk.ExpiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		return flashgrab.Packet{}, fmt.Errorf("packet %s: %w", id, flashgrab.ErrNotFound)
	}
	if err != nil {
		return flashgrab.Packet{}, fmt.Errorf("get packet %s: %w", id, unavailable(err))
	}
	rows, err := b.DB.QueryContext(ctx, `SELECT user_id, amount_cents, seq, grabbed_at FROM packet_grabs
		WHERE packet_id = ? ORDER BY seq`, id)
	if err != nil {
		return flashgrab.Packet{}, fmt.Errorf("get packet %s: %w", id, unavailable(err))
	}
	defer rows.Close()
	var shares int64
	for rows.Next() {
		var g flashgrab.PacketShare
		if err := rows.Scan(&g.UserID, &g.AmountCents, &g.Seq, &g.At); err != nil {
			return flashgrab.Packet{}, unavailable(err)
		}
		g.At = g.At.UTC()
		shares += g.AmountCents
		pk.Grabs = append(pk.Grabs, g)
	}
	pk.CreatedAt, pk.ExpiresAt = pk.CreatedAt.UTC(), pk.ExpiresAt.UTC()
	pk.RemainingCents, pk.RemainingCount = pk.TotalCents-shares, pk.Count-int64(len(pk.Grabs))
	pk.Expired = status == PacketRefunded
	return pk, unavailable(rows.Err())
}
