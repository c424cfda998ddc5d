// Command flashgrab is the one binary of the flash-sale and red-packet engine:
// serve, migrate, sandbox, load, reconcile, rebuild, token and demo.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCommand().Run(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "flashgrab:", err)
		os.Exit(1)
	}
}

func rootCommand() *cli.Command {
	return &cli.Command{
		Name:   "flashgrab",
		Usage:  "flash sales and red packets decided in Redis, settled into MySQL",
		Flags:  []cli.Flag{logFormatFlag()},
		Before: checkLogFormat,
		Commands: []*cli.Command{
			serveCommand(),
			migrateCommand(),
			tokenCommand(),
			loadCommand(),
			reconcileCommand(),
			rebuildCommand(),
			replayDeadCommand(),
			sandboxCommand(),
			demoCommand(),
		},
	}
}
