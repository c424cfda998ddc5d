package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/internal/loadgen"
)

// loadCommand is `flashgrab load`: load for a running server, generated and
// measured by package loadgen.
func loadCommand() *cli.Command {
	return &cli.Command{
		Name:  "load",
		Usage: "generate grab load against a running server and report throughput and latency",
		Description: "Sets up a scenario through the admin API (tokens are minted from the JWT secret), then sends\n" +
			"grabs for --duration. --rate > 0 runs an open loop at that many requests per second, with\n" +
			"latency counted from each request's scheduled time; --rate 0 runs a closed loop.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: "http://127.0.0.1:8080", Sources: cli.EnvVars("FLASHGRAB_URL"),
				Usage: "base URL of the flashgrab server"},
			&cli.StringFlag{Name: "secret", Aliases: []string{"jwt-secret"}, Sources: cli.EnvVars("FLASHGRAB_JWT_SECRET"),
				Usage: "HS256 secret of the server, to mint admin and user tokens (default: the file serve --dev keeps)"},
			devSecretFlag,
			&cli.StringFlag{Name: "scenario", Value: loadgen.ScenarioSale,
				Usage: "one of " + strings.Join(loadgen.Scenarios, ", ")},
			&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 64,
				Usage: "workers (and connections), each with one request in flight"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 10 * time.Second,
				Usage: "length of the measured phase"},
			&cli.IntFlag{Name: "rate", Aliases: []string{"r"},
				Usage: "open loop: requests per second at fixed intervals; 0: closed loop"},
			&cli.IntFlag{Name: "users", Value: 10_000, Usage: "distinct user ids the requests rotate over"},
			&cli.Int64Flag{Name: "stock",
				Usage: fmt.Sprintf("sale stock (sale: default %d, soldout: default %d) or packet shares (packet: default %d)",
					loadgen.DefaultSaleStock, loadgen.DefaultSoldOutStock, loadgen.DefaultPacketShares)},
			&cli.DurationFlag{Name: "timeout", Value: loadgen.DefaultTimeout, Usage: "per-request timeout"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON instead of a table"},
			&cli.StringFlag{Name: "plot", Usage: "write a latency plot to this file (.png, .svg or .pdf)"},
			&cli.BoolFlag{Name: "no-progress", Usage: "do not show the progress bar (it is drawn only when stderr is a terminal)"},
		},
		Action: loadAction,
	}
}

// loadAction runs the load and prints the report before plotting, so that a
// plot that cannot be written does not cost the figures.
func loadAction(ctx context.Context, cmd *cli.Command) error {
	secret, err := clientSecret(cmd, "secret")
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	cfg := loadgen.Config{
		BaseURL:     cmd.String("url"),
		JWTSecret:   []byte(secret),
		Scenario:    cmd.String("scenario"),
		Concurrency: cmd.Int("concurrency"),
		Duration:    cmd.Duration("duration"),
		Rate:        cmd.Int("rate"),
		Users:       cmd.Int("users"),
		Stock:       cmd.Int64("stock"),
		Timeout:     cmd.Duration("timeout"),
	}
	if !cmd.Bool("no-progress") {
		cfg.Progress = os.Stderr
	}
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if cmd.Bool("json") {
		err = rep.WriteJSON(os.Stdout)
	} else {
		err = rep.WriteTable(os.Stdout)
	}
	if err != nil {
		return err
	}
	if path := cmd.String("plot"); path != "" {
		if err := rep.WritePlot(path); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "latency plot written to", path)
	}
	return nil
}
