// Package api is flashgrab's HTTP front end on fasthttp: routing, JWT auth,
// request decoding, the error model (the root package flashgrab's errors
// mapped to HTTP statuses and codes), metrics and health.
package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bytedance/sonic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/settle"
)

// strictJSON is sonic set to decode strictly: an unknown field is a bad
// request, not a silent drop.
var strictJSON = sonic.Config{DisallowUnknownFields: true}.Froze()

// Server answers the HTTP API. Engine, Books and Auth are required.
type Server struct {
	Engine *engine.Engine
	Books  *settle.Books
	Auth   Auth
	Logger *slog.Logger

	// Payments opens provider trades and applies what notifies say;
	// Channels verifies the notifies and answers them. A channel missing
	// from Channels is off: its notifies are refused in its provider's
	// format.
	Payments *settle.Payments
	Channels pay.Channels
	// Settler, when this process runs one, lets the operator's page show
	// the settlement backlog of its streams; nil leaves that part out.
	Settler *settle.Settler

	// WeChatLogin serves POST /v1/wechat/login (the mini program login that
	// the jsapi method needs); nil turns the route's answers into 400.
	WeChatLogin PayerLogin

	// Registry receives the server's metrics and is served on /metrics;
	// nil uses a fresh registry.
	Registry *prometheus.Registry
	// MaxBodyBytes limits request bodies (default 64 KiB); larger ones get 413.
	MaxBodyBytes int
	// Timeout bounds the work behind one request (default 2s), so a request
	// never hangs on a dead Redis or MySQL.
	Timeout time.Duration
	// MaxInFlight is how many client requests may be in progress at once
	// (default 10,000); beyond it they are answered 429 rate_limited at once,
	// which keeps latency bounded for the ones admitted. Provider notifies
	// and ops endpoints are never refused.
	MaxInFlight int64

	// MaxConns caps the connections served at once (fasthttp's Concurrency;
	// 0 keeps its default, 262,144); beyond it a connection is answered 503
	// and closed. Keep it under the file descriptor limit.
	MaxConns int
	// MaxConnsPerIP caps one client address's connections (0: no cap);
	// beyond it a connection is answered 429 and closed.
	MaxConnsPerIP int
	// IdleTimeout closes a keep-alive connection that has sent nothing for
	// this long (default 60s), so idle clients cannot hold descriptors.
	IdleTimeout time.Duration
	// GrabLimit is each user's token bucket of grabs, sales and packets
	// together; a grab beyond it is answered 429 rate_limited without
	// touching Redis. The zero value turns it off.
	GrabLimit RateLimit
	// IPLimit is each client address's token bucket on the routes that need
	// no token (reading a sale or a packet). Zero turns it off. Notifies and
	// ops endpoints are never limited.
	IPLimit RateLimit

	inFlight atomic.Int64
	grabs    *limiter[string]
	ips      *limiter[netip.Addr]

	// What the operator's page shows that no counter elsewhere keeps.
	activity *activity
	packets  packetCounts
	rates    rates

	setup   sync.Once // Handler's: defaults, metrics, routes, once per Server
	routes  []route
	metrics *metrics
	promH   fasthttp.RequestHandler
}

// route is one endpoint. Its pattern's "*" segments are parameters.
type route struct {
	method  string
	pattern string
	name    string
	handle  func(*fasthttp.RequestCtx, params) error
	obs     prometheus.Observer
	exempt  bool // from MaxInFlight: ops endpoints and provider notifies
	public  bool // needs no token: limited per client address by IPLimit
}

// params are a route's "*" segments, in order.
type params [2]string

// HTTPServer returns the fasthttp server for the API, with body limits,
// read/write/idle timeouts, connection caps, and fasthttp's own log
// messages scrubbed of credentials into Logger.
func (s *Server) HTTPServer() *fasthttp.Server {
	if s.MaxBodyBytes <= 0 {
		s.MaxBodyBytes = 64 << 10
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 60 * time.Second
	}
	return &fasthttp.Server{
		Concurrency:           s.MaxConns,
		MaxConnsPerIP:         s.MaxConnsPerIP,
		Logger:                fasthttpLogger{s.logger()},
		Handler:               s.Handler(),
		Name:                  "flashgrab",
		MaxRequestBodySize:    s.MaxBodyBytes,
		ReadTimeout:           5 * time.Second,
		WriteTimeout:          5 * time.Second,
		IdleTimeout:           s.IdleTimeout,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			// Refused before routing, but answered with an id all the same:
			// the document promises one on every answer.
			setRequestID(ctx)
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				writeErrorBody(ctx, fasthttp.StatusRequestEntityTooLarge, "too_large",
					fmt.Sprintf("request body over %d bytes", s.MaxBodyBytes))
				return
			}
			writeErrorBody(ctx, fasthttp.StatusBadRequest, "bad_request", "malformed HTTP request")
		},
	}
}

// Handler returns the request handler (routing, metrics, errors). The
// first call sets the defaults and registers the metrics; later calls
// return the same handler.
func (s *Server) Handler() fasthttp.RequestHandler {
	s.setup.Do(s.init)
	return s.serve
}

func (s *Server) init() {
	if s.Registry == nil {
		s.Registry = prometheus.NewRegistry()
	}
	if s.Timeout <= 0 {
		s.Timeout = 2 * time.Second
	}
	if s.MaxInFlight <= 0 {
		s.MaxInFlight = 10_000
	}
	s.metrics = newMetrics(s.Registry)
	s.grabs = newLimiter[string](s.GrabLimit, maxLimited)
	s.ips = newLimiter[netip.Addr](s.IPLimit, maxLimited)
	s.activity = newActivity()
	registerStats(s.Registry, s.Engine, s.Books)
	s.promH = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	// The grab routes come first: routes are matched in order, and these
	// take almost all the traffic.
	s.routes = []route{
		{method: "POST", pattern: "/v1/sales/*/grab", name: "grab_sale", handle: s.grabSale},
		{method: "POST", pattern: "/v1/packets/*/grab", name: "grab_packet", handle: s.grabPacket},
		{method: "GET", pattern: "/healthz", name: "healthz", handle: s.healthz, exempt: true},
		{method: "GET", pattern: "/readyz", name: "readyz", handle: s.readyz, exempt: true},
		{method: "GET", pattern: "/metrics", name: "metrics", handle: s.serveMetrics, exempt: true},
		{method: "GET", pattern: "/openapi.json", name: "openapi", handle: s.openapi, exempt: true},
		{method: "GET", pattern: "/admin", name: "admin_page", handle: s.adminPage, exempt: true},
		{method: "GET", pattern: "/v1/admin/stats", name: "admin_stats", handle: s.adminStats, exempt: true},
		{method: "POST", pattern: "/v1/sales", name: "create_sale", handle: s.createSale},
		{method: "GET", pattern: "/v1/sales/*", name: "get_sale", handle: s.getSale, public: true},
		{method: "GET", pattern: "/v1/orders/*", name: "get_order", handle: s.getOrder},
		{method: "POST", pattern: "/v1/orders/*/pay", name: "pay_order", handle: s.payOrder},
		{method: "POST", pattern: "/v1/topups", name: "topup", handle: s.topup},
		{method: "POST", pattern: "/v1/wechat/login", name: "wechat_login", handle: s.wechatLogin},
		{method: "POST", pattern: "/v1/packets", name: "create_packet", handle: s.createPacket},
		{method: "GET", pattern: "/v1/packets/*", name: "get_packet", handle: s.getPacket, public: true},
		{method: "GET", pattern: "/v1/accounts/*", name: "get_account", handle: s.getAccount},
		{method: "POST", pattern: "/v1/admin/accounts/*/credit", name: "credit", handle: s.credit},
	}
	// One notify route per channel flashgrab has, on or off: an off channel
	// still answers in its provider's format.
	for _, ch := range pay.Names() {
		s.routes = append(s.routes, route{method: "POST", pattern: NotifyPath(ch), name: "notify_" + ch,
			handle: s.notify(ch), exempt: true})
	}
	for i := range s.routes {
		s.routes[i].obs = s.metrics.latency.WithLabelValues(s.routes[i].name)
	}
}

func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	setRequestID(ctx)
	r, ps, allowed := s.match(ctx.Method(), ctx.Path())
	name := "unmatched"
	switch {
	case r != nil && !r.exempt && s.inFlight.Add(1) > s.MaxInFlight:
		s.inFlight.Add(-1)
		name = r.name
		writeErrorBody(ctx, fasthttp.StatusTooManyRequests, "rate_limited", "too many requests in progress; retry shortly")
	case r != nil && r.public && !s.ips.allow(clientAddr(ctx), start):
		s.inFlight.Add(-1)
		name = r.name
		writeErrorBody(ctx, fasthttp.StatusTooManyRequests, "rate_limited", "too many requests from this address; retry shortly")
	case r != nil:
		name = r.name
		s.handle(ctx, r, ps)
		if !r.exempt {
			s.inFlight.Add(-1)
		}
		r.obs.Observe(time.Since(start).Seconds())
	case allowed:
		writeErrorBody(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s is not allowed on %s", ctx.Method(), ctx.Path()))
	default:
		writeErrorBody(ctx, fasthttp.StatusNotFound, "not_found", fmt.Sprintf("no route %s", ctx.Path()))
	}
	s.metrics.requests.WithLabelValues(name, statusClass(ctx.Response.StatusCode())).Inc()
}

// handle runs r's handler. One that panics answers 500 internal and is
// logged with its stack: fasthttp, unlike net/http, does not recover a
// handler's panic, and one request's bug would otherwise end serve and every
// connection with it.
func (s *Server) handle(ctx *fasthttp.RequestCtx, r *route, ps params) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		s.metrics.panics.WithLabelValues(r.name).Inc()
		// The request itself is not logged: it may carry a token.
		s.reqLogger(ctx).Error("handler panicked; answered 500", "route", r.name, "method", string(ctx.Method()),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		writeErrorBody(ctx, fasthttp.StatusInternalServerError, "internal", "internal error")
	}()
	if err := r.handle(ctx, ps); err != nil {
		s.writeError(ctx, err)
	}
}

// clientAddr is the request's peer address, IPv4 unmapped, as a map key.
func clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}

// admitGrab takes a token from user's grab bucket; without one it answers
// 429 rate_limited and reports false.
func (s *Server) admitGrab(ctx *fasthttp.RequestCtx, kind, user string) bool {
	if s.grabs.allow(user, time.Now()) {
		return true
	}
	s.metrics.grabs.WithLabelValues(kind, "rate_limited").Inc()
	writeErrorFast(ctx, fasthttp.StatusTooManyRequests, "rate_limited", "too many grabs from this user; retry shortly")
	return false
}

// match finds the route for method and path. allowed reports that the path
// exists under another method (405 rather than 404).
func (s *Server) match(method, path []byte) (r *route, ps params, allowed bool) {
	for i := range s.routes {
		rt := &s.routes[i]
		p, ok := matchPattern(rt.pattern, path)
		if !ok {
			continue
		}
		if string(method) != rt.method {
			allowed = true
			continue
		}
		return rt, p, false
	}
	return nil, ps, allowed
}

// matchPattern matches path against pattern segment by segment; "*" matches
// one non-empty segment and is captured.
func matchPattern(pattern string, path []byte) (params, bool) {
	var ps params
	n := 0
	if len(path) == 0 || path[0] != '/' {
		return ps, false
	}
	pattern, path = pattern[1:], path[1:]
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		seg, rest, more := bytes.Cut(path, slash)
		if pmore != more {
			return ps, false
		}
		if pseg == "*" {
			if len(seg) == 0 || n == len(ps) {
				return ps, false
			}
			ps[n] = string(seg)
			n++
		} else if string(seg) != pseg {
			return ps, false
		}
		if !more {
			return ps, true
		}
		pattern, path = prest, rest
	}
}

var slash = []byte{'/'}

// statusClass is the metrics label of a status: 4xx codes one by one (they
// say what clients got wrong), the others by class.
func statusClass(code int) string {
	switch {
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		if s, ok := clientStatuses[code]; ok {
			return s
		}
		return "4xx"
	}
	return "5xx"
}

var clientStatuses = map[int]string{400: "400", 401: "401", 402: "402", 403: "403", 404: "404", 405: "405",
	409: "409", 410: "410", 413: "413", 429: "429"}

// principal authenticates the request's bearer token.
func (s *Server) principal(ctx *fasthttp.RequestCtx) (Principal, error) {
	h := ctx.Request.Header.Peek("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(string(h[:len(prefix)]), prefix) {
		return Principal{}, unauthorized("missing bearer token")
	}
	p, err := s.Auth.Verify(string(h[len(prefix):]))
	if err != nil {
		return Principal{}, unauthorized("invalid or expired token")
	}
	return p, nil
}

func (s *Server) admin(ctx *fasthttp.RequestCtx) (Principal, error) {
	p, err := s.principal(ctx)
	if err == nil && !p.Admin {
		err = forbidden("admin role required")
	}
	return p, err
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) error {
	b, err := strictJSON.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(b)
	return nil
}

// reqContext bounds the work behind a request.
func (s *Server) reqContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.Timeout)
}
