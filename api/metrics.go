package api

import (
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
	reg.MustRegister(m.requests, m.latency, m.grabs, m.notifies)
	return m
}

func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx, _ params) error {
	s.promH(ctx)
	return nil
}
