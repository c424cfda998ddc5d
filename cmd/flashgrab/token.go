package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/api"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "print a signed JWT for a user (or an admin)",
		Description: "The secret is --jwt-secret / FLASHGRAB_JWT_SECRET; when neither is set, the file that `serve --dev`\n" +
			"(make run) keeps it in, .flashgrab-dev/secret under the current directory, so\n" +
			"ALICE=$(flashgrab token --user alice) works in a new shell after make run.",
		Flags: []cli.Flag{
			secretFlag, devSecretFlag,
			&cli.StringFlag{Name: "user", Required: true, Usage: "user id, " + flashgrab.IDRule},
			&cli.BoolFlag{Name: "admin", Usage: `add "role":"admin"`},
			&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "lifetime of the token"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			secret, err := clientSecret(cmd, "jwt-secret")
			if err != nil {
				return err
			}
			tok, err := api.Auth{Secret: []byte(secret)}.Mint(cmd.String("user"), cmd.Bool("admin"), cmd.Duration("ttl"))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.Root().Writer, tok)
			return nil
		},
	}
}
