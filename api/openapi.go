package api

import (
	_ "embed"

	"github.com/valyala/fasthttp"
)

// OpenAPI is the API's contract: an OpenAPI 3.1 document of every route,
// field and error code, kept in the repository next to the handlers it
// describes and served as it is at /openapi.json. TestOpenAPIContract drives
// the running server and validates each request and answer against it, so
// the two cannot drift.
//
//go:embed openapi.json
var OpenAPI []byte

func (s *Server) openapi(ctx *fasthttp.RequestCtx, _ params) error {
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetBody(OpenAPI)
	return nil
}
