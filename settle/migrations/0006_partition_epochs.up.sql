-- Each partition's epoch (settle/epoch.go, issue 9): every rebuild of the
-- partition's Redis state bumps it, under the row's lock, before it reads
-- MySQL, and writes the new number into the partition's Redis marker, which
-- every stream entry then carries. A settler batch checks its entries' epoch
-- against this row (LOCK IN SHARE MODE) in its own transaction: a batch read
-- from the stream of an epoch that a rebuild has since left is refused, as it
-- would otherwise be counted twice (once by the rebuild's state, once by
-- itself). The bump waits for every batch already past the check.
CREATE TABLE IF NOT EXISTS partition_epochs (
	part      INT         NOT NULL PRIMARY KEY,
	epoch     BIGINT      NOT NULL,
	bumped_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
