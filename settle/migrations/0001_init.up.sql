-- The schema as it stood when migrations began (the baseline an old database
-- made by `CREATE TABLE IF NOT EXISTS` is adopted at).
--
-- Every table is utf8mb4_bin: ids are case-sensitive in Redis and in the
-- engine, so MySQL must compare them byte for byte too. Under the server's
-- default utf8mb4_general_ci, "Bob" and "bob" are one key: INSERT IGNORE of
-- the second adds nothing, and its postings, orders and payments land on the
-- first or fail forever.
--
-- Every statement can run twice (IF NOT EXISTS): MariaDB commits each DDL
-- statement on its own, so a migration cut off half way is run again whole.

CREATE TABLE IF NOT EXISTS accounts (
	id            VARCHAR(64) NOT NULL PRIMARY KEY,
	balance_cents BIGINT      NOT NULL DEFAULT 0,
	version       BIGINT      NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The ledger is append-only. event_id makes every posting idempotent: an
-- event replayed after a crash finds its row and changes nothing.
CREATE TABLE IF NOT EXISTS ledger (
	seq           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
	event_id      VARCHAR(128) NOT NULL,
	account_id    VARCHAR(64)  NOT NULL,
	delta_cents   BIGINT       NOT NULL,
	balance_after BIGINT       NOT NULL,
	kind          VARCHAR(16)  NOT NULL,
	ref           VARCHAR(128) NOT NULL,
	created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	UNIQUE KEY ledger_event (event_id),
	KEY ledger_account (account_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sales (
	id             VARCHAR(64) NOT NULL PRIMARY KEY,
	merchant_id    VARCHAR(64) NOT NULL,
	price_cents    BIGINT      NOT NULL,
	stock          BIGINT      NOT NULL,
	per_user_limit BIGINT      NOT NULL,
	starts_at      DATETIME(3) NOT NULL,
	ends_at        DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS orders (
	id           VARCHAR(40)  NOT NULL PRIMARY KEY,
	sale_id      VARCHAR(64)  NOT NULL,
	user_id      VARCHAR(64)  NOT NULL,
	merchant_id  VARCHAR(64)  NOT NULL,
	qty          BIGINT       NOT NULL,
	amount_cents BIGINT       NOT NULL,
	status       VARCHAR(16)  NOT NULL DEFAULT 'pending',
	channel      VARCHAR(16)  NULL,
	out_trade_no VARCHAR(64)  NULL,
	created_at   DATETIME(3)  NOT NULL,
	expires_at   DATETIME(3)  NOT NULL,
	paid_at      DATETIME(3)  NULL,
	released     TINYINT      NOT NULL DEFAULT 0,
	event_id     VARCHAR(32)  NOT NULL DEFAULT '',
	KEY orders_sale (sale_id),
	KEY orders_user (user_id),
	KEY orders_expiry (status, expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- status: funded (debited, not yet grabbable), live, refunded (closed by
-- expiry; refunded_cents went back to the sender).
CREATE TABLE IF NOT EXISTS packets (
	id             VARCHAR(32) NOT NULL PRIMARY KEY,
	sender_id      VARCHAR(64) NOT NULL,
	total_cents    BIGINT      NOT NULL,
	count          INT         NOT NULL,
	mode           VARCHAR(8)  NOT NULL,
	status         VARCHAR(16) NOT NULL,
	refunded_cents BIGINT      NOT NULL DEFAULT 0,
	created_at     DATETIME(3) NOT NULL,
	expires_at     DATETIME(3) NOT NULL,
	KEY packets_status (status, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS packet_grabs (
	packet_id    VARCHAR(32) NOT NULL,
	user_id      VARCHAR(64) NOT NULL,
	amount_cents BIGINT      NOT NULL,
	seq          INT         NOT NULL,
	grabbed_at   DATETIME(3) NOT NULL,
	PRIMARY KEY (packet_id, user_id),
	UNIQUE KEY packet_grabs_seq (packet_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A payment is one provider trade (out_trade_no) for an order or a top-up.
-- status: created, paid, closed (order expired; trade closed), refunding
-- (paid when it could no longer be honoured), refunded, refund_failed.
CREATE TABLE IF NOT EXISTS payments (
	out_trade_no VARCHAR(40)   NOT NULL PRIMARY KEY,
	kind         VARCHAR(8)    NOT NULL,
	order_id     VARCHAR(40)   NOT NULL,
	user_id      VARCHAR(64)   NOT NULL,
	payee_id     VARCHAR(64)   NOT NULL,
	channel      VARCHAR(8)    NOT NULL,
	amount_cents BIGINT        NOT NULL,
	status       VARCHAR(16)   NOT NULL,
	pay_url      VARCHAR(2048) NOT NULL DEFAULT '',
	trade_no     VARCHAR(64)   NULL,
	created_at   DATETIME(3)   NOT NULL,
	paid_at      DATETIME(3)   NULL,
	KEY payments_order (order_id),
	KEY payments_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per id node number (0..1023), leased by a live engine until
-- expires_at (the server's clock); see node.go.
CREATE TABLE IF NOT EXISTS node_leases (
	node       INT          PRIMARY KEY,
	owner      VARCHAR(128) NOT NULL,
	expires_at DATETIME(3)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
