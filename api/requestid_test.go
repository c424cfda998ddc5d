package api_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/flashgrab/flashgrab/api"
)

// jsonLines decodes every line of a JSON-format log, failing on any line
// that is not a JSON object (plain text leaking past slog).
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// requestID sends a refused notify (a channel that is off: logged) with the
// given X-Request-Id ("" sends none) and returns the id the response echoes.
func requestID(t *testing.T, h *harness, sent string) string {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://flashgrab" + api.NotifyPath("alipay"))
	req.Header.SetMethod("POST")
	if sent != "" {
		req.Header.Set("X-Request-Id", sent)
	}
	req.SetBodyString("x=1")
	if err := h.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return string(resp.Header.Peek("X-Request-Id"))
}

// TestRequestIDOnLogLines: every response carries X-Request-Id (the
// client's if it is 1–64 of [A-Za-z0-9_-], else a generated one), and the
// lines logged while handling the request carry it as request_id, as JSON.
func TestRequestIDOnLogLines(t *testing.T) {
	var logs syncBuffer
	h := newHarnessWith(t, nil, func(s *api.Server) { s.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })

	kept := requestID(t, h, "client-ID_42")
	if kept != "client-ID_42" {
		t.Fatalf("valid client id answered as %q; want it kept", kept)
	}
	var ids []string
	for _, bad := range []string{"", "has space", "quote\"", strings.Repeat("a", 65), "ünïcode"} {
		id := requestID(t, h, bad)
		if id == "" || id == bad {
			t.Fatalf("client id %q answered as %q; want a generated one", bad, id)
		}
		ids = append(ids, id)
	}
	for i := range ids {
		for j := range i {
			if ids[i] == ids[j] {
				t.Fatalf("generated ids repeat: %q", ids)
			}
		}
	}

	want := append([]string{kept}, ids...)
	lines := jsonLines(t, logs.String())
	if len(lines) != len(want) {
		t.Fatalf("%d log lines for %d refused notifies:\n%s", len(lines), len(want), logs.String())
	}
	for i, l := range lines {
		if l["request_id"] != want[i] || !strings.Contains(l["msg"].(string), "notify refused") {
			t.Fatalf("line %d is %v; want the refused notify with request_id %q", i, l, want[i])
		}
	}
}

// TestMalformedRequestLogIsJSON: fasthttp's own error for a request it
// cannot parse goes through slog, so with a JSON handler it is a JSON line
// (with no request_id: there is no request).
func TestMalformedRequestLogIsJSON(t *testing.T) {
	var logs syncBuffer
	ln := fasthttputil.NewInmemoryListener()
	newHarnessWith(t, ln, func(s *api.Server) { s.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	c, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/sales/s1/grab HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c)
	pollLog(t, func() bool { return strings.Contains(logs.String(), "error when") })
	lines := jsonLines(t, logs.String())
	if len(lines) != 1 || lines[0]["msg"] != "http server" || !strings.Contains(lines[0]["detail"].(string), "error when") {
		t.Fatalf("fasthttp's error logged as %v; want one JSON line", lines)
	}
	if _, ok := lines[0]["request_id"]; ok {
		t.Fatalf("connection-level line has a request_id: %v", lines[0])
	}
}
