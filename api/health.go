package api

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"
)

func (s *Server) healthz(ctx *fasthttp.RequestCtx, _ params) error {
	return writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 503 when Redis is unreachable, or when some partition's Redis
// node is (its circuit breaker is open, or no cluster node serves it): those
// partitions' grabs cannot be decided, and partitions_down lists them so an
// operator sees which sales are affected. A MySQL outage is reported but
// keeps 200: grabs go on and settlement catches up when MySQL returns.
// Partitions whose Redis state was lost and waits for its rebuild from
// MySQL answer 503 too, listed in partitions_rebuilding.
func (s *Server) readyz(ctx *fasthttp.RequestCtx, _ params) error {
	c, cancel := s.reqContext()
	defer cancel()
	status, down := s.redisHealth(c)
	body := map[string]any{"redis": status, "mysql": "ok"}
	code := fasthttp.StatusOK
	if len(down) > 0 {
		body["partitions_down"] = down
	}
	if status != "ok" {
		code = fasthttp.StatusServiceUnavailable
	}
	// Partitions whose Redis state was lost: fenced until rebuilt from MySQL.
	if rb := s.Engine.Rebuilding(); len(rb) > 0 {
		body["partitions_rebuilding"] = rb
		code = fasthttp.StatusServiceUnavailable
	}
	if err := s.Books.DB.PingContext(c); err != nil {
		body["mysql"] = "unreachable; settlement is paused and will catch up"
	}
	return writeJSON(ctx, code, body)
}

// redisHealth is Redis as /readyz reports it: "ok", "unreachable", or how
// many partitions are unreachable, with the partitions down (their node's
// circuit breaker is open, or no cluster node serves them).
func (s *Server) redisHealth(ctx context.Context) (status string, down []int) {
	// A cluster's PING goes to any one node: with some partitions down it
	// would speak for the whole cluster, so it is asked only when the
	// breakers see no partition down (an outage they have not counted yet).
	down = s.Engine.PartitionsDown(ctx)
	switch all := s.Engine.Keys().Partitions; {
	case len(down) == all:
		return "unreachable", down
	case len(down) > 0:
		return strconv.Itoa(len(down)) + " of " + strconv.Itoa(all) + " partitions unreachable", down
	case s.Engine.Ping(ctx) != nil:
		return "unreachable", down
	}
	return "ok", down
}
