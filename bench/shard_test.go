package bench

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// BenchmarkGrabSharded measures one hot sale sharded over K partitions
// against the same sale on one (issue 11):
//
//	shards-1          HTTP grabs of one sale with ample stock, each a new purchase
//	shards-4          the same sale over 4 shards: 4 script targets, batched apart
//	shards-4-soldout  HTTP grabs of a sold-out sale of 4 shards: no in-process
//	                  mark, each grab asks its shard (the refill holds off)
//
// On a single Redis every shard runs on the same core, so K > 1 cannot be
// faster here; the case shows what sharding costs. Scaling with the number
// of Redis nodes is measured by bench/devperf/cluster.sh.
func BenchmarkGrabSharded(b *testing.B) {
	env := newHarness(b)
	srv := env.startServer(b, engine.Config{})
	seq := 0
	newSale := func(stock, limit int64, k int) string {
		seq++
		id := "shard" + strconv.Itoa(seq)
		now := time.Now()
		if _, err := srv.eng.CreateSale(context.Background(), flashgrab.Sale{ID: id, MerchantID: "m", PriceCents: 100,
			Stock: stock, PerUserLimit: limit, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(24 * time.Hour), Shards: k}); err != nil {
			b.Fatal(err)
		}
		return id
	}
	for _, k := range []int{1, 4} {
		b.Run("shards-"+strconv.Itoa(k), func(b *testing.B) {
			sale := newSale(flashgrab.MaxStock, flashgrab.MaxPerUserLimit, k)
			defer env.purge(b)
			env.hammer(b, env.httpGrab(srv.addr, "/v1/sales/"+sale+"/grab", true, fasthttp.StatusOK))
			st := srv.eng.BatchStats()
			b.ReportMetric(float64(st.Users)/float64(st.Calls), "users/call")
		})
	}
	b.Run("shards-4-soldout", func(b *testing.B) {
		sale := newSale(4, 1, 4)
		defer env.purge(b)
		for u := range 4 {
			if _, err := srv.eng.Grab(context.Background(), flashgrab.GrabRequest{SaleID: sale, UserID: "winner" + strconv.Itoa(u), Qty: 1}); err != nil {
				b.Fatal(err)
			}
		}
		env.hammer(b, env.httpGrab(srv.addr, "/v1/sales/"+sale+"/grab", false, fasthttp.StatusConflict))
	})
}
