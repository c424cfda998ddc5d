package api

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// TestNotifyRoutesOfChannelsOff: every channel has its notify route even
// when it is off, and answers there in its provider's format (Alipay 200
// "fail", WeChat Pay 404 {"code":"FAIL"}), counted as refused under its
// name; a path naming no channel is the router's 404.
func TestNotifyRoutesOfChannelsOff(t *testing.T) {
	s := &Server{}
	h := s.Handler()
	post := func(path string) *fasthttp.RequestCtx {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(path)
		ctx.Request.SetBodyString("x=1")
		h(&ctx)
		return &ctx
	}
	for _, c := range []struct {
		path, contentType, body string
		status                  int
	}{
		{"/v1/notify/alipay", "text/plain; charset=utf-8", "fail", 200},
		{"/v1/notify/alipay", "text/plain; charset=utf-8", "fail", 200},
		{"/v1/notify/wechat", "application/json", `{"code":"FAIL","message":"payment channel not configured"}`, 404},
		{"/v1/notify/paypal", "application/json", `{"error":{"code":"not_found","message":"no route /v1/notify/paypal"}}`, 404},
	} {
		ctx := post(c.path)
		if ctx.Response.StatusCode() != c.status || string(ctx.Response.Header.ContentType()) != c.contentType ||
			string(ctx.Response.Body()) != c.body {
			t.Fatalf("POST %s: %d %q %s; want %d %q %s", c.path, ctx.Response.StatusCode(),
				ctx.Response.Header.ContentType(), ctx.Response.Body(), c.status, c.contentType, c.body)
		}
	}
	for channel, want := range map[string]float64{"alipay": 2, "wechat": 1} {
		var m dto.Metric
		if err := s.metrics.notifies.WithLabelValues(channel, "refused").Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != want {
			t.Fatalf("flashgrab_notifies_total{channel=%q,outcome=\"refused\"} = %v; want %v", channel, got, want)
		}
	}
	if ctx := post("/v1/notify/"); ctx.Response.StatusCode() != 404 {
		t.Fatalf("POST /v1/notify/: %d; want 404", ctx.Response.StatusCode())
	}
}
