package settle

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// What MySQL knows of a partition whose Redis state was lost: read by the
// Rebuilder, and the MySQL-side refund of packets whose Redis keys are gone.
//
// A partition is crc32(id) mod P of the sale or packet id; MySQL's CRC32()
// is the same IEEE checksum, so the partition is selected in the query.

// partitionState reads partition p: its sales with the units their orders
// hold, those orders, the sharded sales with a shard on p (st.Shards, their
// stock and orders left to shardState), its live packets with their settled shares (state),
// the live packets already past their expiry (expired: refunded, not
// restored), and the orders whose stock was stranded (released = 2).
//
// An order holds units while pending or paid, or cancelled (refunded) with
// its stock not yet returned (released = 0: the expirer returns it later).
// A stranded order's stock is not counted: the rebuild gives it back.
func (b *Books) partitionState(ctx context.Context, keys engine.Keyspace, p int) (st engine.PartitionState, expired, stranded []string, err error) {
	fail := func(what string, err error) (engine.PartitionState, []string, []string, error) {
		return engine.PartitionState{}, nil, nil, fmt.Errorf("read %s of partition %d from MySQL: %w", what, p, unavailable(err))
	}
	// One consistent read: the orders and their sums agree with each other.
	tx, err := b.DB.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fail("sales", err)
	}
	defer tx.Rollback()
	P := keys.Partitions
	// The shards of sharded sales on p (engine/shard.go) are restored
	// apart (Rebuilder.restoreShards): their stock depends on the other
	// shards'. Shard 0 is the sale's own partition, so its orders and
	// stranded orders are left out below too.
	rows, err := tx.QueryContext(ctx, `SELECT id, merchant_id, price_cents, stock, per_user_limit, starts_at, ends_at, shards, shard_partitions
		FROM sales WHERE shards > 1 AND FIND_IN_SET(?, shard_partitions) > 0 ORDER BY id`, p)
	if err != nil {
		return fail("sharded sales", err)
	}
	isSharded := map[string]bool{}
	for rows.Next() {
		var s flashgrab.Sale
		var layout string
		if err := rows.Scan(&s.ID, &s.MerchantID, &s.PriceCents, &s.Stock, &s.PerUserLimit, &s.StartsAt, &s.EndsAt, &s.Shards, &layout); err != nil {
			rows.Close()
			return fail("sharded sales", err)
		}
		parts, err := engine.ParseParts(layout)
		if err != nil || len(parts) != s.Shards {
			rows.Close()
			return fail("sharded sales", fmt.Errorf("sale %s: %d shards on partitions %q", s.ID, s.Shards, layout))
		}
		s.StartsAt, s.EndsAt, s.ShardPartitions = s.StartsAt.UTC(), s.EndsAt.UTC(), parts
		isSharded[s.ID] = true
		st.Shards = append(st.Shards, engine.SaleShard{Sale: s, Index: slices.Index(parts, p)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail("sharded sales", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT id, merchant_id, price_cents, stock, per_user_limit, starts_at, ends_at
		FROM sales WHERE CRC32(id) % ? = ? AND shards <= 1 ORDER BY id`, P, p)
	if err != nil {
		return fail("sales", err)
	}
	for rows.Next() {
		var s flashgrab.Sale
		if err := rows.Scan(&s.ID, &s.MerchantID, &s.PriceCents, &s.Stock, &s.PerUserLimit, &s.StartsAt, &s.EndsAt); err != nil {
			rows.Close()
			return fail("sales", err)
		}
		s.StartsAt, s.EndsAt = s.StartsAt.UTC(), s.EndsAt.UTC()
		st.Sales = append(st.Sales, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail("sales", err)
	}
	known := make(map[string]bool, len(st.Sales))
	for _, s := range st.Sales {
		known[s.ID] = true
	}
	rows, err = tx.QueryContext(ctx, `SELECT id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, idem_key, released, status
		FROM orders WHERE CRC32(sale_id) % ? = ? AND (status IN (?, ?) OR (status IN (?, ?) AND released <> 1)) ORDER BY id`,
		P, p, OrderPending, OrderPaid, OrderCancelled, OrderRefunded)
	if err != nil {
		return fail("orders", err)
	}
	sold := map[string]int64{}
	for rows.Next() {
		var o flashgrab.Order
		var key sql.NullString
		var released int
		var status string
		if err := rows.Scan(&o.ID, &o.SaleID, &o.UserID, &o.MerchantID, &o.Qty, &o.AmountCents, &o.CreatedAt, &key, &released, &status); err != nil {
			rows.Close()
			return fail("orders", err)
		}
		if isSharded[o.SaleID] || !known[o.SaleID] {
			// A sharded sale's are its shards' (shardLevels). An order
			// of a sale MySQL does not know (its creation lost before it
			// settled) has nothing to be restored into.
			continue
		}
		if released == 2 && (status == OrderCancelled || status == OrderRefunded) {
			stranded = append(stranded, o.ID)
			continue
		}
		o.CreatedAt = o.CreatedAt.UTC()
		o.Key, o.KeyKnown = key.String, key.Valid
		sold[o.SaleID] += o.Qty
		st.Orders = append(st.Orders, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail("orders", err)
	}
	for i := range st.Sales {
		s := &st.Sales[i]
		s.Sold = sold[s.ID]
		s.Stock -= s.Sold
	}
	now := time.Now()
	rows, err = tx.QueryContext(ctx, `SELECT id, sender_id, total_cents, count, mode, created_at, expires_at
		FROM packets WHERE CRC32(id) % ? = ? AND status = ? ORDER BY id`, P, p, PacketLive)
	if err != nil {
		return fail("packets", err)
	}
	live := map[string]int{}
	for rows.Next() {
		var pk flashgrab.Packet
		if err := rows.Scan(&pk.ID, &pk.SenderID, &pk.TotalCents, &pk.Count, &pk.Mode, &pk.CreatedAt, &pk.ExpiresAt); err != nil {
			rows.Close()
			return fail("packets", err)
		}
		pk.CreatedAt, pk.ExpiresAt = pk.CreatedAt.UTC(), pk.ExpiresAt.UTC()
		if !now.Before(pk.ExpiresAt) {
			expired = append(expired, pk.ID)
			continue
		}
		pk.RemainingCents, pk.RemainingCount = pk.TotalCents, pk.Count
		live[pk.ID] = len(st.Packets)
		st.Packets = append(st.Packets, pk)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail("packets", err)
	}
	if len(live) > 0 {
		rows, err = tx.QueryContext(ctx, `SELECT g.packet_id, g.user_id, g.amount_cents, g.seq, g.grabbed_at
			FROM packet_grabs g JOIN packets p ON p.id = g.packet_id
			WHERE CRC32(p.id) % ? = ? AND p.status = ? ORDER BY g.packet_id, g.seq`, P, p, PacketLive)
		if err != nil {
			return fail("packet shares", err)
		}
		for rows.Next() {
			var id string
			var g flashgrab.PacketShare
			if err := rows.Scan(&id, &g.UserID, &g.AmountCents, &g.Seq, &g.At); err != nil {
				rows.Close()
				return fail("packet shares", err)
			}
			i, ok := live[id]
			if !ok {
				continue // expired meanwhile
			}
			pk := &st.Packets[i]
			g.At = g.At.UTC()
			pk.Grabs = append(pk.Grabs, g)
			pk.RemainingCents -= g.AmountCents
			pk.RemainingCount--
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fail("packet shares", err)
		}
	}
	return st, expired, stranded, nil
}

// resolveStranded marks released the stranded orders of the sales a rebuild
// is about to restore: their stock was not counted as sold, so it goes back
// with the sale's hash.
func (b *Books) resolveStranded(ctx context.Context, stranded, restoredSales []string) (int, error) {
	if len(stranded) == 0 || len(restoredSales) == 0 {
		return 0, nil
	}
	args := anys(stranded)
	args = append(args, anys(restoredSales)...)
	res, err := b.DB.ExecContext(ctx, `UPDATE orders SET released = 1 WHERE released = 2 AND id IN (`+placeholders(len(stranded), "?")+
		`) AND sale_id IN (`+placeholders(len(restoredSales), "?")+`)`, args...)
	if err != nil {
		return 0, fmt.Errorf("resolve stranded orders: %w", unavailable(err))
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// RefundLostPacket closes a live packet whose Redis keys are gone: what its
// settled shares leave goes back to the sender, from MySQL, exactly once
// (the packet row is locked and must still be live, and the ledger posting
// has the event id the Redis path's refund would have, "refund:<id>").
// The caller makes sure no share of the packet is still unsettled in its
// stream. It returns the cents refunded and whether this call closed it.
func (b *Books) RefundLostPacket(ctx context.Context, id string) (int64, bool, error) {
	var sender string
	err := b.DB.QueryRowContext(ctx, `SELECT sender_id FROM packets WHERE id = ?`, id).Scan(&sender)
	if err != nil {
		return 0, false, fmt.Errorf("refund lost packet %s: %w", id, unavailable(err))
	}
	var cents int64
	var done bool
	err = b.Tx(ctx, func(tx *sql.Tx) error {
		cents, done = 0, false
		var total int64
		var status string
		if err := tx.QueryRowContext(ctx, `SELECT total_cents, status FROM packets WHERE id = ? FOR UPDATE`, id).Scan(&total, &status); err != nil {
			return unavailable(err)
		}
		if status != PacketLive {
			return nil
		}
		var shares int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount_cents), 0) FROM packet_grabs WHERE packet_id = ?`, id).Scan(&shares); err != nil {
			return unavailable(err)
		}
		rem := total - shares
		if rem > 0 {
			if _, err := post(ctx, tx, []Posting{{EventID: "refund:" + id, Account: sender, Delta: rem, Kind: "refund", Ref: id}}, false); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE packets SET status = ?, refunded_cents = ? WHERE id = ?`, PacketRefunded, rem, id); err != nil {
			return unavailable(err)
		}
		cents, done = rem, true
		return nil
	}, []string{sender})
	if err != nil {
		return 0, false, fmt.Errorf("refund lost packet %s: %w", id, err)
	}
	return cents, done, nil
}

// expiredLivePackets returns the live packets whose expiry passed before
// cutoff with shares left in MySQL: the sweeper checks whether Redis still
// has them. An emptied packet stays live in MySQL for good and is left out:
// it has nothing to refund, and there are many.
func (b *Books) expiredLivePackets(ctx context.Context, cutoff time.Time) ([]string, error) {
	rows, err := b.DB.QueryContext(ctx, `SELECT p.id FROM packets p WHERE p.status = ? AND p.expires_at < ?
		AND (SELECT COUNT(*) FROM packet_grabs g WHERE g.packet_id = p.id) < p.count LIMIT 500`, PacketLive, cutoff)
	if err != nil {
		return nil, fmt.Errorf("list expired live packets: %w", unavailable(err))
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list expired live packets: %w", unavailable(err))
		}
		ids = append(ids, id)
	}
	return ids, unavailable(rows.Err())
}

// heldOrder is an order of a sharded sale as a shard's rebuild counts it.
type heldOrder struct {
	flashgrab.Order
	// stranded: cancelled or refunded with its stock stranded (released =
	// 2): the expirer found its shard's keys gone and returned nothing.
	stranded bool
}

// heldOrders returns the orders of sale id that hold units, as
// partitionState counts them, and also those whose stock was stranded
// (released = 2): the rebuild of the shard that sold one gives its units
// back (shardLevels); any other shard's rebuild counts them as held.
func (b *Books) heldOrders(ctx context.Context, id string) ([]heldOrder, error) {
	rows, err := b.DB.QueryContext(ctx, `SELECT id, sale_id, user_id, merchant_id, qty, amount_cents, created_at, idem_key, released, status
		FROM orders WHERE sale_id = ? AND (status IN (?, ?) OR (status IN (?, ?) AND released <> 1)) ORDER BY id`,
		id, OrderPending, OrderPaid, OrderCancelled, OrderRefunded)
	if err != nil {
		return nil, fmt.Errorf("read orders of sale %s from MySQL: %w", id, unavailable(err))
	}
	defer rows.Close()
	var out []heldOrder
	for rows.Next() {
		var o heldOrder
		var key sql.NullString
		var released int
		var status string
		if err := rows.Scan(&o.ID, &o.SaleID, &o.UserID, &o.MerchantID, &o.Qty, &o.AmountCents, &o.CreatedAt, &key, &released, &status); err != nil {
			return nil, fmt.Errorf("read orders of sale %s from MySQL: %w", id, unavailable(err))
		}
		o.CreatedAt = o.CreatedAt.UTC()
		o.Key, o.KeyKnown = key.String, key.Valid
		o.stranded = released == 2 && (status == OrderCancelled || status == OrderRefunded)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read orders of sale %s from MySQL: %w", id, unavailable(err))
	}
	return out, nil
}
