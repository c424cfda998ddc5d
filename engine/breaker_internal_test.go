package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestBreakersPerNode: breakers are per node address, as for the node
// clients of a Redis Cluster. Two node clients, each through its own proxy
// in front of Redis, get one breaker each from the same registry; cutting
// one node opens its breaker only: the other node keeps answering and its
// breaker stays closed, and the cut one recovers alone once back.
func TestBreakersPerNode(t *testing.T) {
	ctx := context.Background()
	bg := newBackground()
	t.Cleanup(bg.close)
	bs := newBreakers(bg)
	var nodes [2]*redis.Client
	var proxies [2]*testenv.Proxy
	for i := range nodes {
		proxies[i] = testenv.NewProxy(t, testenv.RedisAddr())
		nodes[i] = redis.NewClient(&redis.Options{Addr: proxies[i].Addr(), DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1})
		t.Cleanup(func() { nodes[i].Close() })
		bs.watch(ctx, nodes[i])
		bs.watch(ctx, nodes[i]) // a second watch adds no second hook
	}
	if len(bs.byAddr) != 2 {
		t.Fatalf("%d breakers for 2 nodes, want 2", len(bs.byAddr))
	}
	proxies[0].Down()
	for i := range breakerFailures {
		if err := nodes[0].Ping(ctx).Err(); err == nil {
			t.Fatalf("ping %d of the cut node answered", i)
		}
	}
	if !bs.isOpen(proxies[0].Addr()) {
		t.Fatalf("breaker of the cut node still closed after %d failed pings", breakerFailures)
	}
	err := nodes[0].Ping(ctx).Err()
	if !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("ping of the cut node with its breaker open: %v, want ErrUnavailable", err)
	}
	for i := range 10 {
		if err := nodes[1].Ping(ctx).Err(); err != nil {
			t.Fatalf("ping %d of the other node: %v", i, err)
		}
	}
	if bs.isOpen(proxies[1].Addr()) {
		t.Fatal("breaker of the node that answers is open")
	}
	proxies[0].Up()
	testenv.Eventually(t, time.Second, func() (bool, string) {
		err := nodes[0].Ping(ctx).Err()
		return err == nil, fmt.Sprintf("ping of the cut node after it returned: %v", err)
	})
	if bs.anyOpen() {
		t.Fatal("a breaker is still open after both nodes answer")
	}
}

// TestConnFailure: what counts towards opening a breaker.
func TestConnFailure(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := context.Background()
	reply := rdb.Eval(ctx, "return redis.error_reply('CLUSTERDOWN The cluster is down')", nil).Err()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{redis.Nil, false},
		{reply, false},
		{fmt.Errorf("wrapped: %w", reply), false},
		{redis.ErrPoolTimeout, true},
		{fmt.Errorf("read: %w", errors.Join(errors.New("x"), context.DeadlineExceeded)), false},
		{rdb.Do(canceled(), "ping").Err(), false},
	} {
		if got := connFailure(c.err); got != c.want {
			t.Errorf("connFailure(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer dead.Close()
	if err := dead.Ping(ctx).Err(); !connFailure(err) {
		t.Errorf("connFailure(%v) of a refused dial = false, want true", err)
	}
}

func canceled() context.Context {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	return c
}
