package main

import (
	"context"
	"testing"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
)

// parseLimits runs limitFlags over args and returns limits' answer.
func parseLimits(t *testing.T, nofile uint64, args ...string) (serveLimits, error) {
	t.Helper()
	var l serveLimits
	var lerr error
	cmd := &cli.Command{Name: "serve", Flags: limitFlags(), Action: func(_ context.Context, cmd *cli.Command) error {
		l, lerr = limits(cmd, nofile)
		return nil
	}}
	if err := cmd.Run(context.Background(), append([]string{"serve"}, args...)); err != nil {
		t.Fatal(err)
	}
	return l, lerr
}

// TestLimitDefaults: serve's defaults, --max-conns lowered to fit the open
// file limit, flags override and 0 turns a rate limit off.
func TestLimitDefaults(t *testing.T) {
	l, err := parseLimits(t, 1<<20)
	want := serveLimits{maxConns: 50_000, maxConnsPerIP: 1_000, idle: 60 * time.Second,
		grab: api.RateLimit{Rate: 20, Burst: 40}, ip: api.RateLimit{Rate: 200, Burst: 400}}
	if err != nil || l != want {
		t.Fatalf("defaults %+v %v; want %+v", l, err, want)
	}
	if l, _ := parseLimits(t, 20_000); l.maxConns != 20_000-fdReserve {
		t.Fatalf("max conns %d under a file limit of 20,000; want %d", l.maxConns, 20_000-fdReserve)
	}
	l, err = parseLimits(t, 1<<20, "--grab-rate", "0", "--max-conns-per-ip", "0", "--idle-timeout", "5s")
	if err != nil || l.grab.Rate != 0 || l.maxConnsPerIP != 0 || l.idle != 5*time.Second {
		t.Fatalf("overrides: %+v %v", l, err)
	}
	for _, args := range [][]string{{"--max-conns", "0"}, {"--max-conns-per-ip", "-1"}, {"--idle-timeout", "0s"},
		{"--grab-rate", "-1"}, {"--grab-burst", "0"}, {"--ip-rate", "5", "--ip-burst", "0"}} {
		if _, err := parseLimits(t, 1<<20, args...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
