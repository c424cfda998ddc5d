package loadgen

import (
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms hold microseconds: loopback answers take tens of µs, so finer
// units would only cost memory, and three significant digits keep p99.9 exact
// to 0.1%. The timeline needs less precision, and there are many of them.
const (
	histLowest       = 1
	histSigFigs      = 3
	timelineSigFigs  = 2
	sampleBufferSize = 256 // samples a worker collects before taking the recorder's lock
)

// sample is one finished request as a worker remembers it until it flushes.
type sample struct {
	latency int64 // µs
	bucket  int32 // timeline slot
	outcome uint16
}

// recorder aggregates the samples of all workers. Workers buffer samples and
// flush them in batches, so the lock is taken once per sampleBufferSize
// requests and a histogram per worker (about 180 KB each) is not needed.
type recorder struct {
	highest int64 // µs; larger latencies are clamped to it
	width   time.Duration

	// done counts finished requests as they finish, for the progress bar.
	done atomic.Int64
	// failed counts non-2xx answers and transport errors, for the progress bar.
	failed atomic.Int64

	mu       sync.Mutex
	all      *hdrhistogram.Histogram
	names    []string
	success  []bool
	counts   []int64
	byName   map[string]uint16
	perOut   []*hdrhistogram.Histogram
	samples  []string
	timeline []*slot
}

// slot is the part of the timeline for one interval.
type slot struct {
	hist     *hdrhistogram.Histogram
	requests int64
	errors   int64
}

// newRecorder makes a recorder for a run of duration d whose latencies may
// reach highest.
func newRecorder(d, highest time.Duration) *recorder {
	width := timelineWidth(d)
	n := int((d + width - 1) / width)
	if n < 1 {
		n = 1
	}
	r := &recorder{
		highest:  max(int64(highest/time.Microsecond), 1000),
		width:    width,
		byName:   make(map[string]uint16),
		timeline: make([]*slot, n),
	}
	r.all = hdrhistogram.New(histLowest, r.highest, histSigFigs)
	return r
}

// timelineWidth picks a round interval that gives the plot about 100 points.
func timelineWidth(d time.Duration) time.Duration {
	steps := []time.Duration{
		10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute,
	}
	for _, s := range steps {
		if d/s <= 100 {
			return s
		}
	}
	return 5 * time.Minute
}

// bucketOf returns the timeline slot for a request scheduled at offset.
func (r *recorder) bucketOf(offset time.Duration) int32 {
	b := int(offset / r.width)
	switch {
	case b < 0:
		return 0
	case b >= len(r.timeline):
		return int32(len(r.timeline) - 1)
	}
	return int32(b)
}

// outcome returns the id of the outcome called name, registering it on first
// sight with example as the sample that explains it.
func (r *recorder) outcome(name string, success bool, example string) uint16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.byName[name]; ok {
		if r.samples[id] == "" {
			r.samples[id] = example
		}
		return id
	}
	id := uint16(len(r.names))
	r.byName[name] = id
	r.names = append(r.names, name)
	r.success = append(r.success, success)
	r.counts = append(r.counts, 0)
	r.perOut = append(r.perOut, hdrhistogram.New(histLowest, r.highest, histSigFigs))
	r.samples = append(r.samples, example)
	return id
}

// sent returns how many requests were sent and recorded so far.
func (r *recorder) sent() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.all.TotalCount()
}

// addNotSent counts requests the open loop planned but never sent.
func (r *recorder) addNotSent(n int64) {
	if n <= 0 {
		return
	}
	id := r.outcome(OutcomeNotSent, false, "")
	r.mu.Lock()
	r.counts[id] += n
	r.mu.Unlock()
}

// flush merges a worker's buffered samples.
func (r *recorder) flush(buf []sample) {
	if len(buf) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range buf {
		v := min(s.latency, r.highest)
		_ = r.all.RecordValue(v) // cannot fail: v is within [0, highest]
		_ = r.perOut[s.outcome].RecordValue(v)
		r.counts[s.outcome]++
		sl := r.timeline[s.bucket]
		if sl == nil {
			sl = &slot{hist: hdrhistogram.New(histLowest, r.highest, timelineSigFigs)}
			r.timeline[s.bucket] = sl
		}
		_ = sl.hist.RecordValue(v)
		sl.requests++
		if !r.success[s.outcome] {
			sl.errors++
		}
	}
}

// fill writes the aggregated figures into rep.
func (r *recorder) fill(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	rep.Requests = r.all.TotalCount()
	if rep.Elapsed > 0 {
		rep.Throughput = float64(rep.Requests) / rep.Elapsed.Seconds()
	}
	if rep.Requests > 0 {
		rep.Latency = LatencySummary{
			Min:  us(r.all.Min()),
			Mean: time.Duration(r.all.Mean() * float64(time.Microsecond)),
			P50:  us(r.all.ValueAtQuantile(50)),
			P90:  us(r.all.ValueAtQuantile(90)),
			P99:  us(r.all.ValueAtQuantile(99)),
			P999: us(r.all.ValueAtQuantile(99.9)),
			Max:  us(r.all.Max()),
		}
		for _, b := range r.all.CumulativeDistributionWithTicks(5) {
			rep.Percentiles = append(rep.Percentiles, PercentilePoint{Percentile: b.Quantile, Latency: us(b.ValueAt)})
		}
	}
	rep.Outcomes = make([]OutcomeStat, 0, len(r.names))
	for id, name := range r.names {
		if r.counts[id] == 0 {
			continue
		}
		h := r.perOut[id]
		o := OutcomeStat{Outcome: name, Success: r.success[id], Count: r.counts[id], Sample: r.samples[id]}
		if h.TotalCount() > 0 {
			o.P50, o.P99, o.Max = us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(99)), us(h.Max())
		}
		rep.Outcomes = append(rep.Outcomes, o)
	}
	sortOutcomes(rep.Outcomes)
	rep.Timeline = make([]Interval, 0, len(r.timeline))
	for i, sl := range r.timeline {
		iv := Interval{Start: time.Duration(i) * r.width}
		if sl != nil {
			iv.Requests, iv.Errors = sl.requests, sl.errors
			iv.P50, iv.P99, iv.Max = us(sl.hist.ValueAtQuantile(50)), us(sl.hist.ValueAtQuantile(99)), us(sl.hist.Max())
		}
		rep.Timeline = append(rep.Timeline, iv)
	}
}
