-- Drops the idempotency keys 0002 recorded: a rebuild then restores holdings
-- but not retries' answers.
ALTER TABLE orders DROP COLUMN IF EXISTS idem_key;
