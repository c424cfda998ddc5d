package bench

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/scripts"
)

// BenchmarkGrab measures the sale grab path end to end and, in the same run,
// the baselines it is compared with (issue 5's targets):
//
//	http-coalesced  HTTP grabs of a sale with ample stock, each a new purchase
//	http-per-call   the same with coalescing off: one EVALSHA per request
//	raw-script      the grab script, one EVALSHA per user through go-redis, no HTTP
//	http-soldout    HTTP grabs of a sold-out sale (the process-local mark)
//	http-missing    HTTP grabs of a sale that does not exist (404; the sale
//	                head's absent hold)
//	http-constant   a fasthttp handler answering a constant, same client and requests
//	http-packet     HTTP grabs of red packets (1,000 shares each), every grab a win
//	http-coalesced-aof      http-coalesced, durability aof, on a throwaway Redis
//	                        with appendonly yes, appendfsync always
//	http-coalesced-replica  http-coalesced, durability replica (WAIT 1 per round),
//	                        on a throwaway Redis with a throwaway replica
//	quiet/raw-script        raw-script on a throwaway Redis nobody else uses
//	quiet/http-coalesced-settled, quiet/http-packet-settled
//	                        http-coalesced and http-packet on that Redis with a
//	                        settler draining the streams into MySQL: Redis CPU
//	                        per winning grab includes the settler's reads,
//	                        acknowledgements and trimming (redis-settled-µs/op),
//	                        and x-raw-redis is its ratio to quiet/raw-script's
//	                        Redis CPU per call (issue 10 target 1: <= 0.25)
//
// Every case keeps concurrency (96) requests in flight and reports grabs/s
// and the p50 and p99 latency in microseconds.
func BenchmarkGrab(b *testing.B) {
	env := newHarness(b)
	coalesced := env.startServer(b, engine.Config{})
	perCall := env.startServer(b, engine.Config{NoCoalesce: true})
	constant := testenv.Serve(b, constantServer())
	saleSeq := 0
	newSale := func(srv *server, stock, limit int64) string {
		saleSeq++
		id := "bench" + strconv.Itoa(saleSeq)
		srv.createSale(b, id, stock, limit)
		return id
	}

	b.Run("http-coalesced", func(b *testing.B) {
		sale := newSale(coalesced, flashgrab.MaxStock, flashgrab.MaxPerUserLimit)
		defer env.purge(b)
		env.hammer(b, env.httpGrab(coalesced.addr, "/v1/sales/"+sale+"/grab", true, fasthttp.StatusOK))
		st := coalesced.eng.BatchStats()
		b.ReportMetric(float64(st.Users)/float64(st.Calls), "users/call")
	})
	b.Run("http-per-call", func(b *testing.B) {
		sale := newSale(perCall, flashgrab.MaxStock, flashgrab.MaxPerUserLimit)
		defer env.purge(b)
		env.hammer(b, env.httpGrab(perCall.addr, "/v1/sales/"+sale+"/grab", true, fasthttp.StatusOK))
	})
	b.Run("raw-script", func(b *testing.B) {
		sale := newSale(coalesced, flashgrab.MaxStock, flashgrab.MaxPerUserLimit)
		defer env.purge(b)
		env.hammer(b, env.rawScript(b, sale))
	})
	b.Run("http-soldout", func(b *testing.B) {
		sale := newSale(coalesced, 1, 1)
		defer env.purge(b)
		if _, err := coalesced.eng.Grab(context.Background(), flashgrab.GrabRequest{SaleID: sale, UserID: "winner", Qty: 1}); err != nil {
			b.Fatal(err)
		}
		awaitSoldOutMark(b, coalesced, sale)
		env.hammer(b, env.httpGrab(coalesced.addr, "/v1/sales/"+sale+"/grab", false, fasthttp.StatusConflict))
	})
	b.Run("http-missing", func(b *testing.B) {
		env.hammer(b, env.httpGrab(coalesced.addr, "/v1/sales/nosuchsale/grab", false, fasthttp.StatusNotFound))
	})
	b.Run("http-packet", func(b *testing.B) {
		defer env.purge(b)
		env.hammer(b, env.packetGrab(b, coalesced))
	})
	// Redis CPU per winning grab, settlement included (issue 10): on a
	// Redis of the run's own, so that no other client's work is counted.
	quiet := env.on(b, testenv.StartRedisServer(b))
	quietSrv := quiet.startServer(b, engine.Config{})
	raw := -1.0
	b.Run("quiet/raw-script", func(b *testing.B) {
		sale := newSale(quietSrv, flashgrab.MaxStock, flashgrab.MaxPerUserLimit)
		defer quiet.purge(b)
		raw = quiet.hammer(b, quiet.rawScript(b, sale))
	})
	perRaw := func(b *testing.B, settled float64) {
		if raw > 0 && settled > 0 {
			b.ReportMetric(settled/raw, "x-raw-redis")
		}
	}
	b.Run("quiet/http-coalesced-settled", func(b *testing.B) {
		sale := newSale(quietSrv, flashgrab.MaxStock, flashgrab.MaxPerUserLimit)
		defer quiet.purge(b)
		perRaw(b, quiet.hammerSettled(b, quiet.httpGrab(quietSrv.addr, "/v1/sales/"+sale+"/grab", true, fasthttp.StatusOK), true))
	})
	b.Run("quiet/http-packet-settled", func(b *testing.B) {
		defer quiet.purge(b)
		perRaw(b, quiet.hammerSettled(b, quiet.packetGrab(b, quietSrv), true))
	})
	// Durability (issue 9): the same grabs on throwaway Redis servers, next
	// to http-coalesced (none) in the same run.
	aofEnv := env.on(b, testenv.StartRedisServer(b, "--appendonly", "yes", "--appendfsync", "always"))
	primary := testenv.StartRedisServer(b)
	testenv.StartRedisServer(b, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
	repEnv := env.on(b, primary)
	testenv.Eventually(b, 10*time.Second, func() (bool, string) {
		info := repEnv.rdb.Info(context.Background(), "replication").Val()
		return strings.Contains(info, "state=online"), "the replica is not online (still syncing)"
	})
	for _, c := range []struct {
		name string
		env  *harness
		cfg  engine.Config
	}{
		{"http-coalesced-aof", aofEnv, engine.Config{Durability: engine.DurabilityAOF}},
		{"http-coalesced-replica", repEnv, engine.Config{Durability: engine.DurabilityReplica, WaitTimeout: time.Second}},
	} {
		srv := c.env.startServer(b, c.cfg)
		b.Run(c.name, func(b *testing.B) {
			sale := "bench-" + c.name + strconv.Itoa(saleSeq)
			saleSeq++
			srv.createSale(b, sale, flashgrab.MaxStock, flashgrab.MaxPerUserLimit)
			defer c.env.purge(b)
			c.env.hammer(b, c.env.httpGrab(srv.addr, "/v1/sales/"+sale+"/grab", true, fasthttp.StatusOK))
			st := srv.eng.BatchStats()
			b.ReportMetric(float64(st.Users)/float64(st.Calls), "users/call")
		})
	}
	b.Run("http-constant", func(b *testing.B) {
		env.hammer(b, env.httpGrab(constant, "/v1/sales/x/grab", false, fasthttp.StatusConflict))
	})
}

// rawScript is a worker calling the sale grab script directly, once per
// user, through go-redis EVALSHA: what the engine would do without HTTP and
// without coalescing. Every call must win.
func (env *harness) rawScript(b *testing.B, sale string) worker {
	script := redis.NewScript(scripts.SaleGrab)
	if err := script.Load(context.Background(), env.rdb).Err(); err != nil {
		b.Fatal(err)
	}
	ks := engine.Keyspace{Prefix: env.prefix, Partitions: engine.DefaultPartitions}
	p := ks.Partition(sale)
	ids := engine.NewIDs(1023) // a node number no engine of the run claims
	return func() op {
		ctx := context.Background()
		return func(n int64) error {
			id, _ := ids.Next() // a fixed node: never fails
			oid := strconv.FormatInt(id, 10) + "-" + strconv.Itoa(p)
			keys := []string{ks.Sale(p, sale), ks.Buyers(p, sale), ks.Events(p), ks.Epoch(p), ks.Orders(p, oid)}
			v, err := env.rdb.EvalSha(ctx, script.Hash(), keys, sale, engine.DefaultRetention.Milliseconds(), "u"+strconv.FormatInt(n%users, 10),
				"k"+strconv.FormatInt(env.keySeq.Add(1), 10), 1, oid).Int64Slice()
			if err != nil {
				return err
			}
			if len(v) != 5 || v[0] != 0 {
				return fmt.Errorf("script answered %v, want a win", v)
			}
			return nil
		}
	}
}

// packetGrab is a worker grabbing red packets over HTTP: b.N grabs over
// b.N/1000+1 random packets of 1,000 shares, each share won by a distinct
// user. The packets are published straight through the engine: funding them
// in MySQL is not what this measures.
func (env *harness) packetGrab(b *testing.B, srv *server) worker {
	const shares = flashgrab.MaxPacketCount
	ids := make([]string, b.N/shares+1)
	for i := range ids {
		pk, err := srv.eng.NewPacket("sender", flashgrab.MaxPacketCents, shares, flashgrab.ModeRandom, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.eng.PublishPacket(context.Background(), pk); err != nil {
			b.Fatal(err)
		}
		ids[i] = pk.ID
	}
	hc := newClient(srv.addr)
	base := "http://" + srv.addr + "/v1/packets/"
	return func() op {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod(fasthttp.MethodPost)
		var uri []byte
		return func(n int64) error {
			k := n - 1
			uri = append(append(append(uri[:0], base...), ids[k/shares]...), "/grab"...)
			req.SetRequestURIBytes(uri)
			req.Header.Set("Authorization", env.tokens[k%shares])
			if err := hc.Do(req, resp); err != nil {
				return err
			}
			if resp.StatusCode() != fasthttp.StatusOK || bytes.Contains(resp.Body(), []byte(`"repeat":true`)) {
				return fmt.Errorf("status %d, want a new share: %s", resp.StatusCode(), resp.Body())
			}
			return nil
		}
	}
}

// constantServer answers every request with the body of a sold-out grab,
// with the same server settings as the API's: the floor under any handler.
func constantServer() *fasthttp.Server {
	body := []byte(`{"error":{"code":"sold_out","message":"sale x: sold out"}}`)
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.SetContentType("application/json")
			ctx.SetStatusCode(fasthttp.StatusConflict)
			ctx.SetBody(body)
		},
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second,
		NoDefaultServerHeader: true, NoDefaultDate: true,
	}
}
