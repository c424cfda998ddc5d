package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// Sale returns the terms of the sale settled under id, and false when MySQL
// has none. MySQL keeps every sale whose creation was settled, so it is the
// record of which sale ids are taken that survives the loss of Redis; the
// stock returned is the initial stock, Sold is left zero.
func (b *Books) Sale(ctx context.Context, id string) (flashgrab.Sale, bool, error) {
	s := flashgrab.Sale{ID: id}
	var parts string
	err := b.DB.QueryRowContext(ctx, `SELECT merchant_id, price_cents, stock, per_user_limit, starts_at, ends_at,
		shards, shard_partitions FROM sales WHERE id = ?`, id).
		Scan(&s.MerchantID, &s.PriceCents, &s.Stock, &s.PerUserLimit, &s.StartsAt, &s.EndsAt, &s.Shards, &parts)
	if errors.Is(err, sql.ErrNoRows) {
		return flashgrab.Sale{}, false, nil
	}
	if err != nil {
		return flashgrab.Sale{}, false, fmt.Errorf("read sale %s: %w", id, unavailable(err))
	}
	s.StartsAt, s.EndsAt = s.StartsAt.UTC(), s.EndsAt.UTC()
	if parts != "" {
		if s.ShardPartitions, err = engine.ParseParts(parts); err != nil {
			return flashgrab.Sale{}, false, fmt.Errorf("read sale %s: %w", id, err)
		}
	}
	return s, true, nil
}
