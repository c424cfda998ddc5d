// Package settle moves what Redis decided into MySQL: it consumes the
// partitions' settlement streams in batches, writes orders, packet grabs and
// ledger rows idempotently (keyed by event), and changes balances only by
// versioned compare-and-set. It also owns the books (accounts and ledger),
// order expiry and reconciliation. It implements the root package
// flashgrab's vocabulary over MySQL; of engine it uses only the Redis side
// (the key layout, ParseEntry, and the Engine the sweeper drives).
package settle

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"

	"github.com/go-sql-driver/mysql"
)

// collation is the one every table and text column has: ids are
// case-sensitive.
const collation = "utf8mb4_bin"

// binaryCollation converts every one of tables whose default or any of whose
// text columns is not utf8mb4_bin: tables made before ids were compared byte
// for byte. The conversion only makes unique keys stricter about what counts
// as equal, so existing rows always fit; it rebuilds the table, once.
func binaryCollation(ctx context.Context, c sqlConn, tables []string) error {
	convert, err := notBinary(ctx, c, tables)
	if err != nil {
		return err
	}
	for _, t := range convert {
		// t is one of the schema's own table names, never input.
		if _, err := c.ExecContext(ctx, "ALTER TABLE `"+t+"` CONVERT TO CHARACTER SET utf8mb4 COLLATE "+collation); err != nil {
			return fmt.Errorf("migrate: convert table %s to %s: %w", t, collation, err)
		}
	}
	return nil
}

// notBinary returns those of tables whose default collation or any of whose
// columns' is not utf8mb4_bin.
func notBinary(ctx context.Context, c sqlConn, tables []string) ([]string, error) {
	in := placeholders(len(tables), "?")
	args := []any{collation}
	for _, t := range tables {
		args = append(args, t)
	}
	args = append(args, args...)
	rows, err := c.QueryContext(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES
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
