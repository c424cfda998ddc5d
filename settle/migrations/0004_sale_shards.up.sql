-- Sharded sales (engine/shard.go, issue 11): how many partitions a sale's
-- stock is spread over, and which, shard 0 first ("3,7,12"; '' for a sale of
-- one shard). Reconcile reads each shard there; a rebuild of Redis needs them.
ALTER TABLE sales ADD COLUMN IF NOT EXISTS shards INT NOT NULL DEFAULT 1;
ALTER TABLE sales ADD COLUMN IF NOT EXISTS shard_partitions VARCHAR(255) NOT NULL DEFAULT '';
