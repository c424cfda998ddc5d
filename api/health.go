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
func (s *Server) readyz(ctx *fasthttp.RequestCtx, _ params) error {
	c, cancel := s.reqContext()
	defer cancel()
	body := map[string]any{"redis": "ok", "mysql": "ok"}
	status := fasthttp.StatusOK
	if down := s.Engine.PartitionsDown(c); len(down) > 0 {
		body["redis"] = strconv.Itoa(len(down)) + " of " + strconv.Itoa(s.Engine.Keys().Partitions) + " partitions unreachable"
		body["partitions_down"] = down
		status = fasthttp.StatusServiceUnavailable
	}
	if err := s.Engine.Ping(c); err != nil {
		body["redis"] = "unreachable"
		status = fasthttp.StatusServiceUnavailable
	}
	if err := s.Books.DB.PingContext(c); err != nil {
		body["mysql"] = "unreachable; settlement is paused and will catch up"
	}
	return writeJSON(ctx, status, body)
}
