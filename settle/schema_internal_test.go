package settle

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestMigrateMakesIDsCaseSensitive: a database made by the old schema (no
// collation: the server's utf8mb4_general_ci) cannot hold account "Bob" next
// to "bob"; Migrate adopts it, converts every table, keeps the rows, and then
// both work. Migrating again finds nothing to convert.
func TestMigrateMakesIDsCaseSensitive(t *testing.T) {
	db, _ := testenv.MySQL(t)
	ctx := context.Background()
	createOldSchema(t, db, "utf8mb4_general_ci")
	tables := createdTables(migrations[0])
	slices.Sort(tables)
	got, err := notBinary(ctx, db, tables)
	slices.Sort(got)
	if err != nil || !slices.Equal(got, tables) {
		t.Fatalf("old schema: tables not binary %v (%v), want %v", got, err, tables)
	}
	b := &Books{DB: db}
	if _, err := b.Credit(ctx, "bob", 100, "seed-bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Credit(ctx, "Bob", 5, "seed-Bob"); err == nil {
		t.Fatal("the old schema credited Bob next to bob: it is not the old schema")
	}

	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if got, err := notBinary(ctx, db, tables); err != nil || len(got) != 0 {
		t.Fatalf("after Migrate: tables not binary %v (%v)", got, err)
	}
	if _, err := b.Credit(ctx, "Bob", 5, "seed-Bob"); err != nil {
		t.Fatalf("credit Bob after Migrate: %v", err)
	}
	if _, err := b.Credit(ctx, "bob", 7, "seed-BOB"); err != nil {
		t.Fatalf("credit ref seed-BOB after Migrate: %v", err)
	}
	for id, want := range map[string]int64{"bob": 107, "Bob": 5} {
		if a, err := b.Account(ctx, id); err != nil || a.BalanceCents != want {
			t.Fatalf("account %s: %+v %v, want %d", id, a, err, want)
		}
	}
	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	checkVersions(t, db, len(migrations))
}

// createOldSchema makes the tables as the schema before migrations did
// (CREATE TABLE IF NOT EXISTS, no schema_migrations), in collation.
func createOldSchema(t *testing.T, db *sql.DB, collation string) {
	t.Helper()
	for _, stmt := range migrations[0].up {
		old := strings.Replace(stmt, "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin", "DEFAULT CHARSET=utf8mb4 COLLATE="+collation, 1)
		if !strings.Contains(stmt, "COLLATE=utf8mb4_bin") {
			t.Fatalf("statement without the binary collation: %s", stmt)
		}
		if _, err := db.Exec(old); err != nil {
			t.Fatal(err)
		}
	}
}
