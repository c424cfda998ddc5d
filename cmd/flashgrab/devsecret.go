package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
)

// devSecretFlag names the file in which `serve --dev` keeps its JWT secret,
// so that a restart does not turn every token minted before it into a 401,
// and so that `flashgrab token` (and load, demo) in a new shell sign with the
// same secret without an export. The default is relative: `make run` and the
// README's commands run in the repository root, where .gitignore covers it.
var devSecretFlag = &cli.StringFlag{Name: "dev-secret-file", Value: filepath.Join(".flashgrab-dev", "secret"),
	Sources: cli.EnvVars("FLASHGRAB_DEV_SECRET_FILE"),
	Usage:   "where serve --dev keeps its JWT secret (mode 0600); token, load and demo read it when no secret is set"}

// loadOrCreateDevSecret returns the secret kept in path, making a random one
// (the file 0600, a missing directory 0700) when there is none. created
// tells the caller it is the first run with this file.
func loadOrCreateDevSecret(path string) (secret string, created bool, err error) {
	secret, err = readDevSecret(path)
	if err == nil {
		return secret, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("dev secret: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("dev secret: %w", err)
	}
	secret = hex.EncodeToString(b[:])
	// O_EXCL: two dev servers started at once must not each write their own
	// secret; the loser reads the winner's.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		secret, err = readDevSecret(path)
		return secret, false, err
	}
	if err != nil {
		return "", false, fmt.Errorf("dev secret: %w", err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", false, fmt.Errorf("dev secret %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", false, fmt.Errorf("dev secret %s: %w", path, err)
	}
	return secret, true, nil
}

// readDevSecret reads the secret kept in path. A file that others may read
// is refused rather than used: the secret signs admin tokens.
func readDevSecret(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("dev secret: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("dev secret %s: mode %v lets others read it; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("dev secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("dev secret %s: the file is empty; delete it and run serve --dev again", path)
	}
	return s, nil
}

// clientSecret is the JWT secret of the commands that mint tokens for a
// running server (token, load, demo): the flag named flag (its environment
// variable FLASHGRAB_JWT_SECRET), else the dev secret file that `serve --dev`
// keeps.
func clientSecret(cmd *cli.Command, flag string) (string, error) {
	if s := cmd.String(flag); s != "" {
		return s, nil
	}
	path := cmd.String("dev-secret-file")
	s, err := readDevSecret(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no JWT secret: set FLASHGRAB_JWT_SECRET or --jwt-secret, or start `make run` (serve --dev) in this directory first, which keeps one in %s", path)
	}
	return s, err
}

// serverSecret is the JWT secret of serve. Without one, --dev keeps a dev
// secret in --dev-secret-file and prints the lines that export it and an
// admin token: the developer asked for them, and a dev secret guards nothing
// but a local sandbox. They go to stdout, never to the log.
func serverSecret(_ context.Context, cmd *cli.Command) (string, error) {
	if s := cmd.String("jwt-secret"); s != "" {
		return s, nil
	}
	if !cmd.Bool("dev") {
		return "", errors.New("no JWT secret: set FLASHGRAB_JWT_SECRET (or run with --dev)")
	}
	path := cmd.String("dev-secret-file")
	secret, created, err := loadOrCreateDevSecret(path)
	if err != nil {
		return "", err
	}
	tok, err := api.Auth{Secret: []byte(secret)}.Mint("admin", true, 24*time.Hour)
	if err != nil {
		return "", err
	}
	how := "kept from an earlier run"
	if created {
		how = "made for this and later runs"
	}
	fmt.Fprintf(cmd.Root().Writer, "dev mode: JWT secret in %s (%s); `flashgrab token` reads it there.\n"+
		"Paste into another shell if you like:\n  export FLASHGRAB_JWT_SECRET=%s\n  export ADMIN=%s   # admin token, 24h\n",
		path, how, secret, tok)
	return secret, nil
}
