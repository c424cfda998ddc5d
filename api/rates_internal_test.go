package api

import (
	"fmt"
	"testing"
	"time"
)

// TestRates: per-second rates over the samples of the last rateWindow; the
// first observation has none; samples closer than rateStep are not kept; a
// counter that went down (a sale forgotten and tracked again) counts from zero.
func TestRates(t *testing.T) {
	var r rates
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		after  time.Duration
		counts map[string]int64
		want   string
	}{
		{0, map[string]int64{"a": 100}, "map[a:0] 0s"},
		{time.Second, map[string]int64{"a": 110, "b": 4}, "map[a:10 b:4] 1s"},
		{1200 * time.Millisecond, map[string]int64{"a": 112, "b": 4}, "map[a:10 b:3.3333333333333335] 1.2s"}, // not kept: 0.2 s after the last
		{2 * time.Second, map[string]int64{"a": 130, "b": 2}, "map[a:15 b:1] 2s"},
		{6500 * time.Millisecond, map[string]int64{"a": 200, "b": 2}, "map[a:15.555555555555555 b:0] 4.5s"}, // t0 and t0+1s dropped: from t0+2s
		{20 * time.Second, map[string]int64{"a": 200}, "map[a:0] 0s"},                                       // all samples too old
	}
	for _, s := range steps {
		perS, window := r.observe(t0.Add(s.after), s.counts)
		if got := fmt.Sprint(perS, " ", window); got != s.want {
			t.Errorf("at +%v with %v: %s, want %s", s.after, s.counts, got, s.want)
		}
	}
}
