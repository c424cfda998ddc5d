-- Drops the sharding columns of sales; a sharded sale then reads as one of
-- one shard in MySQL, while Redis still holds its shards.
ALTER TABLE sales DROP COLUMN IF EXISTS shard_partitions;
ALTER TABLE sales DROP COLUMN IF EXISTS shards;
