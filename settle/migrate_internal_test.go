package settle

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// schemaSnapshot describes every table of the connection's database from
// information_schema: each table's collation, each column's type, nullability,
// default, collation and extra, and each index's columns and uniqueness, one
// line each, sorted. schema_migrations is left out (checkVersions reads it).
func schemaSnapshot(t *testing.T, db *sql.DB) []string {
	t.Helper()
	queries := []string{
		`SELECT CONCAT_WS(' ', 'table', TABLE_NAME, TABLE_COLLATION, ENGINE)
			FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'schema_migrations'`,
		`SELECT CONCAT_WS(' ', 'column', TABLE_NAME, LPAD(ORDINAL_POSITION, 3, '0'), COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE,
				IFNULL(COLUMN_DEFAULT, '-'), IFNULL(COLLATION_NAME, '-'), EXTRA)
			FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'schema_migrations'`,
		`SELECT CONCAT_WS(' ', 'index', TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE)
			FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'schema_migrations'`,
	}
	var out []string
	for _, q := range queries {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	slices.Sort(out)
	return out
}

// tableCount is the number of tables in the database, schema_migrations
// included.
func tableCount(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkVersions fails t unless schema_migrations records exactly the versions
// 1..n, once each, with the embedded migrations' names.
func checkVersions(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	rows, err := db.Query("SELECT version, name FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d %s", v, name))
	}
	var want []string
	for _, m := range migrations[:n] {
		want = append(want, fmt.Sprintf("%d %s", m.version, m.name))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("schema_migrations: %q, want %q", got, want)
	}
}

// TestMigrateUpDownUp walks the embedded migrations from an empty database up
// one version at a time, recording the schema information_schema shows after
// each, then down one at a time, checking each step back lands on the schema
// recorded on the way up, to no table at all; then up again to the latest.
// Every migration must change the schema, and down must undo exactly what up
// did.
func TestMigrateUpDownUp(t *testing.T) {
	db, _ := testenv.MySQL(t)
	ctx := context.Background()
	if n := tableCount(t, db); n != 0 {
		t.Fatalf("a fresh database holds %d tables", n)
	}
	snaps := [][]string{schemaSnapshot(t, db)}
	for _, m := range migrations {
		if err := migrateTo(ctx, db, migrations, m.version); err != nil {
			t.Fatal(err)
		}
		checkVersions(t, db, m.version)
		s := schemaSnapshot(t, db)
		if slices.Equal(s, snaps[len(snaps)-1]) {
			t.Fatalf("%s up changed nothing information_schema shows", m)
		}
		snaps = append(snaps, s)
	}
	for _, want := range []string{"table accounts utf8mb4_bin InnoDB", "index ledger ledger_event 1 event_id 0",
		"column orders 007 status varchar(16) NO 'pending' utf8mb4_bin "} {
		if !slices.Contains(snaps[len(snaps)-1], want) {
			t.Fatalf("latest schema lacks %q: %q", want, snaps[len(snaps)-1])
		}
	}
	for v := len(migrations); v > 0; v-- {
		done, err := MigrateDown(ctx, db, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(done) != 1 || done[0].Version != v {
			t.Fatalf("down from %d rolled back %+v", v, done)
		}
		if got := schemaSnapshot(t, db); !slices.Equal(got, snaps[v-1]) {
			t.Fatalf("down to %d: schema\n%q\nwant (as on the way up)\n%q", v-1, got, snaps[v-1])
		}
		if v > 1 {
			checkVersions(t, db, v-1)
		}
	}
	if n := tableCount(t, db); n != 0 {
		t.Fatalf("down to 0 left %d tables", n)
	}
	if done, err := MigrateDown(ctx, db, 1); err != nil || len(done) != 0 {
		t.Fatalf("down on an empty database: %+v %v", done, err)
	}
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	checkVersions(t, db, len(migrations))
	if got := schemaSnapshot(t, db); !slices.Equal(got, snaps[len(snaps)-1]) {
		t.Fatalf("up again: schema\n%q\nwant\n%q", got, snaps[len(snaps)-1])
	}
	st, err := MigrationStatus(ctx, db)
	if err != nil || len(st) != len(migrations) {
		t.Fatalf("status %+v %v", st, err)
	}
	for _, m := range st {
		if !m.Known || m.AppliedAt.IsZero() {
			t.Fatalf("status after up: %+v", m)
		}
	}
}

// TestMigrationsRunTwice runs every migration's up twice, then every down
// twice: MariaDB commits each DDL statement on its own, so a migration cut off
// half way is run again whole and must not fail on what it already did.
func TestMigrationsRunTwice(t *testing.T) {
	db, _ := testenv.MySQL(t)
	ctx := context.Background()
	for _, m := range migrations {
		for range 2 {
			if err := run(ctx, db, m, "up", m.up); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range slices.Backward(migrations) {
		for range 2 {
			if err := run(ctx, db, m, "down", m.down); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := tableCount(t, db); n != 0 {
		t.Fatalf("every down left %d tables", n)
	}
}

// TestMigrateAdoptsOldSchema: a database the schema before migrations made
// (its tables, rows in them, no schema_migrations; node_leases missing, as
// from an older binary) is adopted: the rows stay, the missing table is made,
// schema_migrations records every version, and the schema is the one a fresh
// database migrates to.
func TestMigrateAdoptsOldSchema(t *testing.T) {
	db, _ := testenv.MySQL(t)
	fresh, _ := testenv.MySQL(t)
	ctx := context.Background()
	createOldSchema(t, db, "utf8mb4_bin")
	if _, err := db.Exec("DROP TABLE node_leases"); err != nil {
		t.Fatal(err)
	}
	b := &Books{DB: db}
	if _, err := b.Credit(ctx, "alice", 250, "seed-alice"); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	checkVersions(t, db, len(migrations))
	if err := Migrate(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if got, want := schemaSnapshot(t, db), schemaSnapshot(t, fresh); !slices.Equal(got, want) {
		t.Fatalf("adopted schema\n%q\nwant (fresh)\n%q", got, want)
	}
	if a, err := b.Account(ctx, "alice"); err != nil || a.BalanceCents != 250 {
		t.Fatalf("alice after adoption: %+v %v", a, err)
	}
	var ledger int
	if err := db.QueryRow("SELECT COUNT(*) FROM ledger WHERE account_id = 'alice'").Scan(&ledger); err != nil || ledger != 1 {
		t.Fatalf("alice's ledger rows after adoption: %d %v", ledger, err)
	}
}

// TestMigrateConcurrentMigrators starts four migrators, each with its own
// pool as four serve processes would have, on one empty database at once:
// all succeed, each version is recorded once, and the schema is whole.
// Without the lock two would both find version 1 pending and the second to
// record it would fail on the duplicate key.
func TestMigrateConcurrentMigrators(t *testing.T) {
	db, dsn := testenv.MySQL(t)
	ref, _ := testenv.MySQL(t)
	if err := Migrate(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	const migrators = 4
	var wg sync.WaitGroup
	errs := make(chan error, migrators)
	for range migrators {
		pool, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		wg.Go(func() { errs <- Migrate(context.Background(), pool) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkVersions(t, db, len(migrations))
	if got, want := schemaSnapshot(t, db), schemaSnapshot(t, ref); !slices.Equal(got, want) {
		t.Fatalf("schema after concurrent migrators\n%q\nwant\n%q", got, want)
	}
}

// TestMigrateWaitsForLock: while another connection holds the database's
// migration lock, Migrate waits in GET_LOCK and changes nothing; once the
// lock is released it migrates. A migrator of another database is not held
// up by it.
func TestMigrateWaitsForLock(t *testing.T) {
	db, _ := testenv.MySQL(t)
	other, _ := testenv.MySQL(t)
	ctx := context.Background()
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var got int
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", 5)").Scan(&got); err != nil || got != 1 {
		t.Fatalf("take the lock: %d %v", got, err)
	}
	done := make(chan error, 1)
	go func() { done <- Migrate(ctx, db) }()
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND INFO LIKE 'SELECT GET_LOCK(%'`).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == 1, fmt.Sprintf("%d connections waiting in GET_LOCK", n)
	})
	if err := Migrate(ctx, other); err != nil {
		t.Fatalf("another database's migration: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Migrate returned while the lock was held: %v", err)
	default:
	}
	if n := tableCount(t, db); n != 0 {
		t.Fatalf("%d tables made while the lock was held", n)
	}
	if _, err := holder.ExecContext(ctx, "DO RELEASE_LOCK("+lockName+")"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkVersions(t, db, len(migrations))
}

// TestMigrateNewerVersion: a version recorded by a newer binary is listed as
// unknown, left alone by Migrate, and refused by MigrateDown, which then
// changes nothing.
func TestMigrateNewerVersion(t *testing.T) {
	db, _ := testenv.MySQL(t)
	ctx := context.Background()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	newer := len(migrations) + 1
	if _, err := db.Exec("INSERT INTO schema_migrations (version, name) VALUES (?, 'from_the_future')", newer); err != nil {
		t.Fatal(err)
	}
	before := schemaSnapshot(t, db)
	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate with a newer version recorded: %v", err)
	}
	if done, err := MigrateDown(ctx, db, 2); err == nil || !strings.Contains(err.Error(), "newer flashgrab") || len(done) != 0 {
		t.Fatalf("down over a newer version: %+v %v", done, err)
	}
	if got := schemaSnapshot(t, db); !slices.Equal(got, before) {
		t.Fatalf("refused down changed the schema:\n%q\nwas\n%q", got, before)
	}
	st, err := MigrationStatus(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if last := st[len(st)-1]; len(st) != newer || last.Version != newer || last.Known || last.AppliedAt.IsZero() {
		t.Fatalf("status: %+v", st)
	}
}

// TestLoadMigrationsRejects: a migrations folder with a gap, a repeated
// version, a missing down file, an empty file or a misnamed file is refused
// when the binary starts, not half applied to a database.
func TestLoadMigrationsRejects(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ok := fstest.MapFS{
		"migrations/0001_a.up.sql":   file("CREATE TABLE IF NOT EXISTS a (x INT);\n-- a comment\nCREATE TABLE IF NOT EXISTS b (y INT)"),
		"migrations/0001_a.down.sql": file("DROP TABLE IF EXISTS b;\nDROP TABLE IF EXISTS a;\n"),
		"migrations/0002_c.up.sql":   file("ALTER TABLE a ADD COLUMN IF NOT EXISTS z INT;"),
		"migrations/0002_c.down.sql": file("ALTER TABLE a DROP COLUMN IF EXISTS z;"),
	}
	ms, err := loadMigrations(ok)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].String() != "0001_a" || len(ms[0].up) != 2 || len(ms[0].down) != 2 || ms[1].String() != "0002_c" {
		t.Fatalf("loaded %+v", ms)
	}
	with := func(name, data string) fstest.MapFS {
		fs := fstest.MapFS{}
		for k, v := range ok {
			fs[k] = v
		}
		if data == "" {
			delete(fs, name)
		} else {
			fs[name] = file(data)
		}
		return fs
	}
	for name, fs := range map[string]fstest.MapFS{
		"gap":        with("migrations/0004_d.up.sql", "SELECT 1"),
		"repeated":   with("migrations/0002_e.up.sql", "SELECT 1"),
		"no down":    with("migrations/0002_c.down.sql", ""),
		"empty":      with("migrations/0002_c.down.sql", "-- nothing\n"),
		"misnamed":   with("migrations/3_f.up.sql", "SELECT 1"),
		"not sql":    with("migrations/0003_g.up.txt", "SELECT 1"),
		"upper case": with("migrations/0003_G.up.sql", "SELECT 1"),
	} {
		if ms, err := loadMigrations(fs); err == nil {
			t.Errorf("%s: loaded %+v", name, ms)
		}
	}
}
