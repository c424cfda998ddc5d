package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// client talks to one flashgrab server. The hot loop uses hc directly with
// reused requests; call is the convenient, allocating form for set-up.
type client struct {
	hc   *fasthttp.HostClient
	base string // scheme://host:port[/prefix], no trailing slash
}

// newClient prepares a client for baseURL that keeps up to conns connections.
func newClient(baseURL string, conns int, timeout time.Duration) (*client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("load: parse url %q: %w", baseURL, err)
	}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return nil, fmt.Errorf("load: url %q: scheme must be http or https", baseURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("load: url %q has no host", baseURL)
	}
	hc := &fasthttp.HostClient{
		Addr:     net.JoinHostPort(u.Hostname(), port),
		Name:     "flashgrab-load",
		IsTLS:    u.Scheme == "https",
		MaxConns: conns,
		// Workers never outnumber connections, but set-up and warm-up may
		// briefly overlap with them; waiting beats failing with ErrNoFreeConns.
		MaxConnWaitTimeout:  timeout,
		ReadTimeout:         timeout,
		WriteTimeout:        timeout,
		MaxIdleConnDuration: time.Minute,
	}
	base := u.Scheme + "://" + hc.Addr + strings.TrimSuffix(u.EscapedPath(), "/")
	return &client{hc: hc, base: base}, nil
}

// statusError is a non-2xx answer to a set-up call.
type statusError struct {
	Op      string // "POST /v1/sales"
	Status  int
	Code    string
	Message string
}

func (e *statusError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Status, e.Message)
	}
	return fmt.Sprintf("%s: HTTP %d %s: %s", e.Op, e.Status, e.Code, e.Message)
}

// statusOf returns the HTTP status and API error code of err if it is a
// statusError, and 0 and "" otherwise.
func statusOf(err error) (int, string) {
	var se *statusError
	if errors.As(err, &se) {
		return se.Status, se.Code
	}
	return 0, ""
}

// call sends one JSON request and decodes a 2xx answer into out (if not nil).
// idemKey, when set, goes in the Idempotency-Key header.
func (c *client) call(method, path, token, idemKey string, in, out any) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	op := method + " " + path
	req.Header.SetMethod(method)
	req.SetRequestURI(c.base + path)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	if in != nil {
		body, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: encode body: %w", op, err)
		}
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	if err := c.hc.Do(req, resp); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if sc := resp.StatusCode(); sc < 200 || sc > 299 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		se := &statusError{Op: op, Status: sc}
		if json.Unmarshal(resp.Body(), &e) == nil && e.Error.Code != "" {
			se.Code, se.Message = e.Error.Code, e.Error.Message
		} else {
			se.Message = truncate(string(resp.Body()), 200)
		}
		return se
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body(), out); err != nil {
			return fmt.Errorf("%s: decode answer %s: %w", op, truncate(string(resp.Body()), 200), err)
		}
	}
	return nil
}

// truncate shortens s to at most n bytes for messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
