package api

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// adminPage is the operator's page: plain HTML, CSS and JavaScript in one
// file, no build step. It is public (it holds no data); it asks for an admin
// token, keeps it in sessionStorage (or takes it from the URL fragment,
// which browsers never send to the server, so it reaches no log) and polls
// /v1/admin/stats with it every second.
//
//go:embed admin.html
var adminPage []byte

// adminCSP allows the page its own inline script and style, by hash, and
// nothing else: no other origin, no framing, no inline code injected later.
var adminCSP = "default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"script-src " + inlineHash(adminPage, "script") + "; style-src " + inlineHash(adminPage, "style")

// inlineHash is the CSP source ('sha256-…') of the first <tag> element's
// content in page.
func inlineHash(page []byte, tag string) string {
	_, rest, ok := bytes.Cut(page, []byte("<"+tag+">"))
	body, _, closed := bytes.Cut(rest, []byte("</"+tag+">"))
	if !ok || !closed {
		panic("admin.html has no <" + tag + "> element")
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func (s *Server) adminPage(ctx *fasthttp.RequestCtx, _ params) error {
	h := &ctx.Response.Header
	h.SetContentType("text/html; charset=utf-8")
	h.Set("Content-Security-Policy", adminCSP)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	ctx.SetBody(adminPage)
	return nil
}

type adminStatsJSON struct {
	At          time.Time         `json:"at"`
	Durability  string            `json:"durability"`
	Redis       redisHealthJSON   `json:"redis"`
	MySQL       string            `json:"mysql"`
	RateWindowS float64           `json:"rate_window_s"`
	Grabs       []grabStatsJSON   `json:"grabs"`
	Sales       []saleStatsJSON   `json:"sales"`
	Packets     packetStatsJSON   `json:"packets"`
	Settlement  *settlementJSON   `json:"settlement"`
	Notifies    []notifyStatsJSON `json:"notifies"`
	Errors      map[string]string `json:"errors"`
}

type redisHealthJSON struct {
	Status         string `json:"status"`
	Partitions     int    `json:"partitions"`
	PartitionsDown []int  `json:"partitions_down"`
}

type grabStatsJSON struct {
	Target   string           `json:"target"`
	Total    int64            `json:"total"`
	PerS     float64          `json:"per_s"`
	Outcomes map[string]int64 `json:"outcomes"`
}

type saleStatsJSON struct {
	ID           string           `json:"id"`
	Stock        *int64           `json:"stock"`
	Sold         *int64           `json:"sold"`
	GrabsPerS    float64          `json:"grabs_per_s"`
	WinsPerS     float64          `json:"wins_per_s"`
	Outcomes     map[string]int64 `json:"outcomes"`
	LastActiveAt time.Time        `json:"last_active_at"`
}

type packetStatsJSON struct {
	Open         *int64  `json:"open"`
	Created      int64   `json:"created"`
	CreatedCents int64   `json:"created_cents"`
	Shares       int64   `json:"shares"`
	SharesCents  int64   `json:"shares_cents"`
	SharesPerS   float64 `json:"shares_per_s"`
}

type settlementJSON struct {
	Unsettled  int64                  `json:"unsettled"`
	Pending    int64                  `json:"pending"`
	OldestAgeS float64                `json:"oldest_age_s"`
	Dead       int64                  `json:"dead"`
	Partitions []partitionBacklogJSON `json:"partitions"`
}

type partitionBacklogJSON struct {
	Partition  int     `json:"partition"`
	Length     int64   `json:"length"`
	Pending    int64   `json:"pending"`
	OldestAgeS float64 `json:"oldest_age_s"`
	Dead       int64   `json:"dead"`
}

type notifyStatsJSON struct {
	Channel string `json:"channel"`
	Outcome string `json:"outcome"`
	Total   int64  `json:"total"`
}

// adminStats is the operator's page's data, admin only. Its work is bounded
// whatever the traffic: counters this process keeps, the sales it saw
// grabbed in the last minutes (at most maxShownSales, one HMGET each), one
// pipeline of a ZCARD per partition for the open packets and one of four
// stream reads per partition for the settlement backlog. A part that cannot
// be read (Redis down) is null, with the reason under errors, and the answer
// is still 200: the page matters most during an outage.
func (s *Server) adminStats(ctx *fasthttp.RequestCtx, _ params) error {
	if _, err := s.admin(ctx); err != nil {
		return err
	}
	c, cancel := s.reqContext()
	defer cancel()
	now := time.Now()
	out := adminStatsJSON{At: now.UTC(), Durability: string(s.Engine.Durability()), MySQL: "ok",
		Grabs: []grabStatsJSON{}, Sales: []saleStatsJSON{}, Notifies: []notifyStatsJSON{}, Errors: map[string]string{}}
	status, down := s.redisHealth(c)
	out.Redis = redisHealthJSON{Status: status, Partitions: s.Engine.Keys().Partitions, PartitionsDown: down}
	if out.Redis.PartitionsDown == nil {
		out.Redis.PartitionsDown = []int{}
	}
	if err := s.Books.DB.PingContext(c); err != nil {
		out.MySQL = "unreachable"
	}

	counts := map[string]int64{}
	byTarget := map[string]*grabStatsJSON{}
	for _, m := range counterValues(s.metrics.grabs) {
		g := byTarget[m.labels["target"]]
		if g == nil {
			g = &grabStatsJSON{Target: m.labels["target"], Outcomes: map[string]int64{}}
			byTarget[g.Target] = g
		}
		g.Outcomes[m.labels["outcome"]] += m.value
		g.Total += m.value
	}
	for _, target := range []string{"sale", "packet"} {
		if g := byTarget[target]; g != nil {
			counts["grabs:"+target] = g.Total
			out.Grabs = append(out.Grabs, *g)
		}
	}
	for _, m := range counterValues(s.metrics.notifies) {
		out.Notifies = append(out.Notifies, notifyStatsJSON{Channel: m.labels["channel"], Outcome: m.labels["outcome"], Total: m.value})
	}
	slices.SortFunc(out.Notifies, func(a, b notifyStatsJSON) int {
		return cmp.Or(cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.Outcome, b.Outcome))
	})
	sales := s.activity.recent()
	for _, sc := range sales {
		counts["sale:"+sc.id] = sc.total
		counts["won:"+sc.id] = sc.outcomes[0]
	}
	out.Packets = packetStatsJSON{Created: s.packets.created.Load(), CreatedCents: s.packets.createdCents.Load(),
		Shares: s.packets.shares.Load(), SharesCents: s.packets.sharesCents.Load()}
	counts["shares"] = out.Packets.Shares

	perS, window := s.rates.observe(now, counts)
	out.RateWindowS = window.Seconds()
	for i := range out.Grabs {
		out.Grabs[i].PerS = perS["grabs:"+out.Grabs[i].Target]
	}
	out.Packets.SharesPerS = perS["shares"]
	for _, sc := range sales {
		row := saleStatsJSON{ID: sc.id, GrabsPerS: perS["sale:"+sc.id], WinsPerS: perS["won:"+sc.id],
			Outcomes: map[string]int64{}, LastActiveAt: sc.lastActive.UTC()}
		for i, o := range saleOutcomes {
			if sc.outcomes[i] > 0 {
				row.Outcomes[o] = sc.outcomes[i]
			}
		}
		if sale, err := s.Engine.Sale(c, sc.id); err != nil {
			out.Errors["sale "+sc.id] = err.Error()
		} else {
			row.Stock, row.Sold = &sale.Stock, &sale.Sold
		}
		out.Sales = append(out.Sales, row)
	}
	if open, err := s.Engine.OpenPackets(c); err != nil {
		out.Errors["packets"] = err.Error()
	} else {
		out.Packets.Open = &open
	}
	if s.Settler != nil {
		if backlog, err := s.Settler.Backlog(c); err != nil {
			out.Errors["settlement"] = err.Error()
		} else {
			st := &settlementJSON{Partitions: make([]partitionBacklogJSON, 0, len(backlog))}
			for _, b := range backlog {
				age := b.OldestAge.Seconds()
				st.Unsettled += b.Length
				st.Pending += b.Pending
				st.Dead += b.Dead
				st.OldestAgeS = max(st.OldestAgeS, age)
				st.Partitions = append(st.Partitions, partitionBacklogJSON{Partition: b.Partition, Length: b.Length,
					Pending: b.Pending, OldestAgeS: age, Dead: b.Dead})
			}
			out.Settlement = st
		}
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return writeJSON(ctx, fasthttp.StatusOK, out)
}

// counterValue is one series of a counter vector.
type counterValue struct {
	labels map[string]string
	value  int64
}

// counterValues reads every series of a counter vector, as a scrape would.
func counterValues(c prometheus.Collector) []counterValue {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []counterValue
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		v := counterValue{labels: make(map[string]string, len(d.Label)), value: int64(d.Counter.GetValue())}
		for _, l := range d.Label {
			v.labels[l.GetName()] = l.GetValue()
		}
		out = append(out, v)
	}
	return out
}
