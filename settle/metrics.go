package settle

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgrab/flashgrab"
)

// Metrics are the settler's Prometheus collectors.
type Metrics struct {
	Events   *prometheus.CounterVec // settled events by kind
	Batches  prometheus.Histogram   // seconds per committed batch
	Lag      prometheus.Histogram   // seconds from grab to commit
	Failures prometheus.Counter
	// Refunds counts refunds of late payments that finished, by channel and
	// outcome (succeeded, failed); failed ones were not paid back.
	Refunds *prometheus.CounterVec
	// DeadLetters counts events moved to a dead-letter stream: each one is
	// money or an order that needs a person.
	DeadLetters prometheus.Counter
	// Stale counts events refused because a rebuild of their partition
	// had restored its state from MySQL without them (StaleEpochError):
	// wins lost with the partition's Redis state.
	Stale prometheus.Counter
}

// NewMetrics creates the settler's collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgrab_settled_events_total", Help: "Settlement events committed to MySQL, by kind.",
		}, []string{"kind"}),
		Batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgrab_settle_batch_seconds", Help: "Time to apply and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		Lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgrab_settle_lag_seconds", Help: "Age of an event when its batch committed (settler lag).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgrab_settle_failures_total", Help: "Failed settler reads or batches (retried).",
		}),
		Refunds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgrab_refunds_total", Help: "Refunds of late payments that finished, by channel and outcome (succeeded, failed: not paid back).",
		}, []string{"channel", "outcome"}),
		DeadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgrab_settle_dead_letters_total", Help: "Events the settler could not settle and moved to a dead-letter stream.",
		}),
		Stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgrab_settle_stale_events_total", Help: "Events refused: their partition was rebuilt from MySQL without them after Redis lost its state.",
		}),
	}
	reg.MustRegister(m.Events, m.Batches, m.Lag, m.Failures, m.Refunds, m.DeadLetters, m.Stale)
	return m
}

func (m *Metrics) observe(events []flashgrab.Event, took time.Duration) {
	m.Batches.Observe(took.Seconds())
	now := time.Now().UnixMilli()
	for _, e := range events {
		m.Events.WithLabelValues(e.Kind).Inc()
	}
	if len(events) > 0 {
		// The stream id starts with the millisecond the script appended it.
		first := events[0].ID
		if i := strings.IndexByte(first, '-'); i > 0 {
			if ms, err := strconv.ParseInt(first[:i], 10, 64); err == nil {
				m.Lag.Observe(float64(now-ms) / 1000)
			}
		}
	}
}
