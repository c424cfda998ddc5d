package api

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// TestHandlerTwice: a second Handler (or HTTPServer) call, and a second
// Server on the same registry, do not panic on a duplicate metrics
// registration; the servers sharing the registry count into the same series.
func TestHandlerTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := &Server{Registry: reg}, &Server{Registry: reg}
	ha := a.Handler()
	a.Handler()
	a.HTTPServer()
	hb := b.Handler()
	for _, h := range []fasthttp.RequestHandler{ha, hb, a.Handler()} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.SetRequestURI("/healthz")
		h(&ctx)
	}
	var m dto.Metric
	if err := b.metrics.requests.WithLabelValues("healthz", "2xx").Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 3 {
		t.Fatalf("healthz requests counted: %v, want 3", n)
	}
}
