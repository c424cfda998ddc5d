package api

import (
	"sync"
	"time"
)

const (
	// rateWindow is how far back rates look: long enough to smooth a
	// page's 1 s polls, short enough to show a burst ending.
	rateWindow = 5 * time.Second
	// rateStep is the least time between two kept samples, so that many
	// pages polling at once cost no more memory than one.
	rateStep = 500 * time.Millisecond
)

// rates turns cumulative counters into per-second rates. Each observation
// is compared with the oldest sample kept within rateWindow, and kept as a
// sample itself when the newest is rateStep old, so the server needs no
// goroutine of its own: the pages asking for stats are the clock. The first
// observation after a quiet spell has nothing to compare with and reports
// no rate (window 0).
type rates struct {
	mu      sync.Mutex
	samples []rateSample // oldest first
}

type rateSample struct {
	at     time.Time
	counts map[string]int64
}

// observe returns each counter's rate per second since the oldest sample
// within rateWindow, and that sample's age. A counter that went down (a
// sale forgotten and counted again) or was absent then counts from zero.
func (r *rates) observe(now time.Time, counts map[string]int64) (perS map[string]float64, window time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	keep := r.samples[:0]
	for _, s := range r.samples {
		if now.Sub(s.at) <= rateWindow {
			keep = append(keep, s)
		}
	}
	clear(r.samples[len(keep):]) // let the dropped maps go
	r.samples = keep
	perS = make(map[string]float64, len(counts))
	if len(r.samples) > 0 && now.After(r.samples[0].at) {
		oldest := r.samples[0]
		window = now.Sub(oldest.at)
		for k, v := range counts {
			d := v - oldest.counts[k]
			if d < 0 {
				d = v
			}
			perS[k] = float64(d) / window.Seconds()
		}
	} else {
		for k := range counts {
			perS[k] = 0
		}
	}
	if n := len(r.samples); n == 0 || now.Sub(r.samples[n-1].at) >= rateStep {
		r.samples = append(r.samples, rateSample{at: now, counts: counts})
	}
	return perS, window
}
