package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgrab/flashgrab/api"
)

// share is one red-packet share a client was answered 200 for.
type share struct{ packet, user string }

// buy is the sale and the buyer of an order a client was answered 200 for
// (always one unit: the load sends no qty).
type buy struct{ sale, user string }

// record is everything the clients were answered: the wins (orders and
// packet shares answered 200), the packets answered 201, and a count of
// every other answer.
type record struct {
	mu       sync.Mutex
	orders   map[string]buy   // order ids answered 200, with their sale and buyer
	shares   map[share]bool   // shares answered 200
	packets  map[string]int64 // packet id answered 201 → total_cents
	outcomes map[string]int64 // "sale 409 sold_out", "packet transport error", …
	answers  atomic.Int64     // HTTP answers of any status
	wins     atomic.Int64     // distinct wins
}

func newRecord() *record {
	return &record{orders: map[string]buy{}, shares: map[share]bool{}, packets: map[string]int64{},
		outcomes: map[string]int64{}}
}

func (r *record) outcome(what string) {
	r.mu.Lock()
	r.outcomes[what]++
	r.mu.Unlock()
}

func (r *record) order(id string, b buy) {
	r.mu.Lock()
	if _, ok := r.orders[id]; !ok {
		r.orders[id] = b
		r.wins.Add(1)
	}
	r.mu.Unlock()
}

func (r *record) share(s share) {
	r.mu.Lock()
	if !r.shares[s] {
		r.shares[s] = true
		r.wins.Add(1)
	}
	r.mu.Unlock()
}

// summary lists the outcomes, for the log of a failing or verbose run.
func (r *record) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.outcomes))
	for k := range r.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %d; ", k, r.outcomes[k])
	}
	return b.String()
}

// lane is a sequence of sales that the workers of one lane sell out in
// turn; lanes run side by side so the load spans several partitions (and
// cluster masters).
type lane struct {
	sales []string
	cur   atomic.Int64
}

// load drives grabs at the instances in targets: workers grab the current
// sale of their lane (moving on when it is sold out or gone) and, one
// request in four, a share of the newest red packet; one goroutine sends a
// packet every packetEvery. Every answer goes into rec.
type load struct {
	rec         *record
	auth        api.Auth
	hc          *http.Client
	lanes       []*lane
	users       int // users per lane: with the sales' limit, how many units a lane's user may hold
	workers     int
	packetEvery time.Duration
	packetTTL   int64 // expires_in_s of each packet

	targets atomic.Pointer[[]string] // base URLs of the instances to send to
	newest  atomic.Pointer[string]   // the newest packet's id
	tokens  sync.Map                 // user → bearer token

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (l *load) setTargets(addrs ...string) {
	urls := make([]string, len(addrs))
	for i, a := range addrs {
		urls[i] = "http://" + a
	}
	l.targets.Store(&urls)
}

func (l *load) token(user string, admin bool) string {
	if v, ok := l.tokens.Load(user); ok {
		return v.(string)
	}
	tok, err := l.auth.Mint(user, admin, 24*time.Hour)
	if err != nil {
		panic(fmt.Sprintf("mint a token for %s: %v", user, err))
	}
	l.tokens.Store(user, tok)
	return tok
}

// call sends one request to the k-th target (mod their number) and decodes
// a 2xx answer into out. It returns the status (0: no answer) and the error
// code of an error answer.
func (l *load) call(k int, method, path, user string, admin bool, body any, out any) (int, string) {
	return l.callKey(k, method, path, user, admin, "", body, out)
}

// callKey is call with an Idempotency-Key (none when key is empty).
func (l *load) callKey(k int, method, path, user string, admin bool, key string, body any, out any) (int, string) {
	targets := *l.targets.Load()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, targets[k%len(targets)]+path, rd)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+l.token(user, admin))
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return 0, "transport error"
	}
	defer resp.Body.Close()
	l.rec.answers.Add(1)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 {
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				return 0, fmt.Sprintf("undecodable %d answer %q", resp.StatusCode, b)
			}
		}
		return resp.StatusCode, ""
	}
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code
}

// start begins the load; stop ends it and waits for every request.
func (l *load) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for w := range l.workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.worker(ctx, w)
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.sendPackets(ctx)
	}()
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) worker(ctx context.Context, w int) {
	ln := l.lanes[w%len(l.lanes)]
	target := w
	for n := 0; ctx.Err() == nil; n++ {
		var status int
		var code, what string
		idx := ln.cur.Load()
		p := l.newest.Load()
		if idx >= int64(len(ln.sales)) && p == nil {
			// Every sale of the lane is sold out and no packet has been
			// sent yet (MySQL may be cut): ask the last sale again, an
			// answer without a win, until a packet exists.
			idx = int64(len(ln.sales)) - 1
		}
		if n%4 == 3 && p != nil || idx >= int64(len(ln.sales)) {
			what = "packet"
			user := fmt.Sprintf("pu%d-%d", w, n)
			var got struct {
				Repeat bool `json:"repeat"`
			}
			status, code = l.call(target, "POST", "/v1/packets/"+*p+"/grab", user, false, nil, &got)
			if status == 200 {
				l.rec.share(share{*p, user})
			}
		} else {
			what = "sale"
			user := fmt.Sprintf("l%du%d", w%len(l.lanes), rand.IntN(l.users))
			var got struct {
				OrderID string `json:"order_id"`
			}
			// A fresh key per attempt: a user may buy up to the sale's
			// limit, and the limit is tested.
			status, code = l.callKey(target, "POST", "/v1/sales/"+ln.sales[idx]+"/grab", user, false,
				fmt.Sprintf("w%dn%d", w, n), nil, &got)
			switch {
			case status == 200:
				l.rec.order(got.OrderID, buy{ln.sales[idx], user})
			case code == "sold_out" || code == "not_found":
				ln.cur.CompareAndSwap(idx, idx+1)
			}
		}
		if status == 0 {
			target++ // that instance may be dead: try the next
			if ctx.Err() != nil {
				return // cut short by stop, not an answer
			}
		}
		l.rec.outcome(fmt.Sprintf("%s %d %s", what, status, code))
	}
}

// sendPackets sends a red packet every packetEvery, as one sender, until ctx
// ends; each has far more shares than the load can take before it expires,
// so every one is owed a refund.
func (l *load) sendPackets(ctx context.Context) {
	tick := time.NewTicker(l.packetEvery)
	defer tick.Stop()
	for k := 0; ; k++ {
		var got struct {
			ID string `json:"id"`
		}
		const total = 2000
		status, code := l.call(k, "POST", "/v1/packets", "sender", false,
			map[string]any{"total_cents": total, "count": 1000, "mode": "random", "expires_in_s": l.packetTTL}, &got)
		if status == 201 {
			l.rec.mu.Lock()
			l.rec.packets[got.ID] = total
			l.rec.mu.Unlock()
			l.newest.Store(&got.ID)
		}
		l.rec.outcome(fmt.Sprintf("send packet %d %s", status, code))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
