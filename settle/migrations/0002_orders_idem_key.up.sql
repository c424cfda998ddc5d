-- Issue 9 item 2 (rebuild): the grab's idempotency key, so that a rebuild of
-- Redis from MySQL restores a retried grab's answer. NULL: an order settled
-- before keys were recorded (its event had none).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS idem_key VARCHAR(64) COLLATE utf8mb4_bin NULL;
