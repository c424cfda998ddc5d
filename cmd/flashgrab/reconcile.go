package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/settle"
)

func reconcileCommand() *cli.Command {
	return &cli.Command{
		Name:  "reconcile",
		Usage: "prove the books: balances = ledger, packets and sales add up, every win reached MySQL; exit 1 on a difference",
		Flags: []cli.Flag{redisFlag, mysqlFlag, partitionsFlag, prefixFlag},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ks, err := keyspace(cmd)
			if err != nil {
				return err
			}
			rdb, err := openRedis(ctx, cmd.String("redis-addrs"), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			db, err := openMySQL(ctx, cmd.String("mysql-dsn"))
			if err != nil {
				return err
			}
			defer db.Close()
			rep, err := (&settle.Reconciler{DB: db, Redis: rdb, Keys: ks}).Reconcile(ctx)
			if err != nil {
				return fmt.Errorf("reconcile: %w", err)
			}
			rep.Print(os.Stdout)
			if !rep.OK() {
				return errors.New("reconcile: the books do not balance")
			}
			fmt.Println("the books balance")
			return nil
		},
	}
}
