package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

// Flags shared by the commands that talk to Redis and MySQL; each falls back
// to its FLASHGRAB_* environment variable.
var (
	redisFlag = &cli.StringFlag{Name: "redis-addrs", Value: "127.0.0.1:6379", Sources: cli.EnvVars("FLASHGRAB_REDIS_ADDRS"),
		Usage: "Redis address; one node of a Redis Cluster is enough (flashgrab asks it), or several comma-separated cluster nodes"}
	mysqlFlag = &cli.StringFlag{Name: "mysql-dsn", Value: "root@tcp(127.0.0.1:3306)/flashgrab?parseTime=true",
		Sources: cli.EnvVars("FLASHGRAB_MYSQL_DSN"), Usage: "MySQL/MariaDB DSN (go-sql-driver format)"}
	partitionsFlag = &cli.IntFlag{Name: "partitions", Value: engine.DefaultPartitions, Sources: cli.EnvVars("FLASHGRAB_PARTITIONS"),
		Usage: "number of partitions (fixed per deployment)"}
	prefixFlag = &cli.StringFlag{Name: "key-prefix", Value: "fg", Sources: cli.EnvVars("FLASHGRAB_KEY_PREFIX"),
		Usage: "prefix of every Redis key"}
	secretFlag = &cli.StringFlag{Name: "jwt-secret", Sources: cli.EnvVars("FLASHGRAB_JWT_SECRET"),
		Usage: "HS256 secret for user and admin tokens"}
)

func keyspace(cmd *cli.Command) (engine.Keyspace, error) {
	p := int(cmd.Int("partitions"))
	if p < 1 || p > 16384 {
		return engine.Keyspace{}, fmt.Errorf("--partitions %d: must be in [1, 16384]", p)
	}
	return engine.Keyspace{Prefix: cmd.String("key-prefix"), Partitions: p}, nil
}

// durabilityFlags choose what a won grab's 200 promises (engine.Durability).
func durabilityFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "durability", Sources: cli.EnvVars("FLASHGRAB_DURABILITY"),
			Usage: "none | aof | replica: what a won grab's 200 promises (default aof; none with --dev); start-up warns when Redis cannot honour it"},
		&cli.DurationFlag{Name: "wait-timeout", Value: engine.DefaultWaitTimeout, Sources: cli.EnvVars("FLASHGRAB_WAIT_TIMEOUT"),
			Usage: "--durability replica: how long a batch waits for a replica's acknowledgement before its grabs answer 503"},
	}
}

// durability reads --durability. Unset, it is aof: a deployment's Redis
// (deploy/redis/flashgrab.conf) runs with AOF, and the start-up check says
// so loudly when it does not. --dev defaults to none: dev mode promises no
// durability (sandbox payments, throwaway data), and a warning on every dev
// machine's stock Redis would teach people to ignore it.
func durability(cmd *cli.Command) (engine.Durability, error) {
	s := cmd.String("durability")
	if s == "" {
		if cmd.Bool("dev") {
			return engine.DurabilityNone, nil
		}
		return engine.DurabilityAOF, nil
	}
	d, err := engine.ParseDurability(s)
	if err != nil {
		return "", fmt.Errorf("--durability: %w", err)
	}
	return d, nil
}

// Redis client timeouts: a grab must fail fast (503) when Redis is gone,
// never hang. A dead node costs one dial of at most redisDialTimeout per call
// until the engine's breaker opens (after 3 failures), then nothing: go-redis's
// default of 5 dial attempts 100 ms apart, times a retry, made each 503 take
// ~1.6 s (issue 9). The engine's breaker probe is what notices a node is back.
const (
	redisDialTimeout = 150 * time.Millisecond
	redisPoolTimeout = 500 * time.Millisecond
)

// openRedis connects with short timeouts and no dial retries. poolSize 0
// keeps go-redis's default. It is the one place that decides what kind of
// client an address list gives: several addresses are a Redis Cluster; one
// address is asked whether it is a cluster node (INFO cluster), so that one
// seed of a cluster is enough. A plain client on a cluster node would reach
// only that node's slots, and every other partition would fail with MOVED.
func openRedis(ctx context.Context, addrs string, poolSize int) (redis.UniversalClient, error) {
	var list []string
	for a := range strings.SplitSeq(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			list = append(list, a)
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("redis addresses %q: none given", addrs)
	}
	opts := &redis.UniversalOptions{
		Addrs:         list,
		DialTimeout:   redisDialTimeout,
		DialerRetries: 1,
		ReadTimeout:   time.Second,
		WriteTimeout:  time.Second,
		PoolTimeout:   redisPoolTimeout,
		// One retry heals a pooled connection Redis closed (a restart, an
		// idle timeout); a dead node then costs two calls, not ten dials.
		MaxRetries: 1,
		PoolSize:   poolSize,
		// A request's deadline bounds its reads: without it a grab with
		// 100 ms left would wait out the whole ReadTimeout.
		ContextTimeoutEnabled: true,
	}
	c, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if len(list) == 1 {
		cluster, err := clusterEnabled(c, opts)
		if err != nil {
			return nil, fmt.Errorf("redis %s: %w", addrs, err)
		}
		opts.IsClusterMode = cluster
	}
	rdb := redis.NewUniversalClient(opts)
	if err := rdb.Ping(c).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", addrs, err)
	}
	return rdb, nil
}

// clusterEnabled asks the one node of opts whether it runs in cluster mode:
// INFO's cluster section says cluster_enabled:1. A server that refuses INFO
// (renamed away by its operator) is asked CLUSTER INFO, which only a cluster
// node answers.
func clusterEnabled(ctx context.Context, opts *redis.UniversalOptions) (bool, error) {
	node := redis.NewClient(opts.Simple())
	defer node.Close()
	info, err := node.Info(ctx, "cluster").Result()
	if err == nil {
		return strings.Contains(info, "cluster_enabled:1"), nil
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		return false, fmt.Errorf("ask whether it is a cluster node: %w", err)
	}
	if err := node.ClusterInfo(ctx).Err(); err != nil {
		if errors.As(err, &reply) {
			return false, nil
		}
		return false, fmt.Errorf("ask whether it is a cluster node: %w", err)
	}
	return true, nil
}

// stores is what a one-shot command (reconcile, rebuild) works on: the key
// layout, Redis and MySQL, from the command's flags.
type stores struct {
	keys  engine.Keyspace
	redis redis.UniversalClient
	db    *sql.DB
}

// openStores opens the stores named by cmd's redis, mysql, partitions and
// prefix flags; Close releases them.
func openStores(ctx context.Context, cmd *cli.Command) (*stores, error) {
	ks, err := keyspace(cmd)
	if err != nil {
		return nil, err
	}
	rdb, err := openRedis(ctx, cmd.String("redis-addrs"), 0)
	if err != nil {
		return nil, err
	}
	db, err := openMySQL(ctx, cmd.String("mysql-dsn"))
	if err != nil {
		rdb.Close()
		return nil, err
	}
	return &stores{keys: ks, redis: rdb, db: db}, nil
}

// Close closes the Redis client and the MySQL pool.
func (s *stores) Close() {
	s.redis.Close()
	s.db.Close()
}

// openMySQL connects to MySQL and applies pending migrations (see
// migrate.go): serve and reconcile start on an up-to-date schema.
func openMySQL(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := connectMySQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	// Long enough to wait out another instance applying a small migration;
	// a long one is `flashgrab migrate`'s, run before the rollout.
	c, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := settle.Migrate(c, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// connectMySQL creates the database when missing and opens a pool on it.
func connectMySQL(ctx context.Context, dsn string) (*sql.DB, error) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := settle.CreateDatabase(c, dsn); err != nil {
		return nil, err
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse MySQL DSN: %w", err)
	}
	// Settlement sends many statements with arguments; interpolating them
	// client-side saves a prepare and a close round trip each.
	cfg.InterpolateParams = true
	cfg.ParseTime = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	db.SetConnMaxLifetime(5 * time.Minute)
	return db, nil
}

// limitFlags are serve's defences against one client taking the server
// down (issue 9): connection caps, the idle timeout and rate limits.
func limitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "max-conns", Value: 50_000, Sources: cli.EnvVars("FLASHGRAB_MAX_CONNS"),
			Usage: "connections served at once; more are answered 503 and closed (lowered to fit the open file limit)"},
		&cli.IntFlag{Name: "max-conns-per-ip", Value: 1_000, Sources: cli.EnvVars("FLASHGRAB_MAX_CONNS_PER_IP"),
			Usage: "connections one client address may hold; more are answered 429 and closed (0: no cap)"},
		&cli.DurationFlag{Name: "idle-timeout", Value: 60 * time.Second, Sources: cli.EnvVars("FLASHGRAB_IDLE_TIMEOUT"),
			Usage: "close a keep-alive connection idle this long"},
		&cli.FloatFlag{Name: "grab-rate", Value: 20, Sources: cli.EnvVars("FLASHGRAB_GRAB_RATE"),
			Usage: "grabs a second one user may make, sales and packets together; beyond it 429 rate_limited (0: off)"},
		&cli.IntFlag{Name: "grab-burst", Value: 40, Sources: cli.EnvVars("FLASHGRAB_GRAB_BURST"),
			Usage: "grabs one user may make at once before --grab-rate applies"},
		&cli.FloatFlag{Name: "ip-rate", Value: 200, Sources: cli.EnvVars("FLASHGRAB_IP_RATE"),
			Usage: "requests a second one client address may make to the routes that need no token (0: off)"},
		&cli.IntFlag{Name: "ip-burst", Value: 400, Sources: cli.EnvVars("FLASHGRAB_IP_BURST"),
			Usage: "requests one address may make at once before --ip-rate applies"},
	}
}

// serveLimits are the values of limitFlags, checked.
type serveLimits struct {
	maxConns, maxConnsPerIP int
	idle                    time.Duration
	grab, ip                api.RateLimit
}

// fdReserve is how many descriptors serve keeps beyond its connections: Redis
// and MySQL pools, the settler's clients, provider calls, files.
const fdReserve = 1024

// limits reads and checks limitFlags. --max-conns above what the open file
// limit nofile allows (less fdReserve) is lowered to it: past it accepts
// would fail with EMFILE anyway, while the cap answers 503 cleanly.
func limits(cmd *cli.Command, nofile uint64) (serveLimits, error) {
	l := serveLimits{maxConns: int(cmd.Int("max-conns")), maxConnsPerIP: int(cmd.Int("max-conns-per-ip")),
		idle: cmd.Duration("idle-timeout"),
		grab: api.RateLimit{Rate: cmd.Float("grab-rate"), Burst: int(cmd.Int("grab-burst"))},
		ip:   api.RateLimit{Rate: cmd.Float("ip-rate"), Burst: int(cmd.Int("ip-burst"))}}
	switch {
	case l.maxConns < 1:
		return l, fmt.Errorf("--max-conns %d: must be positive", l.maxConns)
	case l.maxConnsPerIP < 0:
		return l, fmt.Errorf("--max-conns-per-ip %d: must be 0 (no cap) or positive", l.maxConnsPerIP)
	case l.idle <= 0:
		return l, fmt.Errorf("--idle-timeout %v: must be positive", l.idle)
	case l.grab.Rate < 0 || l.grab.Rate > 0 && l.grab.Burst < 1:
		return l, fmt.Errorf("--grab-rate %v --grab-burst %d: the rate must be 0 (off) or positive, with a positive burst", l.grab.Rate, l.grab.Burst)
	case l.ip.Rate < 0 || l.ip.Rate > 0 && l.ip.Burst < 1:
		return l, fmt.Errorf("--ip-rate %v --ip-burst %d: the rate must be 0 (off) or positive, with a positive burst", l.ip.Rate, l.ip.Burst)
	}
	if nofile > fdReserve && uint64(l.maxConns) > nofile-fdReserve {
		l.maxConns = int(nofile - fdReserve)
	}
	return l, nil
}
