package api_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// scrape reads /metrics and returns the value of every series without labels.
func (h *harness) scrape() map[string]float64 {
	h.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://flashgrab/metrics")
	if err := h.client.DoTimeout(req, resp, 10*time.Second); err != nil || resp.StatusCode() != 200 {
		h.t.Fatalf("GET /metrics: %d %v", resp.StatusCode(), err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(resp.Body()), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			h.t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[name] = v
	}
	return out
}

// TestMetricsExportEngineAndBooksCounters: /metrics carries the batcher's,
// the sold-out mark's and the books' counters, and they add up: every grab is
// decided once, by a script call or by the mark.
func TestMetricsExportEngineAndBooksCounters(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := newHarness(t, rdb, prefix)
	if status, body := h.do("POST", "/v1/sales", h.admin, `{"id":"s1","merchant_id":"m","price_cents":1,"stock":2,"per_user_limit":1,`+window+`}`); status != 201 {
		t.Fatalf("create sale: %d %v", status, body)
	}
	grab := func(user string, want int) {
		t.Helper()
		if status, body := h.do("POST", "/v1/sales/s1/grab", h.token(user, false, time.Hour), ""); status != want {
			t.Fatalf("grab by %s: %d %v, want %d", user, status, body, want)
		}
	}
	// One at a time: each win is its own script call and round trip. (Once
	// the last unit is sold the mark may load at any moment, so what answers
	// later grabs depends on timing.)
	grab("a", 200)
	grab("b", 200)
	m := h.scrape()
	for name, want := range map[string]float64{
		"flashgrab_grab_batch_users_total":     2,
		"flashgrab_grab_batch_calls_total":     2,
		"flashgrab_grab_batch_pipelines_total": 2,
		"flashgrab_grab_batch_max_size":        1,
		"flashgrab_soldout_mark_answers_total": 0,
		"flashgrab_soldout_mark_refused_total": 0,
		"flashgrab_books_conflicts_total":      0,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (exported: %v), want %v", name, got, ok, want)
		}
	}
	// The sale is sold out: once the mark has loaded its buyers it answers.
	grabs := 2
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		grabs++
		grab(fmt.Sprint("probe", grabs), 409)
		m = h.scrape()
		return m["flashgrab_soldout_mark_answers_total"] > 0, fmt.Sprintf("sold-out mark: %v answers, %v loads",
			m["flashgrab_soldout_mark_answers_total"], m["flashgrab_soldout_mark_loads_total"])
	})
	if by, users := m["flashgrab_soldout_mark_answers_total"], m["flashgrab_grab_batch_users_total"]; by+users != float64(grabs) {
		t.Fatalf("%d grabs: %v answered by the mark and %v by scripts, want them to add up", grabs, by, users)
	}
	if loads := m["flashgrab_soldout_mark_loads_total"]; loads < 1 {
		t.Fatalf("the mark answered with %v loads of the buyers", loads)
	}
}
