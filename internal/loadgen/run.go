package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/valyala/fasthttp"
	"golang.org/x/term"

	"github.com/flashgrab/flashgrab/api"
)

// Modes of a run, as Report.Mode names them.
const (
	ModeClosed = "closed"
	ModeOpen   = "open"
)

// Limits that keep a mistyped flag from exhausting the generator's memory:
// every user's token is minted before the run.
const (
	maxUsers       = 1_000_000
	maxConcurrency = 100_000
	maxRate        = 10_000_000
)

// DefaultTimeout bounds each request when Config.Timeout is 0.
const DefaultTimeout = 5 * time.Second

// Config describes one load run against a running flashgrab server.
type Config struct {
	// BaseURL is the server, e.g. http://127.0.0.1:8080.
	BaseURL string
	// JWTSecret signs the admin and user tokens the generator mints itself.
	JWTSecret []byte
	// Scenario is one of Scenarios.
	Scenario string
	// Concurrency is the number of workers, each with one request in flight;
	// the generator opens as many connections.
	Concurrency int
	// Duration of the measured phase (set-up comes before it).
	Duration time.Duration
	// Rate > 0 selects the open loop: Rate requests per second are scheduled
	// at fixed intervals, whether or not earlier ones were answered, and
	// latency counts from the scheduled time. 0 selects the closed loop: each
	// worker sends its next request when the previous one is answered.
	Rate int
	// Users is the number of distinct user ids the requests rotate over.
	Users int
	// Stock is the sale's stock (sale, soldout) or the number of packet shares
	// (packet); 0 takes the scenario's default. The mixed scenario always uses
	// the defaults.
	Stock int64
	// Timeout bounds each request; 0 means DefaultTimeout.
	Timeout time.Duration
	// Progress receives a progress bar when it is a terminal (an *os.File
	// such as os.Stderr on a tty); nil, a pipe, a file or any other writer
	// shows none, since redrawn frames would pile up in a log.
	Progress io.Writer
}

// normalize checks c and fills in defaults for zero fields.
func (c *Config) normalize() error {
	if c.BaseURL == "" {
		return errors.New("load: empty base url")
	}
	if len(c.JWTSecret) == 0 {
		return errors.New("load: empty JWT secret: tokens cannot be minted")
	}
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("load: unknown scenario %q (want one of %v)", c.Scenario, Scenarios)
	}
	if c.Concurrency < 1 || c.Concurrency > maxConcurrency {
		return fmt.Errorf("load: concurrency %d out of range [1, %d]", c.Concurrency, maxConcurrency)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("load: duration %v must be positive", c.Duration)
	}
	if c.Rate < 0 || c.Rate > maxRate {
		return fmt.Errorf("load: rate %d out of range [0, %d]", c.Rate, maxRate)
	}
	if c.Users < 1 || c.Users > maxUsers {
		return fmt.Errorf("load: users %d out of range [1, %d]", c.Users, maxUsers)
	}
	if c.Stock < 0 {
		return fmt.Errorf("load: stock %d must not be negative", c.Stock)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("load: timeout %v must not be negative", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return nil
}

// scheduled returns how many requests the open loop sends: rate × duration,
// rounded down, computed without overflow for any accepted rate and duration.
func scheduled(rate int, d time.Duration) int64 {
	r := int64(rate)
	sec := int64(d / time.Second)
	frac := int64(d % time.Second)
	return r*sec + r*frac/int64(time.Second)
}

// offsetOf returns when, after the start, the open loop sends request k.
func offsetOf(k int64, rate int) time.Duration {
	r := int64(rate)
	return time.Duration(k/r)*time.Second + time.Duration((k%r)*int64(time.Second)/r)
}

// Run sets up cfg.Scenario on the server, sends load for cfg.Duration and
// returns the report. Cancelling ctx during the measured phase stops it early
// and returns the partial report with Interrupted set.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	// A few spare connections let set-up and warm-up overlap without waiting.
	c, err := newClient(cfg.BaseURL, cfg.Concurrency+8, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	runID, err := newRunID()
	if err != nil {
		return nil, err
	}
	// Tokens outlive the run and its set-up; sales and packets stay open as long.
	ttl := cfg.Duration + 10*time.Minute
	auth := api.Auth{Secret: cfg.JWTSecret}
	mint := func(user string, admin bool) (string, error) {
		tok, err := auth.Mint(user, admin, ttl)
		if err != nil {
			return "", fmt.Errorf("load: %w", err)
		}
		return tok, nil
	}
	s := &session{cfg: &cfg, c: c, runID: runID, ttl: ttl, minter: mint}
	if s.admin, err = mint("load-admin", true); err != nil {
		return nil, err
	}
	s.users = make([]string, cfg.Users)
	bearer := make([][]byte, cfg.Users)
	for i := range s.users {
		if s.users[i], err = mint("lu-"+runID+"-"+strconv.Itoa(i), false); err != nil {
			return nil, err
		}
		bearer[i] = []byte("Bearer " + s.users[i])
	}
	p, err := s.setup(ctx)
	if err != nil {
		return nil, err
	}
	warmUp(c, cfg.Concurrency)

	r := &runner{
		cfg:    &cfg,
		c:      c,
		plan:   p,
		bearer: bearer,
		idem:   []byte(runID + "-"),
		// Open-loop latency includes waiting for a free worker, bounded by the
		// cut-off below; closed-loop latency by the request timeout.
		rec: newRecorder(cfg.Duration, cfg.Duration+2*cfg.Timeout+time.Minute),
	}
	rep := &Report{
		Scenario:    cfg.Scenario,
		Mode:        ModeClosed,
		URL:         c.base,
		Concurrency: cfg.Concurrency,
		Rate:        cfg.Rate,
		Users:       cfg.Users,
		Duration:    cfg.Duration,
		Setup:       p.notes,
	}
	if cfg.Rate > 0 {
		rep.Mode = ModeOpen
		rep.Scheduled = scheduled(cfg.Rate, cfg.Duration)
	}
	r.run(ctx, rep)
	return rep, nil
}

// newRunID returns a short id that makes this run's sales, packets, users and
// idempotency keys distinct from every other run's.
func newRunID() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("load: make run id: %w", err)
	}
	return strconv.FormatInt(time.Now().Unix(), 36) + hex.EncodeToString(b[:]), nil
}

// warmUp opens the workers' connections before the clock starts, so that the
// first requests do not carry the cost of connecting.
func warmUp(c *client, n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { _ = c.call("GET", "/healthz", "", "", nil, nil) })
	}
	wg.Wait()
}

// runner is the measured phase.
type runner struct {
	cfg    *Config
	c      *client
	plan   *plan
	bearer [][]byte // "Bearer <token>" per user
	idem   []byte   // Idempotency-Key prefix
	rec    *recorder

	start time.Time
	next  atomic.Int64 // the next request number to claim
	stop  atomic.Bool
	// interrupted is set by whoever first sees ctx end: the watcher, or an
	// open-loop worker waiting for its next slot (the watcher alone could
	// lose the race to the end of the run and leave it unset).
	interrupted atomic.Bool
}

// run drives the workers and fills rep.
func (r *runner) run(ctx context.Context, rep *Report) {
	r.start = time.Now()
	rep.Started = r.start.UTC().Round(0)
	watchDone := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			r.interrupted.Store(true)
			r.stop.Store(true)
		case <-watchDone:
		}
	}()
	barDone := r.progress(watchDone)

	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		w := r.newWorker()
		if r.cfg.Rate > 0 {
			wg.Go(func() { w.openLoop(ctx, rep.Scheduled) })
		} else {
			wg.Go(w.closedLoop)
		}
	}
	wg.Wait()
	rep.Elapsed = time.Since(r.start)
	close(watchDone)
	<-barDone

	rep.Interrupted = r.interrupted.Load()
	if rep.Mode == ModeOpen {
		r.rec.addNotSent(rep.Scheduled - r.rec.sent())
	}
	r.rec.fill(rep)
}

// isTerminal reports whether w is a terminal, where a redrawn bar makes
// sense. A variable so that tests can stand in for a terminal.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress shows a bar over the measured duration on cfg.Progress, if it is
// a terminal, until done is closed; the returned channel closes when the bar
// is finished. A run that lasted its duration ends the bar at 100%, one that
// was interrupted where it stopped.
func (r *runner) progress(done <-chan struct{}) <-chan struct{} {
	finished := make(chan struct{})
	if r.cfg.Progress == nil || !isTerminal(r.cfg.Progress) {
		close(finished)
		return finished
	}
	w := r.cfg.Progress
	total := r.cfg.Duration.Milliseconds()
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetDescription(r.cfg.Scenario))
	describe := func() time.Duration {
		el := time.Since(r.start)
		n := r.rec.done.Load()
		bar.Describe(fmt.Sprintf("%s: %d req, %.0f req/s, %d failed", r.cfg.Scenario, n,
			float64(n)/el.Seconds(), r.rec.failed.Load()))
		return el
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				if el := describe(); el.Milliseconds() >= total {
					_ = bar.Finish()
				} else {
					_ = bar.Set64(el.Milliseconds())
				}
				// The last frame stays on screen, above the report.
				fmt.Fprintln(w)
				return
			case <-t.C:
				el := describe()
				_ = bar.Set64(min(el.Milliseconds(), total))
			}
		}
	}()
	return finished
}

// worker sends requests one at a time, reusing its request, response and
// buffers so that the loop allocates nothing per request.
type worker struct {
	r     *runner
	req   fasthttp.Request
	resp  fasthttp.Response
	key   []byte
	buf   []sample
	known []knownOutcome
}

// knownOutcome caches an outcome id for an answer shape, so that classifying
// an answer is a short scan instead of a string build and a locked lookup.
type knownOutcome struct {
	status int // <0: transport failures (statusTimeout, statusTransport)
	code   []byte
	repeat bool
	id     uint16
}

const (
	statusTimeout   = -1
	statusTransport = -2
)

// newWorker makes a worker with its own Idempotency-Key buffer, which starts
// with the run's prefix so that do only appends the request number.
func (r *runner) newWorker() *worker {
	return &worker{r: r, buf: make([]sample, 0, sampleBufferSize), key: append([]byte(nil), r.idem...)}
}

// closedLoop sends back-to-back requests until the duration is over.
func (w *worker) closedLoop() {
	defer w.flush()
	deadline := w.r.start.Add(w.r.cfg.Duration)
	for !w.r.stop.Load() {
		now := time.Now()
		if !now.Before(deadline) {
			return
		}
		w.do(w.r.next.Add(1)-1, now)
	}
}

// openLoop claims the next scheduled request, waits for its time and sends
// it. A worker that is late sends at once: the delay stays in the measured
// latency instead of being omitted. Requests not started by the cut-off
// (duration + timeout) are left unsent and reported as not_sent.
func (w *worker) openLoop(ctx context.Context, total int64) {
	defer w.flush()
	cutoff := w.r.start.Add(w.r.cfg.Duration + w.r.cfg.Timeout)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for !w.r.stop.Load() {
		k := w.r.next.Add(1) - 1
		if k >= total {
			return
		}
		at := w.r.start.Add(offsetOf(k, w.r.cfg.Rate))
		now := time.Now()
		if wait := at.Sub(now); wait > timerSlack {
			timer.Reset(wait - timerSlack)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				w.r.interrupted.Store(true)
				return
			}
		} else if now.After(cutoff) {
			w.r.stop.Store(true)
			return
		}
		// Late: latency counts from the scheduled time, so the delay is not
		// omitted. Early (by less than timerSlack): from the actual send.
		w.do(k, earliest(at, time.Now()))
	}
}

// timerSlack is how early the open loop may send a request. Go's timers
// sleep through epoll, whose timeout is in whole milliseconds: a wait of
// 100 µs becomes 1 ms, which would put up to a millisecond of the
// generator's own oversleeping into every measured latency.
const timerSlack = time.Millisecond

// earliest returns the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// do sends request k and records its latency from start.
func (w *worker) do(k int64, start time.Time) {
	t, j := w.r.plan.pick(k)
	req := &w.req
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURIBytes(t.uri(j))
	req.Header.SetBytesV(fasthttp.HeaderAuthorization, w.r.bearer[j%int64(len(w.r.bearer))])
	if t.idempotent {
		w.key = strconv.AppendInt(w.key[:len(w.r.idem)], k, 10)
		req.Header.SetBytesV("Idempotency-Key", w.key)
	}
	if t.body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(t.body)
	}
	err := w.r.c.hc.Do(req, &w.resp)
	lat := time.Since(start)
	var id uint16
	if err != nil {
		id = w.transportOutcome(err)
	} else {
		id = w.httpOutcome(w.resp.StatusCode(), w.resp.Body(), t.packet)
	}
	w.r.rec.done.Add(1)
	w.buf = append(w.buf, sample{
		latency: int64(lat / time.Microsecond),
		bucket:  w.r.rec.bucketOf(start.Sub(w.r.start)),
		outcome: id,
	})
	if len(w.buf) == cap(w.buf) {
		w.flush()
	}
}

// flush hands the buffered samples to the recorder and empties the buffer.
func (w *worker) flush() {
	w.r.rec.flush(w.buf)
	w.buf = w.buf[:0]
}

var (
	repeatTrue = []byte(`"repeat":true`)
	codeField  = []byte(`"code":"`)
)

// httpOutcome classifies an answer by status, the API error code and, for
// packets, whether it was a repeat.
func (w *worker) httpOutcome(status int, body []byte, packet bool) uint16 {
	ok := status >= 200 && status <= 299
	var code []byte
	repeat := false
	if ok {
		repeat = packet && bytes.Contains(body, repeatTrue)
	} else {
		code = apiErrorCode(body)
		w.r.rec.failed.Add(1)
	}
	for _, o := range w.known {
		if o.status == status && o.repeat == repeat && bytes.Equal(o.code, code) {
			return o.id
		}
	}
	name := strconv.Itoa(status)
	switch {
	case repeat:
		name += " repeat"
	case len(code) > 0:
		name += " " + string(code)
	}
	example := ""
	if !ok {
		example = truncate(string(body), 200)
	}
	id := w.r.rec.outcome(name, ok, example)
	w.known = append(w.known, knownOutcome{status: status, code: bytes.Clone(code), repeat: repeat, id: id})
	return id
}

// transportOutcome classifies a request that got no answer; the first error
// message each worker sees is offered as the outcome's sample.
func (w *worker) transportOutcome(err error) uint16 {
	w.r.rec.failed.Add(1)
	status, name := statusTransport, OutcomeTransport
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrNoFreeConns) {
		status, name = statusTimeout, OutcomeTimeout
	}
	for _, o := range w.known {
		if o.status == status {
			return o.id
		}
	}
	id := w.r.rec.outcome(name, false, err.Error())
	w.known = append(w.known, knownOutcome{status: status, id: id})
	return id
}

// apiErrorCode extracts error.code from an API error body without decoding
// it: the hot loop sees many sold_out answers. Only [a-z0-9_] codes of
// sensible length are accepted, so a garbage body cannot invent outcomes.
func apiErrorCode(body []byte) []byte {
	i := bytes.Index(body, codeField)
	if i < 0 {
		return nil
	}
	rest := body[i+len(codeField):]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || end > 40 {
		return nil
	}
	code := rest[:end]
	for _, c := range code {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return nil
		}
	}
	return code
}
