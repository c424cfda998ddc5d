package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/panjf2000/ants/v2"
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
// its own, needed by the server's books; settlement runs in the cases that
// measure it, hammerSettled), and
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
func (env *harness) hammer(b *testing.B, newOp worker) (redisPerOp float64) {
	b.Helper()
	return env.hammerSettled(b, newOp, false)
}

// hammerSettled is hammer; with settled, a settler drains the partition
// streams into MySQL while the ops run, and the case also reports Redis's
// CPU per op up to the moment every event is settled (redis-settled-µs/op:
// the grab scripts and the settler's reads, acknowledgements and trimming),
// and how long the drain took after the last op. Every op must be a win, so
// this is Redis CPU per winning grab. It returns Redis's CPU µs per op:
// settled, up to the drain; else up to the last op (-1 when unknown).
func (env *harness) hammerSettled(b *testing.B, newOp worker, settled bool) (redisPerOp float64) {
	b.Helper()
	var st *settling
	if settled {
		st = env.startSettler(b)
		defer st.stop()
	}
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
	stats0 := env.commandStats()
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
	redisPerOp = -1
	if cpu0 >= 0 && cpu1 >= 0 {
		redisPerOp = (cpu1 - cpu0) * 1e6 / float64(b.N)
		b.ReportMetric(redisPerOp, "redis-µs/op")
	}
	if st != nil {
		redisPerOp = -1
		t0 := time.Now()
		st.drain(b, int64(b.N))
		cpu2 := env.redisCPU()
		b.ReportMetric(time.Since(t0).Seconds(), "drain-s")
		if cpu0 >= 0 && cpu2 >= 0 {
			redisPerOp = (cpu2 - cpu0) * 1e6 / float64(b.N)
			b.ReportMetric(redisPerOp, "redis-settled-µs/op")
		}
		b.Logf("N=%d, Redis time per op by command (INFO commandstats; a script's commands are inside its own): %s",
			b.N, commandsPerOp(stats0, env.commandStats(), b.N))
	}
	b.ReportMetric(float64(self1-self0)/1e3/float64(b.N), "go-µs/op")
	return redisPerOp
}

// commandStats returns INFO commandstats as command → total µs, calls.
func (env *harness) commandStats() map[string][2]float64 {
	info, err := env.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		return nil
	}
	out := map[string][2]float64{}
	for _, line := range strings.Split(info, "\n") {
		// cmdstat_xadd:calls=10,usec=40,usec_per_call=4.00,...
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var v [2]float64
		for _, kv := range strings.Split(rest, ",") {
			k, x, _ := strings.Cut(kv, "=")
			f, _ := strconv.ParseFloat(x, 64)
			switch k {
			case "usec":
				v[0] = f
			case "calls":
				v[1] = f
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = v
	}
	return out
}

// commandsPerOp formats the commands' time and calls per op between two
// commandStats, largest first, leaving out those under 0.1 µs per op.
func commandsPerOp(before, after map[string][2]float64, n int) string {
	type row struct {
		name        string
		usec, calls float64
	}
	var rows []row
	for k, v := range after {
		r := row{k, (v[0] - before[k][0]) / float64(n), (v[1] - before[k][1]) / float64(n)}
		if r.usec >= 0.1 {
			rows = append(rows, r)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].usec > rows[j].usec })
	var sb strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&sb, "%s %.2fµs (%.3f calls); ", r.name, r.usec, r.calls)
	}
	return sb.String()
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

// settling is a settler running over a harness's Redis and MySQL for one
// case.
type settling struct {
	db     *sql.DB
	base   int64 // wins MySQL held when the settler started
	rdb    *redis.Client
	keys   engine.Keyspace
	cancel context.CancelFunc
	done   chan struct{}
}

// startSettler runs a settler (as serve runs it: default options, a pool of
// 16 transactions) over env's partitions until stop.
func (env *harness) startSettler(b *testing.B) *settling {
	b.Helper()
	pool, err := ants.NewPool(16)
	if err != nil {
		b.Fatal(err)
	}
	// The settler blocks one connection per partition: a client of its own.
	rdb := redis.NewClient(&redis.Options{Addr: env.rdb.Options().Addr, PoolSize: 2 * engine.DefaultPartitions})
	keys := engine.Keyspace{Prefix: env.prefix, Partitions: engine.DefaultPartitions}
	s := settle.NewSettler(rdb, env.books, keys, pool)
	s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	st := &settling{db: env.books.DB, rdb: rdb, keys: keys, cancel: cancel, done: make(chan struct{})}
	st.base = st.settled(b)
	go func() {
		defer close(st.done)
		_ = s.Run(ctx)
		pool.Release()
		rdb.Close()
	}()
	return st
}

// settled counts the wins MySQL holds: orders and packet shares.
func (st *settling) settled(b *testing.B) int64 {
	var n int64
	if err := st.db.QueryRow("SELECT (SELECT COUNT(*) FROM orders) + (SELECT COUNT(*) FROM packet_grabs)").Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// drain waits until MySQL holds the case's wins, then until every
// partition's stream is settled: no entry pending in the settlers' group and
// none not yet delivered to it. MySQL is polled first so that the polling
// costs Redis nothing while the settler catches up.
func (st *settling) drain(b *testing.B, wins int64) {
	b.Helper()
	ctx := context.Background()
	testenv.Eventually(b, 5*time.Minute, func() (bool, string) {
		n := st.settled(b) - st.base
		return n >= wins, fmt.Sprintf("MySQL holds %d of %d wins", n, wins)
	})
	testenv.Eventually(b, time.Minute, func() (bool, string) {
		for p := 0; p < st.keys.Partitions; p++ {
			stream := st.keys.Events(p)
			info, err := st.rdb.XInfoStream(ctx, stream).Result()
			if err != nil {
				if strings.Contains(err.Error(), "no such key") {
					continue // no event in this partition
				}
				return false, fmt.Sprintf("stream %s: %v", stream, err)
			}
			groups, err := st.rdb.XInfoGroups(ctx, stream).Result()
			if err != nil || len(groups) == 0 {
				return false, fmt.Sprintf("stream %s has no settlers' group yet (%v)", stream, err)
			}
			g := groups[0]
			if g.Pending > 0 || g.LastDeliveredID != info.LastGeneratedID {
				return false, fmt.Sprintf("stream %s: %d pending, delivered up to %s of %s", stream, g.Pending,
					g.LastDeliveredID, info.LastGeneratedID)
			}
		}
		return true, ""
	})
}

// stop ends the settler and waits for it.
func (st *settling) stop() {
	st.cancel()
	<-st.done
}
