package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
	"github.com/flashgrab/flashgrab/settle"
)

// The end-to-end benchmark harness: real api.Servers on loopback TCP, the
// real Redis (under a key prefix of the run's own) and MySQL (a database of
// its own, needed by the server's books; settlement does not run), and
// fasthttp clients hammering from b.RunParallel with per-request latency in
// HDR histograms.

// concurrency is how many requests are in flight at once in every case,
// so that each baseline runs at the same concurrency as what it is compared
// with.
const concurrency = 96

// users is how many distinct users the requests rotate over.
const users = 2048

// secret signs the users' tokens and is the servers' JWT secret.
var secret = []byte("bench-secret")

// harness is what every case of a benchmark run shares.
type harness struct {
	rdb    *redis.Client
	prefix string
	books  *settle.Books
	tokens []string // "Bearer <jwt>" of user u<i>
	keySeq atomic.Int64
}

// newHarness prepares the run's Redis prefix, its MySQL database with the
// schema, and a token per user.
func newHarness(b *testing.B) *harness {
	b.Helper()
	_, prefix := testenv.Redis(b) // its cleanup removes every key under prefix
	// A pool as wide as the concurrency, so the one-call-per-user baselines
	// never queue for a connection.
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), PoolSize: 2 * concurrency})
	b.Cleanup(func() { rdb.Close() })
	db, _ := testenv.MySQL(b)
	if err := settle.Migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	env := &harness{rdb: rdb, prefix: prefix, books: &settle.Books{DB: db}, tokens: make([]string, users)}
	auth := api.Auth{Secret: secret}
	for i := range env.tokens {
		tok, err := auth.Mint("u"+strconv.Itoa(i), false, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		env.tokens[i] = "Bearer " + tok
	}
	return env
}

// on returns a harness sharing env's MySQL and tokens but speaking to the
// throwaway Redis s (the durability cases need a Redis with AOF or a replica,
// which the shared one must not be made into).
func (env *harness) on(b *testing.B, s *testenv.RedisServer) *harness {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 2 * concurrency})
	b.Cleanup(func() { rdb.Close() })
	return &harness{rdb: rdb, prefix: env.prefix, books: env.books, tokens: env.tokens}
}

// purge removes every key of the run, so that orders and stream entries of
// one case do not weigh on the next. The partitions' epoch markers stay: without
// them every grab would be fenced as after a Redis loss.
func (env *harness) purge(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	iter := env.rdb.Scan(ctx, 0, env.prefix+":*", 1000).Iterator()
	batch := make([]string, 0, 1000)
	flush := func() {
		if len(batch) > 0 {
			if err := env.rdb.Unlink(ctx, batch...).Err(); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		if strings.HasSuffix(iter.Val(), ":epoch") {
			continue
		}
		if batch = append(batch, iter.Val()); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
}

// server is one in-process API server.
type server struct {
	eng  *engine.Engine
	addr string
}

// startServer runs an api.Server with an engine configured by cfg (Redis
// and keys are filled in) on a loopback TCP port.
func (env *harness) startServer(b *testing.B, cfg engine.Config) *server {
	b.Helper()
	cfg.Redis, cfg.Keys = env.rdb, engine.Keyspace{Prefix: env.prefix, Partitions: engine.DefaultPartitions}
	eng, err := engine.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	srv := &api.Server{Engine: eng, Books: env.books, Auth: api.NewAuth(secret)}
	return &server{eng: eng, addr: testenv.Serve(b, srv.HTTPServer())}
}

// createSale makes an open sale through the engine.
func (s *server) createSale(b *testing.B, id string, stock, limit int64) {
	b.Helper()
	now := time.Now()
	if _, err := s.eng.CreateSale(context.Background(), flashgrab.Sale{ID: id, MerchantID: "m", PriceCents: 100,
		Stock: stock, PerUserLimit: limit, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(24 * time.Hour)}); err != nil {
		b.Fatal(err)
	}
}

// newClient returns a fasthttp client for addr with a connection per worker.
func newClient(addr string) *fasthttp.HostClient {
	return &fasthttp.HostClient{Addr: addr, MaxConns: 2 * concurrency, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, MaxIdleConnDuration: time.Minute}
}

// op is one request of a case: it does its work and says whether the
// answer was the expected one.
type op func(n int64) error

// worker builds one worker's op; it runs once per goroutine, so ops can
// keep their own reusable request and response.
type worker func() op

// redisCPU returns the CPU seconds Redis has used (INFO cpu), or -1 when
// it cannot tell.
func (env *harness) redisCPU() float64 {
	info, err := env.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		return -1
	}
	total := 0.0
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			total += f
		}
	}
	return total
}

// hammer runs b.N ops at concurrency and reports throughput, latency
// percentiles, and the CPU time per op of Redis and of this process (server
// and clients). Everything shares the machine's cores, so CPU per op is the
// steadier figure when other work competes for them. Every op's answer is
// checked; a wrong one fails the case.
func (env *harness) hammer(b *testing.B, newOp worker) {
	b.Helper()
	par := (concurrency + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	b.SetParallelism(par)
	var (
		mu     sync.Mutex
		merged = newHistogram()
		seq    atomic.Int64
		failed atomic.Int64
		first  atomic.Value
	)
	b.ReportAllocs()
	cpu0, self0 := env.redisCPU(), processCPU()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		do := newOp()
		h := newHistogram()
		for pb.Next() {
			t0 := time.Now()
			err := do(seq.Add(1))
			_ = h.RecordValue(time.Since(t0).Microseconds())
			if err != nil && failed.Add(1) == 1 {
				first.Store(err)
			}
		}
		mu.Lock()
		merged.Merge(h)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	cpu1, self1 := env.redisCPU(), processCPU()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests answered wrongly; the first: %v", n, b.N, first.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "grabs/s")
	b.ReportMetric(float64(merged.ValueAtQuantile(50)), "p50-µs")
	b.ReportMetric(float64(merged.ValueAtQuantile(99)), "p99-µs")
	if cpu0 >= 0 && cpu1 >= 0 {
		b.ReportMetric((cpu1-cpu0)*1e6/float64(b.N), "redis-µs/op")
	}
	b.ReportMetric(float64(self1-self0)/1e3/float64(b.N), "go-µs/op")
}

// processCPU is the CPU time this process (server, engine and clients
// alike) has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// newHistogram records latencies from 1 µs to 60 s at 3 significant digits.
func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// httpGrab is a worker posting grabs of path, rotating the users; withKey
// gives every request its own Idempotency-Key (a new purchase each time).
// want is the status every answer must have.
func (env *harness) httpGrab(addr, path string, withKey bool, want int) worker {
	hc := newClient(addr)
	uri := "http://" + addr + path
	return func() op {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(uri)
		req.Header.SetMethod(fasthttp.MethodPost)
		var key []byte
		return func(n int64) error {
			req.Header.Set("Authorization", env.tokens[n%users])
			if withKey {
				key = strconv.AppendInt(append(key[:0], 'k'), env.keySeq.Add(1), 10)
				req.Header.SetBytesV("Idempotency-Key", key)
			}
			if err := hc.Do(req, resp); err != nil {
				return err
			}
			if resp.StatusCode() != want {
				return fmt.Errorf("status %d, want %d: %s", resp.StatusCode(), want, resp.Body())
			}
			return nil
		}
	}
}

// awaitSoldOutMark grabs until srv's sold-out mark answers for the sale.
func awaitSoldOutMark(b *testing.B, srv *server, sale string) {
	b.Helper()
	i := 0
	testenv.Eventually(b, 10*time.Second, func() (bool, string) {
		i++
		before := srv.eng.SoldOutStats().Answered
		_, err := srv.eng.Grab(context.Background(), flashgrab.GrabRequest{SaleID: sale, UserID: "probe" + strconv.Itoa(i), Qty: 1})
		if !errors.Is(err, flashgrab.ErrSoldOut) {
			b.Fatalf("probe grab of sold-out sale %s: %v", sale, err)
		}
		st := srv.eng.SoldOutStats()
		return st.Answered > before, fmt.Sprintf("the sold-out mark of %s answers no probe: %+v", sale, st)
	})
}
