package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestRedisClientFailsFast: serve's Redis client does not retry dials
// (go-redis's default, 5 attempts 100 ms apart, times a command retry, made
// each 503 take ~1.6 s with Redis down: issue 9), and bounds a dial at 200 ms.
func TestRedisClientFailsFast(t *testing.T) {
	rdb, err := openRedis(context.Background(), testenv.RedisAddr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	o := rdb.(*redis.Client).Options()
	if o.DialerRetries != 1 || o.DialTimeout > 200*time.Millisecond || o.MaxRetries > 1 || o.PoolTimeout > 500*time.Millisecond {
		t.Fatalf("dial attempts %d, dial timeout %v, retries %d, pool timeout %v: want 1, at most 200 ms, at most 1, at most 500 ms",
			o.DialerRetries, o.DialTimeout, o.MaxRetries, o.PoolTimeout)
	}
}
