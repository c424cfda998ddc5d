package main

import (
	"context"
	"strings"
	"testing"
)

// TestLogFormatRefusedAtStart: a --log-format other than text or json stops
// every command before it does anything, with a message naming the value.
func TestLogFormatRefusedAtStart(t *testing.T) {
	for _, args := range [][]string{
		{"flashgrab", "--log-format", "xml", "serve"},
		{"flashgrab", "reconcile", "--log-format", "xml"},
	} {
		err := rootCommand().Run(context.Background(), args)
		if err == nil || !strings.Contains(err.Error(), `--log-format "xml": must be text or json`) {
			t.Fatalf("%q: err %v; want the bad --log-format named", args, err)
		}
	}
	t.Setenv("FLASHGRAB_LOG_FORMAT", "xml")
	if err := rootCommand().Run(context.Background(), []string{"flashgrab", "serve"}); err == nil ||
		!strings.Contains(err.Error(), `"xml"`) {
		t.Fatalf("FLASHGRAB_LOG_FORMAT=xml: err %v; want it refused", err)
	}
}
