package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strconv"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/settle"
)

// migrateCommand manages the MySQL schema: numbered migrations embedded in the
// binary (settle/migrations), recorded in schema_migrations.
func migrateCommand() *cli.Command {
	up := func(ctx context.Context, cmd *cli.Command) error {
		return withSchema(ctx, cmd, func(db *sql.DB) error {
			if err := settle.Migrate(ctx, db); err != nil {
				return err
			}
			return printStatus(ctx, cmd.Root().Writer, db)
		})
	}
	return &cli.Command{
		Name:  "migrate",
		Usage: "create the MySQL database when missing and apply pending schema migrations",
		Description: "Run it before rolling out a new flashgrab: serve applies what is pending too, but a\n" +
			"long migration belongs outside a start-up. An old database (tables, no schema_migrations)\n" +
			"is adopted at version 1 with its rows.",
		Flags:  []cli.Flag{mysqlFlag},
		Action: up,
		Commands: []*cli.Command{
			{Name: "up", Usage: "apply pending migrations (the default)", Action: up},
			{
				Name:      "down",
				Usage:     "roll back the N newest applied migrations (default 1; all: every one, which drops every table)",
				ArgsUsage: "[N|all]",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					n, err := downCount(cmd.Args().First())
					if err != nil {
						return err
					}
					return withSchema(ctx, cmd, func(db *sql.DB) error {
						done, err := settle.MigrateDown(ctx, db, n)
						for _, m := range done {
							fmt.Fprintf(cmd.Root().Writer, "rolled back %04d_%s\n", m.Version, m.Name)
						}
						if err != nil {
							return err
						}
						return printStatus(ctx, cmd.Root().Writer, db)
					})
				},
			},
			{
				Name:  "status",
				Usage: "list the migrations and which the database has applied",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					return withSchema(ctx, cmd, func(db *sql.DB) error { return printStatus(ctx, cmd.Root().Writer, db) })
				},
			},
		},
	}
}

// downCount reads `migrate down`'s argument.
func downCount(arg string) (int, error) {
	switch arg {
	case "":
		return 1, nil
	case "all":
		return int(^uint(0) >> 1), nil
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("migrate down %q: want a count of 1 or more, or all", arg)
	}
	return n, nil
}

// withSchema runs fn on a pool on the database of --mysql-dsn, created when
// missing.
func withSchema(ctx context.Context, cmd *cli.Command, fn func(db *sql.DB) error) error {
	db, err := connectMySQL(ctx, cmd.String("mysql-dsn"))
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db)
}

// printStatus writes one line a migration: version, name, and when it was
// applied or that it is pending.
func printStatus(ctx context.Context, w io.Writer, db *sql.DB) error {
	st, err := settle.MigrationStatus(ctx, db)
	if err != nil {
		return err
	}
	for _, m := range st {
		switch {
		case !m.Known:
			fmt.Fprintf(w, "%04d  applied %s  (unknown to this flashgrab: a newer one applied it)\n", m.Version, m.AppliedAt.UTC().Format("2006-01-02 15:04:05"))
		case m.AppliedAt.IsZero():
			fmt.Fprintf(w, "%04d_%s  pending\n", m.Version, m.Name)
		default:
			fmt.Fprintf(w, "%04d_%s  applied %s\n", m.Version, m.Name, m.AppliedAt.UTC().Format("2006-01-02 15:04:05"))
		}
	}
	return nil
}
