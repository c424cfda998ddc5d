package main

import (
	"context"
	"testing"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/engine"
)

// TestDurabilityFlag: unset, --durability is aof, or none under --dev; set
// (flag or FLASHGRAB_DURABILITY), it wins over --dev; an unknown mode is an
// error that names it.
func TestDurabilityFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
		want engine.Durability
	}{
		{nil, "", engine.DurabilityAOF},
		{[]string{"--dev"}, "", engine.DurabilityNone},
		{[]string{"--dev", "--durability", "aof"}, "", engine.DurabilityAOF},
		{[]string{"--durability", "replica"}, "", engine.DurabilityReplica},
		{[]string{"--dev"}, "replica", engine.DurabilityReplica},
		{[]string{"--durability", "fsync"}, "", ""},
	} {
		t.Setenv("FLASHGRAB_DURABILITY", c.env)
		var got engine.Durability
		var gotErr error
		cmd := &cli.Command{Name: "serve", Flags: append(durabilityFlags(), &cli.BoolFlag{Name: "dev"}),
			Action: func(_ context.Context, cmd *cli.Command) error {
				got, gotErr = durability(cmd)
				return nil
			}}
		if err := cmd.Run(context.Background(), append([]string{"serve"}, c.args...)); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if c.want == "" {
			if gotErr == nil {
				t.Fatalf("%v: accepted as %q", c.args, got)
			}
			continue
		}
		if gotErr != nil || got != c.want {
			t.Fatalf("%v env %q: %q %v, want %q", c.args, c.env, got, gotErr, c.want)
		}
	}
}
