package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/settle"
)

func replayDeadCommand() *cli.Command {
	return &cli.Command{
		Name: "replay-dead",
		Usage: "settle the dead letters again once what made them fail is mended; each one that settles is removed, " +
			"the others stay and are listed with why (exit 1 while any is left)",
		Flags: []cli.Flag{redisFlag, mysqlFlag, partitionsFlag, prefixFlag,
			&cli.IntFlag{Name: "partition", Value: -1, Usage: "replay only this partition's dead letters (default: every partition)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			st, err := openStores(ctx, cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			s := settle.NewSettler(st.redis, &settle.Books{DB: st.db}, st.keys, nil)
			parts := []int{int(cmd.Int("partition"))}
			switch {
			case parts[0] >= st.keys.Partitions:
				return fmt.Errorf("replay-dead: partition %d: there are %d partitions", parts[0], st.keys.Partitions)
			case parts[0] < 0:
				parts = parts[:0]
				for p := range st.keys.Partitions {
					parts = append(parts, p)
				}
			}
			left := 0
			for _, p := range parts {
				res, err := s.ReplayDead(ctx, p)
				fmt.Fprintln(cmd.Root().Writer, res)
				if err != nil {
					return fmt.Errorf("replay-dead: %w", err)
				}
				left += len(res.Left)
			}
			if left > 0 {
				return fmt.Errorf("replay-dead: %d dead letters left", left)
			}
			return nil
		},
	}
}
