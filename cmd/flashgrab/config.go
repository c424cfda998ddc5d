package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/settle"
)

// Flags shared by the commands that talk to Redis and MySQL; each falls back
// to its FLASHGRAB_* environment variable.
var (
	redisFlag = &cli.StringFlag{Name: "redis-addrs", Value: "127.0.0.1:6379", Sources: cli.EnvVars("FLASHGRAB_REDIS_ADDRS"),
		Usage: "Redis address; several comma-separated addresses mean a Redis Cluster"}
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

// openRedis connects with short timeouts: a grab must fail fast (503) when
// Redis is gone, never hang. poolSize 0 keeps go-redis's default.
func openRedis(ctx context.Context, addrs string, poolSize int) (redis.UniversalClient, error) {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:        strings.Split(addrs, ","),
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		PoolTimeout:  time.Second,
		MaxRetries:   1,
		PoolSize:     poolSize,
		// A request's deadline bounds its reads: without it a grab with
		// 100 ms left would wait out the whole ReadTimeout.
		ContextTimeoutEnabled: true,
	})
	c, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(c).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", addrs, err)
	}
	return rdb, nil
}

// openMySQL creates the database and schema when missing.
func openMySQL(ctx context.Context, dsn string) (*sql.DB, error) {
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
	if err := settle.Migrate(c, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "create the MySQL database and schema when missing",
		Flags: []cli.Flag{mysqlFlag},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			db, err := openMySQL(ctx, cmd.String("mysql-dsn"))
			if err != nil {
				return err
			}
			fmt.Println("schema is up to date")
			return db.Close()
		},
	}
}
