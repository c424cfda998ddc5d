package settle

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The schema is a numbered list of migrations, each an up and a down file in
// migrations/ (NNNN_name.up.sql, NNNN_name.down.sql), embedded in the binary.
// schema_migrations records the versions a database has applied.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations is the schema, oldest first; version i+1 is migrations[i].
var migrations = mustLoadMigrations(migrationFiles)

// migration is one numbered schema change: up applies it, down undoes it.
// Each is a list of statements run one by one.
type migration struct {
	version  int
	name     string
	up, down []string
}

func (m migration) String() string { return fmt.Sprintf("%04d_%s", m.version, m.name) }

var migrationFile = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$`)

func mustLoadMigrations(fsys fs.FS) []migration {
	ms, err := loadMigrations(fsys)
	if err != nil {
		panic(err)
	}
	return ms
}

// loadMigrations reads migrations/ of fsys. Versions run 1, 2, 3… without gaps
// or repeats, and each has both files: two branches that both add "0002" must
// be renumbered when they meet, not applied in whichever order a database saw
// them.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	byVersion := map[int]*migration{}
	for _, e := range entries {
		m := migrationFile.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations: %s: want NNNN_name.up.sql or NNNN_name.down.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		mig := byVersion[v]
		if mig == nil {
			mig = &migration{version: v, name: m[2]}
			byVersion[v] = mig
		}
		if mig.name != m[2] {
			return nil, fmt.Errorf("migrations: version %d is both %s and %s", v, mig.name, m[2])
		}
		stmts := statements(string(b))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migrations: %s holds no statement", e.Name())
		}
		if m[3] == "up" {
			mig.up = stmts
		} else {
			mig.down = stmts
		}
	}
	ms := make([]migration, 0, len(byVersion))
	for v := 1; v <= len(byVersion); v++ {
		m := byVersion[v]
		if m == nil {
			return nil, fmt.Errorf("migrations: version %d missing (versions run 1..%d without gaps)", v, len(byVersion))
		}
		if m.up == nil || m.down == nil {
			return nil, fmt.Errorf("migrations: %s needs both an up and a down file", m)
		}
		ms = append(ms, *m)
	}
	return ms, nil
}

// statements splits a migration file at each ';' that ends a line, dropping
// "--" comment lines, so a file needs no multi-statement connection.
func statements(sql string) []string {
	var b strings.Builder
	for line := range strings.Lines(sql) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	var out []string
	for _, s := range regexp.MustCompile(`;[ \t]*(\n|$)`).Split(b.String(), -1) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// MigrationState is one migration's standing in a database.
type MigrationState struct {
	Version int
	Name    string
	// AppliedAt is when the database recorded it; zero while pending.
	AppliedAt time.Time
	// Known is false for a version this binary does not have: a newer
	// flashgrab applied it, and only that one can roll it back.
	Known bool
}

// Migrate applies every pending migration in order. A database made before
// migrations existed (the tables there, no schema_migrations) is adopted at
// version 1 with its rows: its missing tables are created and tables not yet
// utf8mb4_bin are converted. Concurrent migrators of one database (two serve
// starting at once) take turns on a MySQL named lock; the second finds nothing
// to do. Versions applied by a newer binary are left as they are.
func Migrate(ctx context.Context, db *sql.DB) error {
	return migrateTo(ctx, db, migrations, len(migrations))
}

// MigrateDown rolls back the n most recently applied migrations, newest first,
// and returns them. n beyond what is applied rolls back everything; the
// database is then empty, schema_migrations included. Rolling back version 1
// drops every table and every row.
func MigrateDown(ctx context.Context, db *sql.DB, n int) ([]MigrationState, error) {
	return rollback(ctx, db, migrations, n)
}

// MigrationStatus lists every migration this binary has and every version the
// database has applied, by version.
func MigrationStatus(ctx context.Context, db *sql.DB) ([]MigrationState, error) {
	applied, err := appliedVersions(ctx, db)
	if err != nil {
		return nil, err
	}
	return states(migrations, applied), nil
}

// migrationsTable records the applied versions.
const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INT          NOT NULL PRIMARY KEY,
	name       VARCHAR(128) NOT NULL,
	applied_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`

// sqlConn is what the migrator works through: the pool, or the one connection
// holding the lock.
type sqlConn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// migrateTo applies the pending migrations of ms up to version target.
func migrateTo(ctx context.Context, db *sql.DB, ms []migration, target int) error {
	return withMigrationLock(ctx, db, func(c *sql.Conn) error {
		if _, err := c.ExecContext(ctx, migrationsTable); err != nil {
			return fmt.Errorf("migrate: create schema_migrations: %w", err)
		}
		applied, err := appliedVersions(ctx, c)
		if err != nil {
			return err
		}
		if len(applied) == 0 && len(ms) > 0 {
			adopted, err := adopt(ctx, c, ms[0])
			if err != nil {
				return err
			}
			if adopted {
				applied[ms[0].version] = time.Now()
			}
		}
		for _, m := range ms {
			if m.version > target {
				break
			}
			if _, ok := applied[m.version]; ok {
				continue
			}
			if err := run(ctx, c, m, "up", m.up); err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", m.version, m.name); err != nil {
				return fmt.Errorf("migrate: record %s: %w", m, err)
			}
		}
		return nil
	})
}

// adopt records base as applied when the database holds any of its tables
// but no schema_migrations rows: a database made by the schema before
// migrations, or one whose first migration was cut off half way. base's
// statements all run twice safely, so running it again creates only what is
// missing; tables made before ids were compared byte for byte are converted
// (a rebuild of each, once).
func adopt(ctx context.Context, c sqlConn, base migration) (bool, error) {
	tables := createdTables(base)
	if len(tables) == 0 {
		return false, nil
	}
	var n int
	args := make([]any, len(tables))
	for i, t := range tables {
		args[i] = t
	}
	if err := c.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (`+placeholders(len(tables), "?")+`)`, args...).Scan(&n); err != nil {
		return false, fmt.Errorf("migrate: look for tables made before migrations: %w", err)
	}
	if n == 0 {
		return false, nil
	}
	if err := run(ctx, c, base, "up", base.up); err != nil {
		return false, err
	}
	if err := binaryCollation(ctx, c, tables); err != nil {
		return false, err
	}
	if _, err := c.ExecContext(ctx, "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", base.version, base.name); err != nil {
		return false, fmt.Errorf("migrate: record %s: %w", base, err)
	}
	return true, nil
}

var createTable = regexp.MustCompile(`^CREATE TABLE IF NOT EXISTS (\w+)`)

// createdTables returns the tables m's up statements create.
func createdTables(m migration) []string {
	var out []string
	for _, s := range m.up {
		if t := createTable.FindStringSubmatch(s); t != nil {
			out = append(out, t[1])
		}
	}
	return out
}

// rollback undoes the n newest applied migrations of ms.
func rollback(ctx context.Context, db *sql.DB, ms []migration, n int) ([]MigrationState, error) {
	if n < 1 {
		return nil, fmt.Errorf("migrate down: roll back %d migrations: want 1 or more", n)
	}
	var done []MigrationState
	err := withMigrationLock(ctx, db, func(c *sql.Conn) error {
		applied, err := appliedVersions(ctx, c)
		if err != nil {
			return err
		}
		versions := make([]int, 0, len(applied))
		for v := range applied {
			versions = append(versions, v)
		}
		slices.Sort(versions)
		slices.Reverse(versions)
		for _, v := range versions[:min(n, len(versions))] {
			if v > len(ms) {
				return fmt.Errorf("migrate down: version %d was applied by a newer flashgrab; roll it back with that binary", v)
			}
			m := ms[v-1]
			if err := run(ctx, c, m, "down", m.down); err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = ?", v); err != nil {
				return fmt.Errorf("migrate down: unrecord %s: %w", m, err)
			}
			done = append(done, MigrationState{Version: v, Name: m.name, Known: true})
		}
		if n >= len(versions) {
			// Nothing is applied: leave the database as it was before the
			// first migration.
			if _, err := c.ExecContext(ctx, "DROP TABLE IF EXISTS schema_migrations"); err != nil {
				return fmt.Errorf("migrate down: drop schema_migrations: %w", err)
			}
		}
		return nil
	})
	return done, err
}

// run executes one direction of m. MariaDB commits each DDL statement on its
// own, so a migration cut off half way has applied its first statements; every
// statement is written to run twice safely (IF [NOT] EXISTS), and the
// migration is run again whole.
func run(ctx context.Context, c sqlConn, m migration, dir string, stmts []string) error {
	for i, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("migrate: %s %s, statement %d: %w", m, dir, i+1, err)
		}
	}
	return nil
}

// appliedVersions reads schema_migrations; a database without it has applied
// nothing.
func appliedVersions(ctx context.Context, c sqlConn) (map[int]time.Time, error) {
	var exists int
	if err := c.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'schema_migrations'`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrate: look for schema_migrations: %w", err)
	}
	applied := map[int]time.Time{}
	if exists == 0 {
		return applied, nil
	}
	rows, err := c.QueryContext(ctx, "SELECT version, applied_at FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v int
		var at sql.NullTime
		if err := rows.Scan(&v, &at); err != nil {
			return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
		}
		applied[v] = at.Time
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	return applied, nil
}

// states merges what ms has with what the database applied, by version.
func states(ms []migration, applied map[int]time.Time) []MigrationState {
	var out []MigrationState
	for _, m := range ms {
		out = append(out, MigrationState{Version: m.version, Name: m.name, AppliedAt: applied[m.version], Known: true})
	}
	for v, at := range applied {
		if v < 1 || v > len(ms) {
			out = append(out, MigrationState{Version: v, AppliedAt: at})
		}
	}
	slices.SortFunc(out, func(a, b MigrationState) int { return a.Version - b.Version })
	return out
}

// lockWait bounds the wait for another migrator when ctx has no deadline.
const lockWait = time.Hour

// withMigrationLock runs fn on one connection holding the database's migration
// lock. The lock is a MySQL named lock (GET_LOCK): it is the server's, not a
// row's, so it needs no table, and the server frees it when the connection
// dies, so a killed migrator never leaves it held. Its name carries a hash of
// the database name (named locks are server-wide; names are at most 64
// characters).
func withMigrationLock(ctx context.Context, db *sql.DB, fn func(c *sql.Conn) error) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer c.Close()
	wait := lockWait
	if d, ok := ctx.Deadline(); ok {
		wait = max(time.Until(d), time.Second)
	}
	var got sql.NullInt64
	if err := c.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", ?)", int64(wait.Seconds())).Scan(&got); err != nil {
		return fmt.Errorf("migrate: take the migration lock: %w", err)
	}
	if got.Int64 != 1 {
		return fmt.Errorf("migrate: another migrator held the migration lock for %v", wait)
	}
	// Released on a context of its own: a cancelled ctx must not keep a
	// pooled connection holding the lock.
	defer c.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK("+lockName+")")
	return fn(c)
}

// lockName is the SQL expression naming the migration lock of the connection's
// database.
const lockName = "CONCAT('flashgrab:migrate:', MD5(DATABASE()))"
