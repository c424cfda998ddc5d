// Package settle moves what Redis decided into MySQL: it consumes the
// partitions' settlement streams in batches, writes orders, packet grabs and
// ledger rows idempotently (keyed by event), and changes balances only by
// versioned compare-and-set. It also owns the books (accounts and ledger),
// order expiry and reconciliation. It implements the root package
// flashgrab's vocabulary over MySQL; of engine it uses only the Redis side
// (the key layout, ParseEvent, and the Engine the sweeper drives).
package settle

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"

	"github.com/go-sql-driver/mysql"
)

// schema is applied by Migrate; every statement is idempotent.
//
// Every table is utf8mb4_bin: ids are case-sensitive in Redis and in the
// engine, so MySQL must compare them byte for byte too. Under the server's
// default utf8mb4_general_ci, "Bob" and "bob" are one key: INSERT IGNORE of the
// second adds nothing, and its postings, orders and payments land on the
// first or fail forever.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS accounts (
		id            VARCHAR(64) NOT NULL PRIMARY KEY,
		balance_cents BIGINT      NOT NULL DEFAULT 0,
		version       BIGINT      NOT NULL DEFAULT 0
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	// The ledger is append-only. event_id makes every posting idempotent: an
	// event replayed after a crash finds its row and changes nothing.
	`CREATE TABLE IF NOT EXISTS ledger (
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
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS sales (
		id             VARCHAR(64) NOT NULL PRIMARY KEY,
		merchant_id    VARCHAR(64) NOT NULL,
		price_cents    BIGINT      NOT NULL,
		stock          BIGINT      NOT NULL,
		per_user_limit BIGINT      NOT NULL,
		starts_at      DATETIME(3) NOT NULL,
		ends_at        DATETIME(3) NOT NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS orders (
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
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	// status: funded (debited, not yet grabbable), live, refunded (closed
	// by expiry; refunded_cents went back to the sender).
	`CREATE TABLE IF NOT EXISTS packets (
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
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS packet_grabs (
		packet_id    VARCHAR(32) NOT NULL,
		user_id      VARCHAR(64) NOT NULL,
		amount_cents BIGINT      NOT NULL,
		seq          INT         NOT NULL,
		grabbed_at   DATETIME(3) NOT NULL,
		PRIMARY KEY (packet_id, user_id),
		UNIQUE KEY packet_grabs_seq (packet_id, seq)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	// A payment is one provider trade (out_trade_no) for an order or a top-up.
	// status: created, paid, closed (order expired; trade closed), refunding
	// (paid when it could no longer be honoured), refunded.
	`CREATE TABLE IF NOT EXISTS payments (
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
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	// One row per id node number (0..1023), leased by a live engine until
	// expires_at (the server's clock); see node.go.
	`CREATE TABLE IF NOT EXISTS node_leases (
		node       INT          PRIMARY KEY,
		owner      VARCHAR(128) NOT NULL,
		expires_at DATETIME(3)  NOT NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
}

// columns adds the columns that came after a table was first made; every
// statement is idempotent (MariaDB's ADD COLUMN IF NOT EXISTS).
var columns = []string{
	// Sharded sales (engine/shard.go): the shard count and the partitions
	// chosen at create, shard 0 first ("3,7,12"; "" for one shard).
	`ALTER TABLE sales ADD COLUMN IF NOT EXISTS shards INT NOT NULL DEFAULT 1,
		ADD COLUMN IF NOT EXISTS shard_partitions VARCHAR(255) NOT NULL DEFAULT ''`,
}

// Migrate creates the schema when it is missing, and converts tables made
// before ids were compared byte for byte to utf8mb4_bin. On an up-to-date
// schema it costs the CREATE ... IF NOT EXISTS statements and one query.
func Migrate(ctx context.Context, db *sql.DB) error {
	for _, stmt := range append(schema[:len(schema):len(schema)], columns...) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	return binaryCollation(ctx, db)
}

// collation is the one every table and text column has: ids are
// case-sensitive.
const collation = "utf8mb4_bin"

var tableName = regexp.MustCompile(`CREATE TABLE IF NOT EXISTS (\w+)`)

// binaryCollation converts every table of the schema whose default or any of
// whose text columns is not utf8mb4_bin. The conversion only makes unique keys
// stricter about what counts as equal, so existing rows always fit; it
// rebuilds the table, once.
func binaryCollation(ctx context.Context, db *sql.DB) error {
	convert, err := notBinary(ctx, db)
	if err != nil {
		return err
	}
	for _, t := range convert {
		// t is one of the schema's own table names, never input.
		if _, err := db.ExecContext(ctx, "ALTER TABLE `"+t+"` CONVERT TO CHARACTER SET utf8mb4 COLLATE "+collation); err != nil {
			return fmt.Errorf("migrate: convert table %s to %s: %w", t, collation, err)
		}
	}
	return nil
}

// notBinary returns the schema's tables whose default collation or
// any of whose columns' is not utf8mb4_bin.
func notBinary(ctx context.Context, db *sql.DB) ([]string, error) {
	var tables []any
	for _, stmt := range schema {
		if m := tableName.FindStringSubmatch(stmt); m != nil {
			tables = append(tables, m[1])
		}
	}
	in := placeholders(len(tables), "?")
	args := append(append([]any{collation}, tables...), append([]any{collation}, tables...)...)
	rows, err := db.QueryContext(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_COLLATION <> ? AND TABLE_NAME IN (`+in+`)
		UNION SELECT TABLE_NAME FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND COLLATION_NAME <> ? AND TABLE_NAME IN (`+in+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("migrate: find tables not in %s: %w", collation, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("migrate: find tables not in %s: %w", collation, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: find tables not in %s: %w", collation, err)
	}
	return out, nil
}

var dbNamePattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// CreateDatabase creates the database named in dsn when it does not exist, so
// that `serve` works against a fresh server.
func CreateDatabase(ctx context.Context, dsn string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("parse MySQL DSN: %w", err)
	}
	if cfg.DBName == "" {
		return fmt.Errorf("MySQL DSN names no database")
	}
	if !dbNamePattern.MatchString(cfg.DBName) {
		return fmt.Errorf("database name %q: use letters, digits and '_'", cfg.DBName)
	}
	name := cfg.DBName
	cfg.DBName = ""
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4 COLLATE "+collation); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
