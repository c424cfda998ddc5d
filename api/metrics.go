package api

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	grabs    *prometheus.CounterVec
	notifies *prometheus.CounterVec
	panics   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgrab_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flashgrab_http_request_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"route"}),
		grabs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgrab_grabs_total", Help: "Grabs by target (sale, packet) and outcome.",
		}, []string{"target", "outcome"}),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgrab_notifies_total", Help: "Provider notifies by channel and outcome (applied, duplicate, refunding, refused).",
		}, []string{"channel", "outcome"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgrab_http_panics_total", Help: "Handler panics by route, each answered 500 internal (a bug: see the log's stack).",
		}, []string{"route"}),
	}
	m.requests = register(reg, m.requests)
	m.latency = register(reg, m.latency)
	m.grabs = register(reg, m.grabs)
	m.notifies = register(reg, m.notifies)
	m.panics = register(reg, m.panics)
	return m
}

// registerStats exports the counters the engine and the books keep on their
// hot paths (atomics, no Prometheus there), read at scrape time: how well
// grabs coalesce, how often the sold-out mark answers without Redis, and how
// contended the balances are.
func registerStats(reg prometheus.Registerer, eng *engine.Engine, books *settle.Books) {
	counter := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	for _, c := range []prometheus.Collector{
		counter("flashgrab_grab_batch_users_total", "Grabs decided by coalesced script calls.",
			func() int64 { return eng.BatchStats().Users }),
		counter("flashgrab_grab_batch_calls_total", "Script calls (EVALSHA) of the grab batcher, each deciding one batch.",
			func() int64 { return eng.BatchStats().Calls }),
		counter("flashgrab_grab_batch_pipelines_total", "Round trips to Redis of the grab batcher, each carrying one or more calls.",
			func() int64 { return eng.BatchStats().Pipelines }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flashgrab_grab_batch_max_size", Help: "The largest batch of grabs one script call decided."},
			func() float64 { return float64(eng.BatchStats().MaxBatch) }),
		counter("flashgrab_soldout_mark_answers_total", "Grabs of a sold-out sale answered from memory, without Redis.",
			func() int64 { return eng.SoldOutStats().Answered }),
		counter("flashgrab_soldout_mark_loads_total", "Buyers hashes loaded by the sold-out mark.",
			func() int64 { return eng.SoldOutStats().Loads }),
		counter("flashgrab_soldout_mark_renewals_total", "Sold-out marks renewed without a load.",
			func() int64 { return eng.SoldOutStats().Renewals }),
		counter("flashgrab_soldout_mark_refused_total", "Sold-out mark loads refused: the buyers hash was over the bound.",
			func() int64 { return eng.SoldOutStats().TooBig }),
		counter("flashgrab_books_conflicts_total", "MySQL transactions that lost a compare-and-set or a lock race and were retried.",
			books.Conflicts),
	} {
		register(reg, c)
	}
}

// register adds c to reg, or returns the collector reg already has under
// its name: servers sharing a registry then count into the same series
// instead of panicking on the second registration.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(fmt.Sprintf("register metric: %v", err))
	}
	return c
}

func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx, _ params) error {
	s.promH(ctx)
	return nil
}
