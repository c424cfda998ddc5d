package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/settle"
)

func reconcileCommand() *cli.Command {
	return &cli.Command{
		Name: "reconcile",
		Usage: "prove the books: balances = ledger, credits = paid payments, packets and sales add up, every win reached MySQL, " +
			"nothing stuck, dead or unrefunded; exit 1 on a difference",
		Flags: []cli.Flag{redisFlag, mysqlFlag, partitionsFlag, prefixFlag,
			&cli.DurationFlag{Name: "stuck-after", Value: 5 * time.Minute,
				Usage: "a partition whose oldest unsettled event is older than this is stuck, not in flight"},
			&cli.DurationFlag{Name: "refund-stuck-after", Value: time.Hour,
				Usage: "a payment refunding longer than this is a failed refund, not one in progress"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			st, err := openStores(ctx, cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			rep, err := (&settle.Reconciler{DB: st.db, Redis: st.redis, Keys: st.keys,
				StuckAfter: cmd.Duration("stuck-after"), RefundStuckAfter: cmd.Duration("refund-stuck-after")}).Reconcile(ctx)
			if err != nil {
				return fmt.Errorf("reconcile: %w", err)
			}
			// The command's Writer (stdout) rather than os.Stdout, so that a
			// test running the command reads what it reported.
			rep.Print(cmd.Root().Writer)
			if !rep.OK() {
				return errors.New("reconcile: the books do not balance")
			}
			fmt.Fprintln(cmd.Root().Writer, "the books balance")
			return nil
		},
	}
}
