package api_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// chromium finds a Chromium or Chrome binary: $FLASHGRAB_CHROMIUM, else
// the usual names on PATH.
func chromium() (string, bool) {
	if p := os.Getenv("FLASHGRAB_CHROMIUM"); p != "" {
		return p, true
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// browser starts a headless Chromium with a fresh profile, closed when the
// test ends; everything it does is bounded by timeout.
func browser(t *testing.T, path string, timeout time.Duration) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true))
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// pageFigures are what the page shows of the sale under load.
type pageFigures struct {
	Sold       float64 `json:"sold"`
	GrabsPerS  float64 `json:"grabs_per_s"`
	SalePerS   float64 `json:"sale_per_s"`
	Shares     string  `json:"shares"`
	Unsettled  string  `json:"unsettled"`
	Durability string  `json:"durability"`
	Redis      string  `json:"redis"`
	Row        string  `json:"row"`
	Hash       string  `json:"hash"`
}

// readFigures reads the page's figures from the DOM, as a person would see
// them (raw numbers from the cells' data-v).
const readFigures = `(() => {
  const row = document.querySelector('tr[data-sale="flash"]');
  const v = (sel, root) => { const e = (root || document).querySelector(sel); return e ? Number(e.dataset.v) : -1; };
  return {
    sold: row ? v('[data-k="sold"]', row) : -1,
    grabs_per_s: row ? v('[data-k="grabs_per_s"]', row) : -1,
    sale_per_s: v('tr[data-target="sale"] [data-k="per_s"]'),
    shares: document.getElementById('pk-shares').textContent,
    unsettled: document.getElementById('st-unsettled').textContent,
    durability: document.getElementById('durability').textContent,
    redis: document.getElementById('redis').textContent,
    row: row ? row.innerText.replace(/\s+/g, ' ') : '',
    hash: location.hash,
  };
})()`

// TestAdminPageInChromium loads /admin in headless Chromium: without a
// token it asks for one, a user's token is refused (403) and the page says
// so, and with an admin token (given in the URL fragment) it shows a sale
// under load with its figures moving: sold rising, grabs/s above zero. The
// page runs under its Content-Security-Policy, so its inline script's hash
// is checked too. A screenshot is saved in the test's artifact directory
// (kept with go test -artifacts). Skipped only when no Chromium is found.
func TestAdminPageInChromium(t *testing.T) {
	path, ok := chromium()
	if !ok {
		t.Skip("no Chromium found (apt-get install chromium, or set FLASHGRAB_CHROMIUM): the operator's page is not tested in a browser")
	}
	rdb, prefix := testenv.Redis(t)
	a := newAdminServer(t, rdb, prefix)
	a.runSettler(t)
	base := "http://" + testenv.Serve(t, a.srv.HTTPServer())
	client := &fasthttp.Client{}
	h := &harness{t: t, client: &fasthttp.Client{Dial: func(string) (net.Conn, error) { return net.Dial("tcp", strings.TrimPrefix(base, "http://")) }}}
	h.admin = h.token("root", true, time.Hour)

	if status, body := h.do("POST", "/v1/sales", h.admin, `{"id":"flash","merchant_id":"m","price_cents":1999,"stock":20000,"per_user_limit":10000,
		"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z"}`); status != 201 {
		t.Fatalf("create sale: %d %v", status, body)
	}
	if status, body := h.do("POST", "/v1/admin/accounts/sender/credit", h.admin, `{"amount_cents":100000,"ref":"seed"}`); status != 200 {
		t.Fatalf("credit: %d %v", status, body)
	}
	status, pk := h.do("POST", "/v1/packets", h.token("sender", false, time.Hour), `{"total_cents":100000,"count":1000,"mode":"random"}`)
	if status != 201 {
		t.Fatalf("create packet: %d %v", status, pk)
	}

	// The load: 4 buyers grabbing the sale, each attempt a fresh key, and
	// one goroutine grabbing packet shares as fresh users, paced so that the
	// settler keeps up on a shared machine.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var won, shares atomic.Int64
	grab := func(path, token, key string) int {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(base + path)
		req.Header.SetMethod("POST")
		req.Header.Set("Authorization", "Bearer "+token)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		if err := client.DoTimeout(req, resp, 5*time.Second); err != nil {
			return 0
		}
		return resp.StatusCode()
	}
	for g := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if g == 4 {
					if grab("/v1/packets/"+pk["id"].(string)+"/grab", h.token(fmt.Sprintf("p%d", n), false, time.Hour), "") == 200 {
						shares.Add(1)
					}
				} else if grab("/v1/sales/flash/grab", h.token(fmt.Sprintf("b%d", g), false, time.Hour), fmt.Sprintf("k%d", n)) == 200 {
					won.Add(1)
				}
			}
		}()
	}
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt)

	ctx := browser(t, path, 25*time.Second)
	// No token: the page asks for one.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/admin"), chromedp.WaitVisible(chromedp.CSS("#login"))); err != nil {
		t.Fatalf("load /admin: %v", err)
	}
	if state, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("body"), "data-state")); err != nil || state.Value != "login" {
		t.Fatalf("/admin without a token is in state %+v (%v), want login", state, err)
	}
	// A user's token, typed in: refused, and the page says why.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), h.token("alice", false, time.Hour)),
		chromedp.Click(chromedp.CSS("#login button")), chromedp.WaitVisible(chromedp.CSS(`body[data-state="denied-403"]`))); err != nil {
		t.Fatalf("a user's token: %v", err)
	}
	message, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#message")))
	if err != nil || !strings.Contains(message, "403") || !strings.Contains(message, "admin role required") {
		t.Fatalf("a user's token: the page says %q (%v)", message, err)
	}
	// The admin token in the fragment: live figures, and the token gone
	// from the address bar.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(base+"/admin#token="+h.admin),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"]`))); err != nil {
		t.Fatalf("the admin token: %v", err)
	}
	var first, last pageFigures
	testenv.Eventually(t, 10*time.Second, func() (ok bool, why string) {
		first, err = chromedp.Run(ctx, chromedp.Evaluate[pageFigures](readFigures))
		return err == nil && first.Sold > 0, fmt.Sprintf("the page shows no sale with units sold: %+v (%v)", first, err)
	})
	testenv.Eventually(t, 15*time.Second, func() (ok bool, why string) {
		last, err = chromedp.Run(ctx, chromedp.Evaluate[pageFigures](readFigures))
		return err == nil && last.Sold > first.Sold && last.GrabsPerS > 0 && last.SalePerS > 0 && last.Unsettled != "–" && last.Shares != "–",
			fmt.Sprintf("figures did not move: first %+v, now %+v (%v)", first, last, err)
	})
	if last.Hash != "" || last.Durability != "durability none" || last.Redis != "redis ok" {
		t.Errorf("page: fragment %q (want it cleared), %q, %q", last.Hash, last.Durability, last.Redis)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.ArtifactDir(), "admin.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	halt()
	t.Logf("screenshot: %s", shot)
	t.Logf("during the load the page showed: sale row %q; sale grabs/s %.1f; packets %q; unsettled %q (first read: sold %.0f); the load won %d units and %d shares",
		last.Row, last.SalePerS, last.Shares, last.Unsettled, first.Sold, won.Load(), shares.Load())
}
