-- Drops the partitions' epochs: settler batches are then no longer checked
-- against rebuilds (the markers' numbers read as unknown epochs).
DROP TABLE IF EXISTS partition_epochs;
