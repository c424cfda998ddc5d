package loadgen

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario names, as Config.Scenario takes them.
const (
	// ScenarioSale grabs one sale with ample stock; every request is a new
	// purchase (its own Idempotency-Key), so every answer should be a win.
	ScenarioSale = "sale"
	// ScenarioSoldOut sells a small sale out during set-up, then measures the
	// sold-out answer.
	ScenarioSoldOut = "soldout"
	// ScenarioPacket creates many red packets and lets distinct users grab
	// every share.
	ScenarioPacket = "packet"
	// ScenarioMixed interleaves the three: 6 sale grabs, 3 sold-out grabs and
	// 1 packet grab in every 10 requests.
	ScenarioMixed = "mixed"
)

// Scenarios lists the scenario names in the order the CLI shows them.
var Scenarios = []string{ScenarioSale, ScenarioSoldOut, ScenarioPacket, ScenarioMixed}

// Stock used when Config.Stock is 0 (and always in the mixed scenario).
const (
	DefaultSaleStock    = 1_000_000_000
	DefaultSoldOutStock = 1000
	DefaultPacketShares = 100_000
)

// Packet shapes: as many shares per packet as the API allows, one yuan each
// on average, which keeps total_cents within the 2,000,000 fen limit.
const (
	maxPacketShares   = 1000
	centsPerShare     = 100
	salePriceCents    = 100
	maxPerUserLimit   = 1_000_000 // the API's upper bound
	packetCreateConns = 8
)

// target is one kind of grab the hot loop sends.
type target struct {
	// uris are full URLs; request j of this target goes to uris[(j/perURI) % len].
	uris   [][]byte
	perURI int64
	body   []byte
	// idempotent requests carry a unique Idempotency-Key, which makes every
	// sale grab a new purchase instead of a retry of the user's first one.
	idempotent bool
	// packet answers may be repeats (repeat:true), counted apart.
	packet bool
}

// uri returns the URL for the j-th request of this target.
func (t *target) uri(j int64) []byte {
	return t.uris[(j/t.perURI)%int64(len(t.uris))]
}

// plan is what set-up produced: the targets and how requests cycle over them.
type plan struct {
	targets []*target
	cycle   []cycleSlot // one entry per request position in a cycle
	weights []int64     // per target: positions it has in a cycle
	notes   []string
}

// cycleSlot is a position in the request cycle: which target, and its rank
// among that target's positions.
type cycleSlot struct {
	target int
	rank   int64
}

// add appends target t with weight w positions per cycle.
func (p *plan) add(t *target, w int) {
	ti := len(p.targets)
	p.targets = append(p.targets, t)
	p.weights = append(p.weights, int64(w))
	for i := range w {
		p.cycle = append(p.cycle, cycleSlot{target: ti, rank: int64(i)})
	}
}

// pick maps the k-th request of the run to a target and to j, the request's
// number among that target's requests. j drives user rotation and packet
// choice, so that consecutive grabs of one packet come from distinct users.
func (p *plan) pick(k int64) (*target, int64) {
	n := int64(len(p.cycle))
	s := p.cycle[k%n]
	return p.targets[s.target], (k/n)*p.weights[s.target] + s.rank
}

// session carries what set-up needs: the client, tokens and names unique to
// this run, so that repeated runs against one server do not collide.
type session struct {
	cfg    *Config
	c      *client
	admin  string
	users  []string // tokens
	runID  string
	ttl    time.Duration
	minter func(user string, admin bool) (string, error)
}

// setup creates what the scenario needs and returns the request plan.
func (s *session) setup(ctx context.Context) (*plan, error) {
	p := &plan{}
	switch s.cfg.Scenario {
	case ScenarioSale:
		t, err := s.saleTarget("sale", stockOrDefault(s.cfg.Stock, DefaultSaleStock), p)
		if err != nil {
			return nil, err
		}
		p.add(t, 1)
	case ScenarioSoldOut:
		t, err := s.soldOutTarget(ctx, stockOrDefault(s.cfg.Stock, DefaultSoldOutStock), p)
		if err != nil {
			return nil, err
		}
		p.add(t, 1)
	case ScenarioPacket:
		t, err := s.packetTarget(ctx, stockOrDefault(s.cfg.Stock, DefaultPacketShares), p)
		if err != nil {
			return nil, err
		}
		p.add(t, 1)
	case ScenarioMixed:
		sale, err := s.saleTarget("sale", DefaultSaleStock, p)
		if err != nil {
			return nil, err
		}
		sold, err := s.soldOutTarget(ctx, DefaultSoldOutStock, p)
		if err != nil {
			return nil, err
		}
		pkt, err := s.packetTarget(ctx, DefaultPacketShares, p)
		if err != nil {
			return nil, err
		}
		p.add(sale, 6)
		p.add(sold, 3)
		p.add(pkt, 1)
	default:
		return nil, fmt.Errorf("load: unknown scenario %q", s.cfg.Scenario)
	}
	return p, nil
}

// stockOrDefault returns v, or def when v is 0 (Config.Stock unset).
func stockOrDefault(v, def int64) int64 {
	if v > 0 {
		return v
	}
	return def
}

// createSale creates a sale that is open for the whole run. per_user_limit is
// the stock, up to the API's maximum: with Users rotating, no user comes near
// it, so it does not limit the load.
func (s *session) createSale(suffix string, stock int64) (string, error) {
	id := "load-" + s.runID + "-" + suffix
	now := time.Now().UTC()
	body := map[string]any{
		"id":             id,
		"merchant_id":    "load-merchant",
		"price_cents":    salePriceCents,
		"stock":          stock,
		"per_user_limit": min(stock, maxPerUserLimit),
		// A minute back tolerates clock skew between generator and server.
		"starts_at": now.Add(-time.Minute).Format(time.RFC3339),
		"ends_at":   now.Add(s.ttl).Format(time.RFC3339),
	}
	if err := s.c.call("POST", "/v1/sales", s.admin, "", body, nil); err != nil {
		return "", fmt.Errorf("load: create sale %s: %w", id, err)
	}
	return id, nil
}

// grabURL returns the full URL of the grab endpoint of sale or packet id;
// kind is "sales" or "packets".
func (s *session) grabURL(kind, id string) []byte {
	return []byte(s.c.base + "/v1/" + kind + "/" + url.PathEscape(id) + "/grab")
}

// saleTarget creates a sale with stock and targets its grab endpoint.
func (s *session) saleTarget(suffix string, stock int64, p *plan) (*target, error) {
	id, err := s.createSale(suffix, stock)
	if err != nil {
		return nil, err
	}
	p.notes = append(p.notes, fmt.Sprintf("sale %s with stock %d", id, stock))
	return &target{uris: [][]byte{s.grabURL("sales", id)}, perURI: 1, body: []byte(`{"qty":1}`), idempotent: true}, nil
}

// soldOutTarget creates a sale with stock, buys all of it, and targets the
// now sold-out grab endpoint.
func (s *session) soldOutTarget(ctx context.Context, stock int64, p *plan) (*target, error) {
	id, err := s.createSale("soldout", stock)
	if err != nil {
		return nil, err
	}
	wins, err := s.sellOut(ctx, id, stock)
	if err != nil {
		return nil, err
	}
	p.notes = append(p.notes, fmt.Sprintf("sale %s with stock %d, sold out by %d winning grabs", id, stock, wins))
	return &target{uris: [][]byte{s.grabURL("sales", id)}, perURI: 1, body: []byte(`{"qty":1}`), idempotent: true}, nil
}

// sellOut grabs sale id from a few goroutines until the server says sold_out,
// and returns the number of wins.
func (s *session) sellOut(ctx context.Context, id string, stock int64) (int64, error) {
	// A server that never sells out (or oversells wildly) must not hang set-up.
	limit := 2*stock + 10_000
	var (
		next, wins atomic.Int64
		wg         sync.WaitGroup
		once       sync.Once
		firstErr   error
	)
	path := "/v1/sales/" + url.PathEscape(id) + "/grab"
	for range min(s.cfg.Concurrency, 32) {
		wg.Go(func() {
			for ctx.Err() == nil {
				j := next.Add(1) - 1
				if j >= limit {
					once.Do(func() { firstErr = fmt.Errorf("load: sale %s not sold out after %d grabs", id, limit) })
					return
				}
				tok := s.users[j%int64(len(s.users))]
				err := s.c.call("POST", path, tok, s.runID+"-so-"+strconv.FormatInt(j, 10), map[string]int{"qty": 1}, nil)
				if err == nil {
					wins.Add(1)
					continue
				}
				if sc, code := statusOf(err); sc == 409 && code == "sold_out" {
					return
				}
				once.Do(func() { firstErr = fmt.Errorf("load: sell out sale %s: %w", id, err) })
				return
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("load: sell out sale %s: %w", id, err)
	}
	return wins.Load(), nil
}

// packetTarget funds a sender, creates packets holding at least shares
// shares in total, and targets their grab endpoints. Request j grabs packet
// j/count, as user j%Users: a packet's shares go to count distinct users as
// long as Users ≥ count.
func (s *session) packetTarget(ctx context.Context, shares int64, p *plan) (*target, error) {
	count := min(shares, maxPacketShares)
	n := (shares + count - 1) / count
	total := count * centsPerShare
	sender := "ls-" + s.runID
	senderTok, err := s.minter(sender, false)
	if err != nil {
		return nil, err
	}
	credit := map[string]any{"amount_cents": n * total, "ref": "load-" + s.runID}
	if err := s.c.call("POST", "/v1/admin/accounts/"+sender+"/credit", s.admin, "", credit, nil); err != nil {
		return nil, fmt.Errorf("load: fund packet sender %s: %w", sender, err)
	}
	expires := min(int64((s.ttl).Seconds()), 86400)
	body := map[string]any{"total_cents": total, "count": count, "mode": "random", "expires_in_s": expires}
	uris := make([][]byte, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range min(n, packetCreateConns) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				var pkt struct {
					ID string `json:"id"`
				}
				err := s.c.call("POST", "/v1/packets", senderTok, "", body, &pkt)
				if err == nil && pkt.ID == "" {
					err = fmt.Errorf("answer has no packet id")
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("load: create packet %d of %d: %w", i+1, n, err) })
					return
				}
				uris[i] = s.grabURL("packets", pkt.ID)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load: create packets: %w", err)
	}
	p.notes = append(p.notes, fmt.Sprintf("%d random packets of %d shares (%d fen each) from %s", n, count, total, sender))
	return &target{uris: uris, perURI: count, packet: true}, nil
}
