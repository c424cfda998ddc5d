package api

import (
	"context"
	"errors"
	"log/slog"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(msg string) error { return &apiError{fasthttp.StatusBadRequest, "bad_request", msg} }
func unauthorized(msg string) error {
	return &apiError{fasthttp.StatusUnauthorized, "unauthorized", msg}
}
func forbidden(msg string) error { return &apiError{fasthttp.StatusForbidden, "forbidden", msg} }

// domainErrors maps each domain error to its status and stable code.
var domainErrors = []struct {
	err    error
	status int
	code   string
}{
	{flashgrab.ErrNotFound, fasthttp.StatusNotFound, "not_found"},
	{flashgrab.ErrExists, fasthttp.StatusConflict, "exists"},
	{flashgrab.ErrSoldOut, fasthttp.StatusConflict, "sold_out"},
	{flashgrab.ErrLimitReached, fasthttp.StatusConflict, "limit_reached"},
	{flashgrab.ErrNotStarted, fasthttp.StatusForbidden, "not_started"},
	{flashgrab.ErrEnded, fasthttp.StatusGone, "ended"},
	{flashgrab.ErrEmpty, fasthttp.StatusConflict, "empty"},
	{flashgrab.ErrExpired, fasthttp.StatusGone, "expired"},
	{flashgrab.ErrInsufficientFunds, fasthttp.StatusPaymentRequired, "insufficient_funds"},
	{flashgrab.ErrNotPayable, fasthttp.StatusConflict, "not_payable"},
	// Before ErrUnavailable, which it wraps.
	{flashgrab.ErrRebuilding, fasthttp.StatusServiceUnavailable, "rebuilding"},
	{flashgrab.ErrUnavailable, fasthttp.StatusServiceUnavailable, "unavailable"},
	{settle.ErrNoChannel, fasthttp.StatusBadRequest, "bad_request"},
	{settle.ErrNoPayerID, fasthttp.StatusConflict, "login_required"},
	{context.DeadlineExceeded, fasthttp.StatusServiceUnavailable, "unavailable"},
}

// statusOf maps an error to its HTTP status, code and message. It is the one
// place where domain errors meet HTTP.
func statusOf(err error) (int, string, string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.code, ae.message
	}
	var inv *flashgrab.InvalidError
	if errors.As(err, &inv) {
		return fasthttp.StatusBadRequest, "bad_request", inv.Error()
	}
	for _, m := range domainErrors {
		if errors.Is(err, m.err) {
			return m.status, m.code, err.Error()
		}
	}
	return fasthttp.StatusInternalServerError, "internal", "internal error"
}

// writeError answers with the JSON error model; internal errors are logged
// but their text never reaches the client.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, err error) {
	status, code, msg := statusOf(err)
	if status >= 500 {
		s.reqLogger(ctx).Error("request failed", "method", string(ctx.Method()), "path", string(ctx.Path()), "status", status, "err", err)
	}
	writeErrorBody(ctx, status, code, msg)
}

func writeErrorBody(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	b, _ := strictJSON.Marshal(errorBody{Error: errorDetail{Code: code, Message: msg}})
	ctx.SetBody(b)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
