package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/settle"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the HTTP API and the settler",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Sources: cli.EnvVars("FLASHGRAB_ADDR"), Usage: "listen address"},
			&cli.StringFlag{Name: "debug-addr", Sources: cli.EnvVars("FLASHGRAB_DEBUG_ADDR"),
				Usage: "serve Go's profiles (net/http/pprof, /debug/pprof/) on this address, never the API's; unauthenticated: keep it on loopback or an admin network (default: off)"},
			redisFlag, mysqlFlag, partitionsFlag, prefixFlag, secretFlag, devSecretFlag,
			&cli.BoolFlag{Name: "dev", Usage: "development mode: without a JWT secret, keep one in --dev-secret-file and print it with an admin token; sandbox payments"},
			&cli.IntFlag{Name: "settle-workers", Value: 8, Sources: cli.EnvVars("FLASHGRAB_SETTLE_WORKERS"), Usage: "concurrent MySQL batches (ants pool size)"},
			&cli.DurationFlag{Name: "settle-claim-idle", Value: 30 * time.Second, Sources: cli.EnvVars("FLASHGRAB_SETTLE_CLAIM_IDLE"),
				Usage: "settle the events a dead instance left unsettled once they have been pending this long"},
			&cli.DurationFlag{Name: "packet-grace", Value: 30 * time.Second, Sources: cli.EnvVars("FLASHGRAB_PACKET_GRACE"),
				Usage: "a red packet debited but not published to Redis (Redis failed during its send) is published by the sweeper after this long"},
			&cli.DurationFlag{Name: "order-ttl", Value: 15 * time.Minute, Sources: cli.EnvVars("FLASHGRAB_ORDER_TTL"), Usage: "unpaid orders expire after this"},
			&cli.DurationFlag{Name: "retention", Value: engine.DefaultRetention, Sources: cli.EnvVars("FLASHGRAB_RETENTION"),
				Usage: "how long Redis keeps order records and closed red packets (MySQL keeps them for good); must exceed --order-ttl"},
		}, append(append(durabilityFlags(), limitFlags()...), paymentFlags()...)...),
		Action: serve,
	}
}

func serve(ctx context.Context, cmd *cli.Command) error {
	log, err := newLogger(cmd)
	if err != nil {
		return err
	}
	ks, err := keyspace(cmd)
	if err != nil {
		return err
	}
	secret, err := serverSecret(ctx, cmd)
	if err != nil {
		return err
	}
	auth := api.NewAuth([]byte(secret))

	rdb, err := openRedis(ctx, cmd.String("redis-addrs"), 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// The settler blocks one connection per partition on XREADGROUP, so it
	// gets a client of its own and never starves the grab path.
	srdb, err := openRedis(ctx, cmd.String("redis-addrs"), ks.Partitions+8)
	if err != nil {
		return err
	}
	defer srdb.Close()
	db, err := openMySQL(ctx, cmd.String("mysql-dsn"))
	if err != nil {
		return err
	}
	defer db.Close()

	if cmd.Duration("retention") <= cmd.Duration("order-ttl")+time.Minute {
		return fmt.Errorf("--retention %v must exceed --order-ttl %v (by a minute at least): expiry reads the record to return the stock",
			cmd.Duration("retention"), cmd.Duration("order-ttl"))
	}
	// The id node is leased once the listener is open (below): until then
	// the engine hands out no ids.
	ids := engine.NewLeasedIDs()
	mode, err := durability(cmd)
	if err != nil {
		return err
	}
	// DetectLoss: a partition without its epoch marker stays fenced until
	// the rebuilder below initialises or rebuilds it.
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: ks, Retention: cmd.Duration("retention"), IDs: ids,
		Durability: mode, WaitTimeout: cmd.Duration("wait-timeout"), DetectLoss: true})
	if err != nil {
		return err
	}
	// A mismatch is logged, not refused: Redis can be fixed live (CONFIG
	// SET, a replica attached) without restarting flashgrab.
	for _, w := range engine.DurabilityWarnings(ctx, rdb, mode) {
		log.Warn("Redis does not honour --durability", "durability", string(mode), "problem", w)
	}
	defer eng.Close() // after the HTTP server and the sweeper, before Redis
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pool, err := ants.NewPool(int(cmd.Int("settle-workers")))
	if err != nil {
		return err
	}
	defer pool.Release()
	books := &settle.Books{DB: db, OrderTTL: cmd.Duration("order-ttl")}
	settler := settle.NewSettler(srdb, books, ks, pool)
	if cmd.Duration("settle-claim-idle") <= 0 {
		return fmt.Errorf("--settle-claim-idle %v: must be positive", cmd.Duration("settle-claim-idle"))
	}
	settler.ClaimIdle = cmd.Duration("settle-claim-idle")
	settler.Logger = log
	settler.Metrics = settle.NewMetrics(reg)
	rebuilder := settle.NewRebuilder(eng, books, settler)
	rebuilder.Logger = log
	// One round before serving, so that a fresh deployment answers its
	// first grab; a lost partition is rebuilt here or, if this fails, by
	// the rebuilder's rounds in the background.
	if res, err := rebuilder.RebuildAll(ctx); err != nil {
		log.Warn("rebuild check at start failed; the rebuilder retries in the background", "err", err)
	} else {
		for _, r := range res {
			if r.Outcome == settle.RebuildDone {
				log.Warn("Redis had lost a partition's state; rebuilt from MySQL", "partition", r.Partition, "result", r.String())
			}
		}
	}
	nofile, err := api.RaiseFileLimit()
	if err != nil {
		log.Warn("could not raise the open file limit", "err", err)
	}
	lim, err := limits(cmd, nofile)
	if err != nil {
		return err
	}
	if a := cmd.String("debug-addr"); a != "" {
		d, err := startDebug(a, cmd.String("addr"), log)
		if err != nil {
			return err
		}
		defer d.stop()
	}
	tcp, err := net.Listen("tcp", cmd.String("addr"))
	if err != nil {
		return err
	}
	// Out of descriptors, accept fails; the listener waits and retries
	// rather than letting Serve return and the process exit.
	ln := &api.RetryListener{Listener: tcp, Logger: log}
	// Claimed only now, so a start that fails earlier (a crash loop) takes
	// no number; a crashed instance's lease expires by itself.
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s:%d:%s", host, os.Getpid(), ln.Addr())
	// The settler's consumer name is the same instance name: host and pid
	// alone would make two instances in one process (tests) one consumer,
	// each taking the other's pending entries for its own.
	settler.Consumer = owner
	lease, err := settle.ClaimNode(ctx, db, owner, settle.DefaultNodeTTL)
	if err != nil {
		ln.Close()
		return err
	}
	lease.Logger = log
	ids.Hold(lease.Node(), lease.Until())
	leaseCtx, stopLease := context.WithCancel(context.Background())
	leaseDone := make(chan struct{})
	go func() {
		defer close(leaseDone)
		lease.Keep(leaseCtx, ids)
	}()
	// Released last, once no request can take an id.
	defer func() { stopLease(); <-leaseDone }()
	ch, err := openChannels(cmd, ln.Addr().String(), cmd.Bool("dev"), log)
	if err != nil {
		ln.Close()
		return err
	}
	defer ch.close()
	payments := settle.NewPayments(books, ch.on.Providers())
	payments.Logger = log
	payments.Metrics = settler.Metrics
	defer payments.Close()
	srv := &api.Server{Engine: eng, Books: books, Auth: auth, Logger: log, Registry: reg,
		Payments: payments, Channels: ch.on, Settler: settler,
		MaxConns: lim.maxConns, MaxConnsPerIP: lim.maxConnsPerIP, IdleTimeout: lim.idle,
		GrabLimit: lim.grab, IPLimit: lim.ip}
	if ch.login != nil { // a nil *wechat.Login in the interface would not read as off
		srv.WeChatLogin = ch.login
	}
	if ch.messenger != nil && ch.paidTemplate != "" {
		msgs := pay.NewPaidMessages(ch.messenger, books, ch.paidTemplate, log)
		defer msgs.Close()
		payments.OnPaid = msgs.Paid
	}
	hs := srv.HTTPServer()
	log.Info("flashgrab serving", "addr", ln.Addr().String(), "partitions", ks.Partitions, "id_node", lease.Node(),
		"durability", string(mode),
		"open_file_limit", nofile, "max_conns", lim.maxConns, "max_conns_per_ip", lim.maxConnsPerIP)

	sweeper := settle.NewSweeper(eng, books, payments)
	if cmd.Duration("packet-grace") <= 0 {
		return fmt.Errorf("--packet-grace %v: must be positive", cmd.Duration("packet-grace"))
	}
	sweeper.Grace = cmd.Duration("packet-grace")
	sweeper.Logger = log

	settleCtx, stopSettler := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		settler.Run(settleCtx)
	}()
	go func() {
		defer wg.Done()
		rebuilder.Run(settleCtx)
	}()
	go func() {
		defer wg.Done()
		sweeper.Run(settleCtx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	// Stop accepting, let in-flight requests finish, then let the settler
	// commit and acknowledge what it holds.
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if e := hs.ShutdownWithContext(shutCtx); e != nil {
		log.Warn("http shutdown", "err", e)
	}
	stopSettler()
	wg.Wait()
	log.Info("stopped")
	return err
}
