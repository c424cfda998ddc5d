package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Outcome names the load generator counts. HTTP answers are named by status and,
// for errors, the API's error code ("409 sold_out"); these are the ones the
// scenarios expect, any other answer gets a name of the same shape.
const (
	OutcomeOK           = "200"
	OutcomeRepeat       = "200 repeat" // a packet grab answered with repeat:true
	OutcomeSoldOut      = "409 sold_out"
	OutcomeLimitReached = "409 limit_reached"
	OutcomeEmpty        = "409 empty"
	OutcomeRateLimited  = "429 rate_limited"
	OutcomeUnavailable  = "503 unavailable"
	OutcomeTimeout      = "timeout"         // no answer within Config.Timeout
	OutcomeTransport    = "transport_error" // connection refused, reset, ...
	OutcomeNotSent      = "not_sent"        // open loop: scheduled but never sent (cut off or interrupted)
)

// Report is the result of one load run. Latencies are time.Duration, so the
// JSON form carries nanoseconds (fields end in _ns).
type Report struct {
	Scenario    string        `json:"scenario"`
	Mode        string        `json:"mode"` // "closed" or "open"
	URL         string        `json:"url"`
	Concurrency int           `json:"concurrency"`
	Rate        int           `json:"rate,omitempty"`
	Users       int           `json:"users"`
	Duration    time.Duration `json:"duration_ns"`
	Started     time.Time     `json:"started"`
	// Elapsed runs from the first scheduled request to the last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Scheduled is the number of requests the open loop planned (rate × duration).
	Scheduled int64 `json:"scheduled,omitempty"`
	// Requests counts requests sent, answered or failed; not_sent ones are excluded.
	Requests int64 `json:"requests"`
	// Throughput is Requests per second of Elapsed.
	Throughput  float64           `json:"throughput_rps"`
	Latency     LatencySummary    `json:"latency"`
	Outcomes    []OutcomeStat     `json:"outcomes"`
	Percentiles []PercentilePoint `json:"percentiles"`
	Timeline    []Interval        `json:"timeline"`
	// Setup says what the scenario created before the measured phase.
	Setup []string `json:"setup"`
	// Interrupted is set when the context was cancelled during the measured phase.
	Interrupted bool `json:"interrupted,omitempty"`
}

// LatencySummary is the latency distribution of every sent request. In open-loop
// mode latency runs from the scheduled send time, so queueing inside the load
// generator counts against the server as it would for a real client.
type LatencySummary struct {
	Min  time.Duration `json:"min_ns"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// OutcomeStat counts one outcome and summarises its latencies.
type OutcomeStat struct {
	Outcome string `json:"outcome"`
	// Success is true for 2xx answers.
	Success bool          `json:"success"`
	Count   int64         `json:"count"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	Max     time.Duration `json:"max_ns"`
	// Sample is the first error message or response body seen for a failure,
	// so that an unexpected 400 explains itself.
	Sample string `json:"sample,omitempty"`
}

// PercentilePoint is one point of the latency percentile curve.
type PercentilePoint struct {
	Percentile float64       `json:"percentile"`
	Latency    time.Duration `json:"latency_ns"`
}

// Interval summarises the requests scheduled (open loop) or started (closed
// loop) within one slice of the run.
type Interval struct {
	Start    time.Duration `json:"start_ns"` // offset from Report.Started
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
}

// Count returns how many requests ended with outcome (0 if none did).
func (r *Report) Count(outcome string) int64 {
	for _, o := range r.Outcomes {
		if o.Outcome == outcome {
			return o.Count
		}
	}
	return 0
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write load report as JSON: %w", err)
	}
	return nil
}

// WriteTable writes a human-readable summary: the run, the latency
// percentiles and one row per outcome.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	mode := "closed loop"
	if r.Mode == ModeOpen {
		mode = fmt.Sprintf("open loop at %d req/s", r.Rate)
	}
	fmt.Fprintf(tw, "scenario\t%s (%s, %d workers, %d users, %v)\n", r.Scenario, mode, r.Concurrency, r.Users, r.Duration)
	fmt.Fprintf(tw, "target\t%s\n", r.URL)
	for _, s := range r.Setup {
		fmt.Fprintf(tw, "setup\t%s\n", s)
	}
	fmt.Fprintf(tw, "requests\t%d in %v = %.1f req/s\n", r.Requests, r.Elapsed.Round(time.Millisecond), r.Throughput)
	if r.Mode == ModeOpen {
		fmt.Fprintf(tw, "scheduled\t%d (latency counted from the scheduled start)\n", r.Scheduled)
	}
	if r.Interrupted {
		fmt.Fprintf(tw, "interrupted\tyes: figures cover the part that ran\n")
	}
	l := r.Latency
	fmt.Fprintf(tw, "latency\tmin %s  mean %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		fmtLatency(l.Min), fmtLatency(l.Mean), fmtLatency(l.P50), fmtLatency(l.P90),
		fmtLatency(l.P99), fmtLatency(l.P999), fmtLatency(l.Max))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "OUTCOME\tCOUNT\tSHARE\tRATE/s\tP50\tP99\tMAX\t")
	total := r.Requests + r.Count(OutcomeNotSent)
	secs := r.Elapsed.Seconds()
	for _, o := range r.Outcomes {
		share, rate := 0.0, 0.0
		if total > 0 {
			share = 100 * float64(o.Count) / float64(total)
		}
		if secs > 0 {
			rate = float64(o.Count) / secs
		}
		if o.Outcome == OutcomeNotSent {
			fmt.Fprintf(tw, "%s\t%d\t%.2f%%\t-\t-\t-\t-\t\n", o.Outcome, o.Count, share)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f%%\t%.1f\t%s\t%s\t%s\t\n", o.Outcome, o.Count, share, rate,
			fmtLatency(o.P50), fmtLatency(o.P99), fmtLatency(o.Max))
	}
	for _, o := range r.Outcomes {
		if o.Sample != "" && !expectedOutcome(o.Outcome) {
			fmt.Fprintf(tw, "\nfirst %q: %s\n", o.Outcome, o.Sample)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write load report table: %w", err)
	}
	return nil
}

// expectedOutcome reports whether an outcome is a normal answer of the API
// under load, whose example would only clutter the table.
func expectedOutcome(name string) bool {
	switch name {
	case OutcomeSoldOut, OutcomeLimitReached, OutcomeEmpty, OutcomeRateLimited:
		return true
	}
	return false
}

// fmtLatency prints a latency with three significant digits in a unit that
// keeps the number short (µs, ms or s).
func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return strings.TrimSuffix(fmt.Sprintf("%.3g", float64(d)/float64(time.Millisecond)), ".0") + "ms"
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// sortOutcomes orders the table: successes first, then by count.
func sortOutcomes(os []OutcomeStat) {
	slices.SortStableFunc(os, func(a, b OutcomeStat) int {
		if a.Success != b.Success {
			if a.Success {
				return -1
			}
			return 1
		}
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Outcome, b.Outcome)
	})
}
