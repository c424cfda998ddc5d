package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// size is how hard and how long a run pushes: short for make test and CI,
// full for make chaos (FLASHGRAB_CHAOS=full).
type size struct {
	workers, lanes, salesPerLane, users int
	stock, limit                        int64
	before, during, after               int64 // wins before the fault, answers during it, wins (or answers) after it
	mysqlCut                            time.Duration
	packetTTL                           int64
}

var (
	short = size{workers: 16, lanes: 4, salesPerLane: 30, users: 40, stock: 30, limit: 2,
		before: 150, during: 80, after: 150, mysqlCut: 3 * time.Second, packetTTL: 1}
	full = size{workers: 64, lanes: 4, salesPerLane: 500, users: 100, stock: 100, limit: 2,
		before: 3000, during: 2000, after: 3000, mysqlCut: 30 * time.Second, packetTTL: 2}
)

func chosenSize() (size, string) {
	if os.Getenv("FLASHGRAB_CHAOS") == "full" {
		return full, "full"
	}
	return short, "short"
}

// Durability modes the suite runs faults in: aof and replica must lose
// nothing answered 200; none is counted.
const (
	modeAOF     = "aof"
	modeReplica = "replica"
	modeNone    = "none"
)

// env is one fault's world: its own redis-server(s), its own MySQL database
// reached by serve through a proxy the test can cut, the serve instances,
// and the load.
type env struct {
	t          *testing.T
	mode       string
	sz         size
	prefix     string
	partitions int
	redisAddrs string
	rdb        redis.UniversalClient // the test's own client of the same Redis
	redis      *testenv.RedisServer  // single Redis (the primary when replicated), or nil
	replica    *testenv.RedisServer  // the primary's replica (fault.replicated)
	redisProxy *testenv.Proxy        // when replicated: the address serve has, moved by a failover
	nodes      []*testenv.ClusterNode
	db         *sql.DB
	dsn        string // direct, for reconcile and rebuild
	mysqlProxy *testenv.Proxy
	servers    []*instance
	load       *load
}

const secret = "chaos-secret"

// redisArgs are the persistence settings each mode's Redis runs with.
func redisArgs(mode string) []string {
	if mode == modeAOF {
		return []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	return []string{"--appendonly", "no"}
}

func newEnv(t *testing.T, mode string, sz size, f fault) *env {
	e := &env{t: t, mode: mode, sz: sz, prefix: "fg", partitions: 16}
	if f.cluster {
		e.nodes = testenv.Cluster(t, redisArgs(mode)...)
		addrs := make([]string, len(e.nodes))
		for i, n := range e.nodes {
			addrs[i] = n.Addr
		}
		e.redisAddrs = strings.Join(addrs, ",")
	} else {
		e.redis = testenv.StartRedisServer(t, redisArgs(mode)...)
		e.redisAddrs = e.redis.Addr
	}
	if f.replicated {
		e.replica = testenv.StartRedisServer(t, append(redisArgs(mode), "--replicaof", "127.0.0.1", fmt.Sprint(e.redis.Port))...)
		e.waitReplicaOnline(e.redis)
		// serve reaches the primary by an address a failover moves.
		e.redisProxy = testenv.NewProxy(t, e.redis.Addr)
		e.redisAddrs = e.redisProxy.Addr()
	}
	e.rdb = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(e.redisAddrs, ","),
		DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { e.rdb.Close() })
	e.db, e.dsn = testenv.MySQL(t)
	cfg, err := mysql.ParseDSN(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	e.mysqlProxy = testenv.NewProxy(t, cfg.Addr)
	cfg.Addr = e.mysqlProxy.Addr()
	cfg.Timeout = 500 * time.Millisecond
	for range f.instances {
		in := newInstance(t, "--redis-addrs", e.redisAddrs, "--mysql-dsn", cfg.FormatDSN(),
			"--key-prefix", e.prefix, "--partitions", fmt.Sprint(e.partitions), "--jwt-secret", secret,
			"--durability", mode, "--sandbox=false", "--grab-rate", "0", "--ip-rate", "0", "--max-conns-per-ip", "0",
			// What a dead instance left, and packets sent while Redis
			// failed, are picked up after 2 s rather than 30.
			"--settle-claim-idle", "2s", "--packet-grace", "2s")
		in.start(t)
		e.servers = append(e.servers, in)
	}
	addrs := make([]string, len(e.servers))
	for i, in := range e.servers {
		addrs[i] = in.addr
	}
	e.load = &load{rec: newRecord(), auth: api.Auth{Secret: []byte(secret)},
		hc: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: sz.workers + 4, MaxIdleConns: 4 * (sz.workers + 4)}},
		users: sz.users, workers: sz.workers, packetEvery: 100 * time.Millisecond, packetTTL: sz.packetTTL}
	t.Cleanup(e.load.hc.CloseIdleConnections)
	e.load.setTargets(addrs...)
	e.setUp()
	return e
}

// setUp creates the lanes' sales and funds the packet sender.
func (e *env) setUp() {
	l := e.load
	l.lanes = make([]*lane, e.sz.lanes)
	var wg sync.WaitGroup
	errs := make(chan string, e.sz.lanes)
	for i := range l.lanes {
		ln := &lane{}
		l.lanes[i] = ln
		for k := range e.sz.salesPerLane {
			ln.sales = append(ln.sales, fmt.Sprintf("s%d-%d", i, k))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, id := range ln.sales {
				status, code := l.call(0, "POST", "/v1/sales", "admin", true, map[string]any{
					"id": id, "merchant_id": "m", "price_cents": 100, "stock": e.sz.stock,
					"per_user_limit": e.sz.limit, "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}, nil)
				if status != 201 {
					errs <- fmt.Sprintf("create sale %s: %d %s", id, status, code)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		e.t.Fatal(msg)
	}
	if status, code := l.call(0, "POST", "/v1/admin/accounts/sender/credit", "admin", true,
		map[string]any{"amount_cents": 1_000_000_000, "ref": "chaos-seed"}, nil); status != 200 {
		e.t.Fatalf("credit the packet sender: %d %s", status, code)
	}
}

// waitReplicaOnline waits until primary has a replica online.
func (e *env) waitReplicaOnline(primary *testenv.RedisServer) {
	rdb := primary.Client(e.t)
	testenv.Eventually(e.t, 30*time.Second, func() (bool, string) {
		info, err := rdb.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, ",state=online,"), fmt.Sprintf("no replica online at %s (%v)", primary.Addr, err)
	})
}

// failover kills the primary, promotes its replica, moves serve's Redis
// address to it, and brings the old primary back, empty (no persistence),
// as the new primary's replica: what an operator or Sentinel does.
func (e *env) failover() {
	e.redis.Kill()
	if err := e.replica.Client(e.t).ReplicaOf(context.Background(), "NO", "ONE").Err(); err != nil {
		e.t.Fatalf("promote the replica: %v", err)
	}
	e.redisProxy.Retarget(e.replica.Addr)
	e.waitAnswers("while the new primary has no replica", e.sz.during/4)
	e.redis.Restart(e.t)
	if err := e.redis.Client(e.t).ReplicaOf(context.Background(), "127.0.0.1", fmt.Sprint(e.replica.Port)).Err(); err != nil {
		e.t.Fatalf("make the old primary a replica: %v", err)
	}
	e.redis, e.replica = e.replica, e.redis
	e.waitReplicaOnline(e.redis)
}

// waitWins waits until n more wins than at the call have been answered 200.
func (e *env) waitWins(what string, n int64) {
	from := e.load.rec.wins.Load()
	testenv.Eventually(e.t, 2*time.Minute, func() (bool, string) {
		got := e.load.rec.wins.Load() - from
		return got >= n, fmt.Sprintf("%s: %d wins answered 200, want %d (answers: %s)", what, got, n, e.load.rec.summary())
	})
}

// waitAnswers waits until n more HTTP answers than at the call have come.
func (e *env) waitAnswers(what string, n int64) {
	from := e.load.rec.answers.Load()
	testenv.Eventually(e.t, 2*time.Minute, func() (bool, string) {
		got := e.load.rec.answers.Load() - from
		return got >= n, fmt.Sprintf("%s: %d answers, want %d", what, got, n)
	})
}

// fault is one row of the table.
type fault struct {
	name      string
	cluster   bool
	instances int
	// lossy: in mode none the fault loses Redis's data, so after it only
	// answers are awaited (the lanes' sales are gone).
	lossy bool
	// flushes: the fault deletes Redis's data under load, in every mode;
	// what was not settled yet is lost by definition (and its units can be
	// sold again after the rebuild), so lost wins and units promised twice
	// are counted, not refused, even in mode aof.
	flushes bool
	// replicated: the single Redis has a replica, and serve reaches the
	// primary through an address a failover can move.
	replicated bool
	needs      string   // a flashgrab command the fault needs, or ""
	modes      []string // the modes it runs in; nil: aof and none
	inject     func(e *env)
}

var faults = []fault{
	{name: "redis kill -9, restart", instances: 1, lossy: true, inject: func(e *env) {
		e.redis.Kill()
		e.waitAnswers("while Redis is down", e.sz.during)
		e.redis.Restart(e.t)
	}},
	// A flush deletes what was not settled yet, whatever the mode: after
	// settlement drained, it shows that the rebuild restores exactly what
	// MySQL holds (stock, holdings, packets) and nothing is sold twice.
	{name: "redis flush (drained), rebuild", instances: 1, needs: "rebuild", inject: func(e *env) {
		e.load.stop()
		e.waitDrained()
		e.flushAndRebuild()
		e.load.start()
	}},
	// Under load it loses the unsettled tail in every mode: counted, in
	// mode aof only (the mode does not matter to a flush).
	{name: "redis flush under load, rebuild", instances: 1, lossy: true, flushes: true, needs: "rebuild",
		modes: []string{modeAOF}, inject: func(e *env) {
			e.flushAndRebuild()
		}},
	// Mode replica's promise: a win answered 200 is on the replica, so a
	// failover to it loses nothing, though the primary had no persistence.
	// Mode none, with the same replica, answers before it is replicated.
	{name: "redis primary kill -9, replica promoted", instances: 1, replicated: true, modes: []string{modeReplica, modeNone}, inject: func(e *env) {
		e.failover()
	}},
	{name: "mysql cut", instances: 1, inject: func(e *env) {
		e.mysqlProxy.Down()
		until := time.Now().Add(e.sz.mysqlCut)
		from := e.load.rec.wins.Load()
		testenv.Eventually(e.t, e.sz.mysqlCut+2*time.Minute, func() (bool, string) {
			got := e.load.rec.wins.Load() - from
			return time.Now().After(until) && got >= e.sz.during,
				fmt.Sprintf("MySQL cut for %v: %d wins answered meanwhile, want %d", e.sz.mysqlCut, got, e.sz.during)
		})
		e.mysqlProxy.Up()
	}},
	{name: "serve kill -9, restart", instances: 1, inject: func(e *env) {
		e.servers[0].kill()
		e.servers[0].start(e.t)
	}},
	{name: "1 of 2 serve killed", instances: 2, inject: func(e *env) {
		e.servers[1].kill()
	}},
	{name: "cluster master kill -9, restart", cluster: true, instances: 1, lossy: true, inject: func(e *env) {
		e.nodes[1].Kill()
		e.waitAnswers("while a master is down", e.sz.during)
		e.nodes[1].Start(e.t)
	}},
}

// flushAndRebuild deletes every key of the fault's Redis and runs
// `flashgrab rebuild`, which must succeed.
func (e *env) flushAndRebuild() {
	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		e.t.Fatalf("FLUSHALL: %v", err)
	}
	code, out := runCommand(e.t, "rebuild", "--redis-addrs", e.redisAddrs, "--mysql-dsn", e.dsn,
		"--key-prefix", e.prefix, "--partitions", fmt.Sprint(e.partitions))
	if code != 0 {
		e.t.Fatalf("flashgrab rebuild exited %d:\n%s", code, out)
	}
	e.t.Logf("flashgrab rebuild:\n%s", out)
}

// TestChaos runs every fault under load, in mode aof and in mode none (the
// replica failover in mode replica), and prints the table. In the durable
// modes every win answered 200 must be in MySQL, nothing oversold, every
// refund due done, and reconcile must exit 0. In mode none what is lost is
// counted, and the counts must add up.
func TestChaos(t *testing.T) {
	sz, which := chosenSize()
	modes := []string{modeAOF, modeReplica, modeNone}
	rows := make([]row, len(faults)*len(modes))
	flashgrab(t) // built once, before the faults run side by side
	// Faults run in parallel (-parallel, GOMAXPROCS by default): each has
	// processes, ports and a database of its own.
	t.Run("faults", func(t *testing.T) {
		for i, f := range faults {
			for j, mode := range modes {
				if runs := f.modes; runs == nil && mode == modeReplica || runs != nil && !slices.Contains(runs, mode) {
					continue
				}
				t.Run(strings.ReplaceAll(f.name, " ", "_")+"/"+mode, func(t *testing.T) {
					t.Parallel()
					r := &rows[i*len(modes)+j]
					*r = row{fault: f.name, mode: mode, ran: true}
					defer func() { r.failed, r.ran = t.Failed(), true }()
					if f.needs != "" && !hasCommand(t, f.needs) {
						r.missing = "flashgrab " + f.needs
						t.Skipf("NOT AVAILABLE: the flashgrab binary has no %q command; this fault is not tested", f.needs)
					}
					*r = runFault(t, f, mode, sz)
					t.Logf("%s", r.line())
				})
			}
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "\nchaos suite (%s, %d workers, MySQL cut %v): faults injected under load into processes the test started\n\n",
		which, sz.workers, sz.mysqlCut)
	printTable(&b, rows)
	fmt.Print(b.String())
	if path := os.Getenv("FLASHGRAB_CHAOS_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Errorf("write the table to %s: %v", path, err)
		}
	}
}

func runFault(t *testing.T, f fault, mode string, sz size) row {
	last := time.Now()
	took := func(phase string) {
		t.Logf("%s took %v", phase, time.Since(last).Round(time.Millisecond))
		last = time.Now()
	}
	e := newEnv(t, mode, sz, f)
	took("set-up")
	t.Cleanup(func() {
		if t.Failed() {
			for _, in := range e.servers {
				t.Logf("serve %s log tail:\n%s", in.addr, in.tail())
			}
		}
	})
	e.load.start()
	stopped := false
	defer func() {
		if !stopped {
			e.load.stop()
		}
	}()
	e.waitWins("before the fault", sz.before)
	took("load before the fault")
	f.inject(e)
	took("the fault")
	if mode == modeNone && f.lossy || f.flushes {
		e.waitAnswers("after the fault", sz.after)
	} else {
		e.waitWins("after the fault", sz.after)
	}
	e.load.stop()
	stopped = true
	took("load after the fault")
	t.Logf("answers: %s", e.load.rec.summary())

	r := e.measure()
	took("drain, refunds and reconcile")
	r.fault, r.mode = f.name, mode
	r.counted = mode == modeNone || f.flushes
	if r.wins != r.inMySQL+r.lost {
		t.Errorf("the accounting does not add up: %d wins answered 200, %d in MySQL + %d lost", r.wins, r.inMySQL, r.lost)
	}
	if r.oversoldInMySQL != 0 {
		t.Errorf("MySQL holds %d units beyond stock, limits or packet counts", r.oversoldInMySQL)
	}
	// A win lost with Redis's state frees at most its unit (sold again:
	// one over stock) and its buyer's place under the limit (one over the
	// limit when the buyer buys again); anything beyond was counted twice.
	if r.oversold > 2*r.lost {
		t.Errorf("%d units promised beyond stock, limits or packet counts, more than the %d lost wins can explain (2 each)", r.oversold, r.lost)
	}
	if mode != modeNone {
		if r.lost != 0 && !f.flushes {
			t.Errorf("mode %s: %d wins answered 200 are missing from MySQL, e.g. %v", mode, r.lost, r.lostExamples)
		}
		// Every refund is the packet's total less the shares MySQL holds,
		// a flush under load included: a settler batch read before the
		// flush and committed after the rebuild read MySQL used to be
		// counted twice (the rebuilt remainder still held its shares, and
		// the sender was refunded them on top); its partition's epoch now
		// refuses it (settle/epoch.go).
		if r.refundsDone != r.refundsDue {
			t.Errorf("mode %s: %d of %d refunds due were done; refunded with another amount: %v", mode, r.refundsDone, r.refundsDue, r.refundsWrong)
		}
		if r.oversold != 0 && !f.flushes {
			t.Errorf("mode %s: %d units promised beyond stock, limits or packet counts", mode, r.oversold)
		}
		if r.reconcile != 0 {
			t.Errorf("mode %s: reconcile exited %d:\n%s", mode, r.reconcile, r.reconcileOut)
		}
		if n := e.load.rec.outcomes["sale 404 not_found"]; n != 0 && !f.flushes {
			t.Errorf("mode %s: %d sale grabs answered 404: a sale was lost", mode, n)
		}
	}
	return r
}
