package api

import (
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
	body := map[string]any{"redis": "ok", "mysql": "ok"}
	status := fasthttp.StatusOK
	// A cluster's PING goes to any one node: with some partitions down it
	// would speak for the whole cluster, so it is asked only when the
	// breakers see no partition down (an outage they have not counted yet).
	down := s.Engine.PartitionsDown(c)
	switch all := s.Engine.Keys().Partitions; {
	case len(down) == all:
		body["redis"] = "unreachable"
	case len(down) > 0:
		body["redis"] = strconv.Itoa(len(down)) + " of " + strconv.Itoa(all) + " partitions unreachable"
	case s.Engine.Ping(c) != nil:
		body["redis"] = "unreachable"
	}
	if len(down) > 0 {
		body["partitions_down"] = down
	}
	if body["redis"] != "ok" {
		status = fasthttp.StatusServiceUnavailable
	}
	// Partitions whose Redis state was lost: fenced until rebuilt from MySQL.
	if rb := s.Engine.Rebuilding(); len(rb) > 0 {
		body["partitions_rebuilding"] = rb
		status = fasthttp.StatusServiceUnavailable
	}
	if err := s.Books.DB.PingContext(c); err != nil {
		body["mysql"] = "unreachable; settlement is paused and will catch up"
	}
	return writeJSON(ctx, status, body)
}
