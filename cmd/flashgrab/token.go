package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "print a signed JWT for a user (or an admin)",
		Flags: []cli.Flag{
			secretFlag,
			&cli.StringFlag{Name: "user", Required: true, Usage: "user id, " + engine.IDRule},
			&cli.BoolFlag{Name: "admin", Usage: `add "role":"admin"`},
			&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "lifetime of the token"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			secret := cmd.String("jwt-secret")
			if secret == "" {
				return errors.New("no secret: set FLASHGRAB_JWT_SECRET or --jwt-secret")
			}
			tok, err := api.Auth{Secret: []byte(secret)}.Mint(cmd.String("user"), cmd.Bool("admin"), cmd.Duration("ttl"))
			if err != nil {
				return err
			}
			fmt.Println(tok)
			return nil
		},
	}
}
