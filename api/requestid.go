package api

import (
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// requestIDHeader carries a request's id both ways: a client may send its
// own, and every response echoes the one its log lines carry.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a client-supplied id, so a log line cannot be
// padded by a client.
const maxRequestIDLen = 64

// requestIDPrefix makes generated ids unique across restarts and processes:
// the counter behind it starts at zero each time.
var requestIDPrefix = strconv.FormatInt(time.Now().UnixNano(), 36) + "-"

// requestIDSeq numbers the generated ids of this process.
var requestIDSeq atomic.Uint64

// setRequestID echoes the client's X-Request-Id if it is valid, or a fresh
// one, in the response header. The response header is where the id lives for
// the rest of the request: a log line reads it back from there (reqLogger),
// so a request that logs nothing pays only for a header copy, with no
// allocation.
func setRequestID(ctx *fasthttp.RequestCtx) {
	if id := ctx.Request.Header.Peek(requestIDHeader); validRequestID(id) {
		ctx.Response.Header.SetBytesV(requestIDHeader, id)
		return
	}
	var buf [32]byte
	b := append(buf[:0], requestIDPrefix...)
	b = strconv.AppendUint(b, requestIDSeq.Add(1), 36)
	ctx.Response.Header.SetBytesV(requestIDHeader, b)
}

// validRequestID reports whether id is 1–64 of [A-Za-z0-9_-]: anything else
// (empty, long, or with characters that could forge a log field) is replaced.
func validRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range id {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// reqLogger is the server's logger with the request's id on every line.
func (s *Server) reqLogger(ctx *fasthttp.RequestCtx) *slog.Logger {
	return s.logger().With("request_id", string(ctx.Response.Header.Peek(requestIDHeader)))
}
