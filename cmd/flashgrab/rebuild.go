package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

func rebuildCommand() *cli.Command {
	return &cli.Command{
		Name: "rebuild",
		Usage: "restore from MySQL the partitions whose Redis state was lost (no epoch marker): sales with their stock, " +
			"buyers and retries, pending orders' records, live red packets; expired packets are refunded from MySQL",
		Flags: []cli.Flag{redisFlag, mysqlFlag, partitionsFlag, prefixFlag,
			&cli.IntFlag{Name: "partition", Value: -1, Usage: "rebuild only this partition (default: every partition)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			st, err := openStores(ctx, cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			eng, err := engine.New(ctx, engine.Config{Redis: st.redis, Keys: st.keys, DetectLoss: true})
			if err != nil {
				return err
			}
			defer eng.Close()
			books := &settle.Books{DB: st.db}
			reb := settle.NewRebuilder(eng, books, settle.NewSettler(st.redis, books, st.keys, nil))
			var res []settle.RebuildResult
			if p := int(cmd.Int("partition")); p >= 0 {
				r, err := reb.Rebuild(ctx, p)
				if err != nil {
					return fmt.Errorf("rebuild: %w", err)
				}
				res = append(res, r)
			} else if res, err = reb.RebuildAll(ctx); err != nil {
				for _, r := range res {
					fmt.Fprintln(cmd.Root().Writer, r)
				}
				return fmt.Errorf("rebuild: %w", err)
			}
			for _, r := range res {
				fmt.Fprintln(cmd.Root().Writer, r)
			}
			return nil
		},
	}
}
