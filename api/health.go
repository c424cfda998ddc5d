package api

import (
	"github.com/valyala/fasthttp"
)

func (s *Server) healthz(ctx *fasthttp.RequestCtx, _ params) error {
	return writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 503 when Redis is unreachable, since no grab can be decided. A
// MySQL outage is reported but keeps 200: grabs go on and settlement catches
// up when MySQL returns.
func (s *Server) readyz(ctx *fasthttp.RequestCtx, _ params) error {
	c, cancel := s.reqContext()
	defer cancel()
	body := map[string]string{"redis": "ok", "mysql": "ok"}
	status := fasthttp.StatusOK
	if err := s.Engine.Ping(c); err != nil {
		body["redis"] = "unreachable"
		status = fasthttp.StatusServiceUnavailable
	}
	if err := s.Books.DB.PingContext(c); err != nil {
		body["mysql"] = "unreachable; settlement is paused and will catch up"
	}
	return writeJSON(ctx, status, body)
}
