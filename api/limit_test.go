package api

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestInFlightLimit: beyond MaxInFlight client requests are answered 429 at
// once, while health checks and provider notifies still get through.
func TestInFlightLimit(t *testing.T) {
	s := &Server{MaxInFlight: 3}
	h := s.Handler()
	s.inFlight.Store(3) // three requests already in progress
	call := func(method, path string) *fasthttp.RequestCtx {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(method)
		ctx.Request.SetRequestURI(path)
		h(&ctx)
		return &ctx
	}
	if ctx := call("POST", "/v1/sales/s1/grab"); ctx.Response.StatusCode() != 429 ||
		string(ctx.Response.Body()) != `{"error":{"code":"rate_limited","message":"too many requests in progress; retry shortly"}}` {
		t.Fatalf("grab over the limit: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if s.inFlight.Load() != 3 {
		t.Fatalf("a refused request left the in-flight count at %d", s.inFlight.Load())
	}
	if ctx := call("GET", "/healthz"); ctx.Response.StatusCode() != 200 {
		t.Fatalf("healthz over the limit: %d", ctx.Response.StatusCode())
	}
	if ctx := call("POST", "/v1/notify/alipay"); ctx.Response.StatusCode() == 429 {
		t.Fatal("a provider notify was rate limited")
	}
	s.inFlight.Store(0)
	if ctx := call("POST", "/v1/sales/s1/grab"); ctx.Response.StatusCode() != 401 {
		t.Fatalf("grab under the limit without a token: %d, want 401", ctx.Response.StatusCode())
	}
	if s.inFlight.Load() != 0 {
		t.Fatalf("in-flight count %d after the request finished", s.inFlight.Load())
	}
}
