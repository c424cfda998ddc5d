package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Retry schedules of the real providers for notifies that were not acknowledged.
var (
	AlipayRetries = []time.Duration{4 * time.Minute, 10 * time.Minute, 10 * time.Minute, time.Hour,
		2 * time.Hour, 6 * time.Hour, 15 * time.Hour}
	WeChatRetries = []time.Duration{15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute,
		10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute,
		time.Hour, 3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour}
)

// Schedule is a provider retry schedule compressed by Scale (0.001 turns
// Alipay's 4 minutes into 240 ms); Scale 0 means real time.
type Schedule struct {
	Delays []time.Duration
	Scale  float64
}

// Delay returns how long to wait before retry number attempt (0-based), and
// false once the schedule is exhausted.
func (s Schedule) Delay(attempt int) (time.Duration, bool) {
	if attempt < 0 || attempt >= len(s.Delays) {
		return 0, false
	}
	d := s.Delays[attempt]
	if s.Scale > 0 {
		d = time.Duration(float64(d) * s.Scale)
	}
	return d, true
}

// Delivery records one attempt to deliver a notify to the merchant, so tests
// can see what the merchant answered and that retries stopped.
type Delivery struct {
	Copy    int       // which concurrent duplicate sent it (0 when there is one copy)
	Attempt int       // 1 for the first try, 2 for the first retry, ...
	At      time.Time // when the attempt was sent
	Status  int       // HTTP status answered; 0 when the request failed
	Body    string    // the answered body, truncated to a few hundred bytes
	Err     string    // transport error, if the request failed
	Acked   bool      // whether the provider counts this answer as an acknowledgement
}

// notifyRun is the delivery of one payment's notify: every copy of it, each
// retried on the provider's schedule until acknowledged. Both simulators use
// it; only the way one attempt is made differs between them.
type notifyRun struct {
	done chan struct{} // closed when every copy stopped

	mu    sync.Mutex
	acked bool
	log   []Delivery
}

// startNotifyRun delivers copies concurrent copies of a notify, each making
// attempts with post until one is acknowledged, the schedule runs out or ctx
// ends. wg (the simulator's) counts the goroutines, so Close can wait.
func startNotifyRun(ctx context.Context, wg *sync.WaitGroup, sched Schedule, copies int, post func() Delivery) *notifyRun {
	d := &notifyRun{done: make(chan struct{})}
	var all sync.WaitGroup
	for c := 0; c < copies; c++ {
		all.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer all.Done()
			d.deliver(ctx, sched, c, post)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		all.Wait()
		close(d.done)
	}()
	return d
}

func (d *notifyRun) deliver(ctx context.Context, sched Schedule, copyNo int, post func() Delivery) {
	for attempt := 0; ; attempt++ {
		rec := post()
		rec.Copy, rec.Attempt = copyNo, attempt+1
		d.mu.Lock()
		d.log = append(d.log, rec)
		d.acked = d.acked || rec.Acked
		d.mu.Unlock()
		if rec.Acked {
			return
		}
		delay, ok := sched.Delay(attempt)
		if !ok {
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// deliveries returns the attempts made so far, in the order they completed.
func (d *notifyRun) deliveries() []Delivery {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Delivery(nil), d.log...)
}

// wait blocks until every copy stopped: nil when one was acknowledged.
func (d *notifyRun) wait(ctx context.Context, provider, outTradeNo string) error {
	if d == nil {
		return fmt.Errorf("sandbox %s: no notify delivery for %q", provider, outTradeNo)
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		return fmt.Errorf("sandbox %s: waiting for notify of %q: %w", provider, outTradeNo, ctx.Err())
	}
	d.mu.Lock()
	acked, n := d.acked, len(d.log)
	d.mu.Unlock()
	if !acked {
		return fmt.Errorf("sandbox %s: notify of %q not acknowledged after %d attempts", provider, outTradeNo, n)
	}
	return nil
}

// maxAckBody bounds what a simulator reads, and records, of a merchant's
// answer to a notify.
const maxAckBody = 512

// startNotify delivers copies concurrent copies of a notify on the
// simulator's schedule, each attempt made by post; Close stops them.
func (s *simulator[T]) startNotify(copies int, post func() Delivery) *notifyRun {
	return startNotifyRun(s.ctx, &s.wg, s.retry, copies, post)
}

// postNotify makes one attempt to deliver body to notifyURL with the
// headers header builds for that moment (WeChat signs each attempt anew),
// and records the merchant's answer and whether the provider counts it as an
// acknowledgement.
func (s *simulator[T]) postNotify(notifyURL string, body []byte, header func(at time.Time) (http.Header, error)) Delivery {
	rec := Delivery{At: s.now()}
	hdr, err := header(rec.At)
	if err != nil {
		rec.Err = err.Error()
		return rec
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, notifyURL, bytes.NewReader(body))
	if err != nil {
		rec.Err = err.Error()
		return rec
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		rec.Err = err.Error()
		return rec
	}
	defer resp.Body.Close()
	ack, _ := io.ReadAll(io.LimitReader(resp.Body, maxAckBody))
	rec.Status, rec.Body = resp.StatusCode, string(ack)
	rec.Acked = s.p.acked(resp.StatusCode, rec.Body)
	return rec
}
