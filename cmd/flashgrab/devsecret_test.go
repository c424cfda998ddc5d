package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flashgrab/flashgrab/api"
)

// TestDevSecretKeptAcrossRuns: the first dev run makes the secret file with
// mode 0600 (directory 0700), every later run reads the same secret, so
// tokens minted before a restart still validate.
func TestDevSecretKeptAcrossRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".flashgrab-dev", "secret")
	first, created, err := loadOrCreateDevSecret(path)
	if err != nil || !created {
		t.Fatalf("first run: created %v, err %v", created, err)
	}
	if len(first) != 64 {
		t.Fatalf("secret %d characters, want 64 hex", len(first))
	}
	second, created, err := loadOrCreateDevSecret(path)
	if err != nil || created {
		t.Fatalf("second run: created %v, err %v", created, err)
	}
	if second != first {
		t.Fatal("second run made a new secret: tokens of the first run would answer 401")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("secret directory mode %v, want 0700", di.Mode().Perm())
	}
}

// TestDevSecretRefusesReadableFile: a secret file others can read is not
// used (it signs admin tokens), and the error says how to fix it.
func TestDevSecretRefusesReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // umask may have narrowed it
		t.Fatal(err)
	}
	_, _, err := loadOrCreateDevSecret(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err %v, want a refusal naming chmod 600", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "abc\n" {
		t.Fatalf("the refused file was changed to %q", b)
	}
}

// TestTokenReadsDevSecretFile: with FLASHGRAB_JWT_SECRET unset, `flashgrab
// token` signs with the dev secret file, so $(flashgrab token --user alice)
// works in a new shell after `make run`; without the file it fails saying
// where a secret comes from.
func TestTokenReadsDevSecretFile(t *testing.T) {
	t.Setenv("FLASHGRAB_JWT_SECRET", "")
	path := filepath.Join(t.TempDir(), "secret")
	token := func() (string, error) {
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.Writer = &out
		err := cmd.Run(context.Background(), []string{"flashgrab", "token", "--user", "alice", "--dev-secret-file", path})
		return strings.TrimSpace(out.String()), err
	}
	if _, err := token(); err == nil || !strings.Contains(err.Error(), "FLASHGRAB_JWT_SECRET") {
		t.Fatalf("without a secret: err %v, want one naming FLASHGRAB_JWT_SECRET", err)
	}
	secret, _, err := loadOrCreateDevSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token()
	if err != nil {
		t.Fatal(err)
	}
	p, err := api.Auth{Secret: []byte(secret)}.Verify(tok)
	if err != nil {
		t.Fatalf("token minted from the dev secret file does not validate: %v", err)
	}
	if p.UserID != "alice" || p.Admin {
		t.Fatalf("principal %+v, want alice, not admin", p)
	}
}
