package api

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	grabs    *prometheus.CounterVec
	notifies *prometheus.CounterVec
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
	}
	m.requests = register(reg, m.requests)
	m.latency = register(reg, m.latency)
	m.grabs = register(reg, m.grabs)
	m.notifies = register(reg, m.notifies)
	return m
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
