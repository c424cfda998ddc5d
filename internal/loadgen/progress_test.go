package loadgen

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestProgressOnlyOnTerminal: a writer that is not a terminal (a pipe, a
// log file, here a buffer) gets no bar at all, so no \r frames pile up.
func TestProgressOnlyOnTerminal(t *testing.T) {
	_, url := newStub(t, 10)
	var out bytes.Buffer
	cfg := testConfig(url, ScenarioSale)
	cfg.Progress = &out
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Fatalf("a non-terminal writer got %d bytes (%d \\r frames): %q", out.Len(), strings.Count(out.String(), "\r"), out.String())
	}
}

// TestProgressEndsAtHundredPercent: on a terminal, a run that lasted its
// duration leaves its last frame at 100%, followed by a newline.
func TestProgressEndsAtHundredPercent(t *testing.T) {
	old := isTerminal
	isTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { isTerminal = old })
	_, url := newStub(t, 10)
	var out bytes.Buffer
	cfg := testConfig(url, ScenarioSale)
	cfg.Progress = &out
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.HasSuffix(s, "\n") {
		t.Fatalf("the bar does not end with a newline: %q", s)
	}
	frames := strings.Split(strings.TrimSuffix(s, "\n"), "\r")
	last := frames[len(frames)-1]
	if !strings.Contains(last, "100%") {
		t.Fatalf("last frame %q, want 100%%", last)
	}
}
