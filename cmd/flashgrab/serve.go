package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/flashgrab/flashgrab/settle"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the HTTP API and the settler",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Sources: cli.EnvVars("FLASHGRAB_ADDR"), Usage: "listen address"},
			redisFlag, mysqlFlag, partitionsFlag, prefixFlag, secretFlag,
			&cli.BoolFlag{Name: "dev", Usage: "development mode: make a JWT secret when none is set and print an admin token; sandbox payments"},
			&cli.IntFlag{Name: "settle-workers", Value: 8, Sources: cli.EnvVars("FLASHGRAB_SETTLE_WORKERS"), Usage: "concurrent MySQL batches (ants pool size)"},
			&cli.DurationFlag{Name: "order-ttl", Value: 15 * time.Minute, Sources: cli.EnvVars("FLASHGRAB_ORDER_TTL"), Usage: "unpaid orders expire after this"},
			&cli.DurationFlag{Name: "retention", Value: engine.DefaultRetention, Sources: cli.EnvVars("FLASHGRAB_RETENTION"),
				Usage: "how long Redis keeps order records and closed red packets (MySQL keeps them for good); must exceed --order-ttl"},
		}, paymentFlags()...),
		Action: serve,
	}
}

func serve(ctx context.Context, cmd *cli.Command) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ks, err := keyspace(cmd)
	if err != nil {
		return err
	}
	secret := cmd.String("jwt-secret")
	auth := api.NewAuth([]byte(secret))
	if secret == "" {
		if !cmd.Bool("dev") {
			return errors.New("no JWT secret: set FLASHGRAB_JWT_SECRET (or run with --dev)")
		}
		var b [32]byte
		rand.Read(b[:])
		auth.Secret = []byte(hex.EncodeToString(b[:]))
		tok, err := auth.Mint("admin", true, 24*time.Hour)
		if err != nil {
			return err
		}
		fmt.Printf("dev mode: generated a JWT secret for this run.\n  FLASHGRAB_JWT_SECRET=%s\n  admin token (24h): %s\n", auth.Secret, tok)
	}

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
	eng, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: ks, Retention: cmd.Duration("retention"), IDs: ids})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pool, err := ants.NewPool(int(cmd.Int("settle-workers")))
	if err != nil {
		return err
	}
	defer pool.Release()
	books := &settle.Books{DB: db, OrderTTL: cmd.Duration("order-ttl")}
	settler := &settle.Settler{Redis: srdb, DB: db, Books: books, Keys: ks, Pool: pool, Logger: log,
		Metrics: settle.NewMetrics(reg)}
	ln, err := net.Listen("tcp", cmd.String("addr"))
	if err != nil {
		return err
	}
	// Claimed only now, so a start that fails earlier (a crash loop) takes
	// no number; a crashed instance's lease expires by itself.
	host, _ := os.Hostname()
	lease, err := settle.ClaimNode(ctx, db, fmt.Sprintf("%s:%d:%s", host, os.Getpid(), ln.Addr()), settle.DefaultNodeTTL)
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
	payments := &settle.Payments{Books: books, Providers: ch.providers, Logger: log, Metrics: settler.Metrics}
	defer payments.Close()
	srv := &api.Server{Engine: eng, Books: books, Auth: auth, Logger: log, Registry: reg,
		Payments: payments, Alipay: ch.alipay, WeChat: ch.wechat}
	hs := srv.HTTPServer()
	log.Info("flashgrab serving", "addr", ln.Addr().String(), "partitions", ks.Partitions, "id_node", lease.Node())

	sweeper := &settle.Sweeper{Engine: eng, Books: books, Payments: payments, Logger: log}

	settleCtx, stopSettler := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		settler.Run(settleCtx)
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
