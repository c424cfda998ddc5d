package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v3"
)

// logFormatFlag chooses how every command's log lines are written: text for
// people, json for log pipelines. It is on the root command, so it applies
// to (and is accepted after) every subcommand.
func logFormatFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-format", Value: "text", Sources: cli.EnvVars("FLASHGRAB_LOG_FORMAT"),
		Usage: "log line format on stderr: text or json"}
}

// checkLogFormat refuses a bad --log-format before any command starts, so a
// typo fails at once instead of after the server has opened its stores.
func checkLogFormat(ctx context.Context, cmd *cli.Command) (context.Context, error) {
	_, err := newLogHandler(io.Discard, cmd.String("log-format"))
	return ctx, err
}

// newLogger is the one place a command builds its logger: slog on stderr in
// the --log-format format.
func newLogger(cmd *cli.Command) (*slog.Logger, error) {
	h, err := newLogHandler(os.Stderr, cmd.String("log-format"))
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

func newLogHandler(w io.Writer, format string) (slog.Handler, error) {
	switch format {
	case "text":
		return slog.NewTextHandler(w, nil), nil
	case "json":
		return slog.NewJSONHandler(w, nil), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be text or json", format)
}
