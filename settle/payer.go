package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SetPayerID records who user is on a channel (a WeChat openid from the
// mini program login), replacing what was recorded before: the latest login
// names the account that pays from now on. It lives in MySQL, so it
// outlasts restarts and Redis loss, and a payer logs in once, not per order.
func (b *Books) SetPayerID(ctx context.Context, user, channel, payerID string) error {
	_, err := b.DB.ExecContext(ctx, `INSERT INTO payer_ids (user_id, channel, payer_id, updated_at) VALUES (?,?,?,?)
		ON DUPLICATE KEY UPDATE payer_id = VALUES(payer_id), updated_at = VALUES(updated_at)`,
		user, channel, payerID, time.Now().UTC())
	if err != nil {
		return fmt.Errorf("record %s payer id of %s: %w", channel, user, unavailable(err))
	}
	return nil
}

// PayerID returns user's id on channel; ErrNoPayerID when user never logged
// in with it.
func (b *Books) PayerID(ctx context.Context, user, channel string) (string, error) {
	var id string
	err := b.DB.QueryRowContext(ctx, `SELECT payer_id FROM payer_ids WHERE user_id = ? AND channel = ?`, user, channel).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("user %s on %s: %w", user, channel, ErrNoPayerID)
	}
	if err != nil {
		return "", fmt.Errorf("read %s payer id of %s: %w", channel, user, unavailable(err))
	}
	return id, nil
}
