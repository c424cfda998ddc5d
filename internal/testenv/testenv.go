// Package testenv gives tests their own corner of the real Redis and MySQL
// servers: a random key prefix, a fresh database, both removed afterwards.
// A missing server fails the test rather than skipping it: these tests are the
// proof of the invariants and must not pass vacuously. The rest of what tests
// share lives here too: a proxy to cut either server (RedisBehindProxy,
// MySQLBehindProxy), in-process HTTP servers (Serve), throwaway redis-server
// processes a test may kill or make replicas of (StartRedisServer), and
// Eventually, the one way to wait for an asynchronous outcome.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

// RedisAddr is the Redis the tests use: $FLASHGRAB_TEST_REDIS or 127.0.0.1:6379.
func RedisAddr() string {
	if a := os.Getenv("FLASHGRAB_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// MySQLDSN is the server the tests use, without a database:
// $FLASHGRAB_TEST_MYSQL or root@tcp(127.0.0.1:3306)/.
func MySQLDSN() string {
	if d := os.Getenv("FLASHGRAB_TEST_MYSQL"); d != "" {
		return d
	}
	return "root@tcp(127.0.0.1:3306)/"
}

// Name returns a fresh random name with prefix, safe as a key prefix or database name.
func Name(prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// Redis returns a client and a key prefix of the test's own; every key under
// the prefix is deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	// ContextTimeoutEnabled as in cmd/flashgrab: a request's deadline bounds
	// its reads, not only go-redis's ReadTimeout.
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr(), PoolSize: 64, ContextTimeoutEnabled: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis at %s does not answer (start it, or set FLASHGRAB_TEST_REDIS): %v", RedisAddr(), err)
	}
	prefix := Name("fgt")
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return rdb, prefix
}

// MySQL creates a database of the test's own and returns a handle on it and
// its DSN (with parseTime); the database is dropped when the test ends.
func MySQL(t testing.TB) (*sql.DB, string) {
	t.Helper()
	cfg, err := mysql.ParseDSN(MySQLDSN())
	if err != nil {
		t.Fatalf("testenv: bad MySQL DSN %q: %v", MySQLDSN(), err)
	}
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	name := Name("fgt_")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: MySQL at %s: create database: %v (start MariaDB, or set FLASHGRAB_TEST_MYSQL)", cfg.Addr, err)
	}
	cfg.DBName = name
	cfg.ParseTime = true
	cfg.InterpolateParams = true // as cmd/flashgrab opens it
	dsn := cfg.FormatDSN()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	t.Cleanup(func() {
		db.Close()
		admin.Exec("DROP DATABASE IF EXISTS " + name)
		admin.Close()
	})
	return db, dsn
}
