package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestMigrateCommand drives `flashgrab migrate` as an operator would on an
// empty database: status lists 0001 pending, migrate applies every one, down
// rolls back the newest only, down all the rest and leaves no table, a
// bad count is refused and changes nothing, and up applies them again.
func TestMigrateCommand(t *testing.T) {
	db, dsn := testenv.MySQL(t)
	ctx := context.Background()
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := rootCommand()
		root.Writer = &out
		err := root.Run(ctx, append([]string{"flashgrab", "migrate", "--mysql-dsn", dsn}, args...))
		return out.String(), err
	}
	tables := func() int {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if out, err := run("status"); err != nil || !strings.Contains(out, "0001_init  pending") || tables() != 0 {
		t.Fatalf("status on an empty database: %q %v, %d tables", out, err, tables())
	}
	out, err := run()
	if err != nil || !strings.Contains(out, "0001_init  applied ") || strings.Contains(out, "pending") {
		t.Fatalf("migrate: %q %v", out, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	newest := strings.Fields(lines[len(lines)-1])[0] // status lists them in order
	if tables() == 0 {
		t.Fatal("migrate made no table")
	}
	if out, err := run("down", "0"); err == nil {
		t.Fatalf("down 0: %q, no error", out)
	}
	if out, err := run("down"); err != nil || !strings.Contains(out, "rolled back "+newest+"\n") || newest == "0001_init" ||
		strings.Contains(out, "rolled back 0001_init") || tables() == 0 {
		t.Fatalf("down: %q %v, %d tables left", out, err, tables())
	}
	if out, err := run("down", "all"); err != nil || !strings.Contains(out, "rolled back 0001_init") || tables() != 0 {
		t.Fatalf("down all: %q %v, %d tables left", out, err, tables())
	}
	if out, err := run("up"); err != nil || !strings.Contains(out, "0001_init  applied ") {
		t.Fatalf("up: %q %v", out, err)
	}
}
