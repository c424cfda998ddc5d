package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestWrapRedisReplies: the replies with which Redis says "not now" are
// ErrUnavailable (503, retry); any other reply (a script's error) passes
// through as it is. The replies come from the real server, as a script's
// error_reply, so go-redis parses them as it parses its own.
func TestWrapRedisReplies(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := context.Background()
	for reply, unavailable := range map[string]bool{
		"LOADING Redis is loading the dataset in memory":          true,
		"CLUSTERDOWN The cluster is down":                         true,
		"TRYAGAIN Multiple keys request during rehashing of slot": true,
		"MASTERDOWN Link with MASTER is down":                     true,
		"READONLY You can't write against a read only replica.":   true,
		"ERR bad_qty": false,
		"WRONGTYPE Operation against a key holding the wrong kind":   false,
		"NOSCRIPT No matching script. Please use EVAL.":              false,
		"BUSY Redis is busy running a script. You can only call ...": false,
	} {
		err := rdb.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, reply).Err()
		if err == nil {
			t.Fatalf("%q: the script's error reply came back as no error", reply)
		}
		got := wrapRedis(err)
		if errors.Is(got, flashgrab.ErrUnavailable) != unavailable {
			t.Errorf("%q: wrapRedis gave %v, want unavailable=%v", reply, got, unavailable)
		}
		if !unavailable && got != err {
			t.Errorf("%q: wrapRedis gave %v, want the reply unchanged", reply, got)
		}
	}
	if got := wrapRedis(errors.New("dial tcp 127.0.0.1:1: connect: connection refused")); !errors.Is(got, flashgrab.ErrUnavailable) {
		t.Errorf("a transport error: wrapRedis gave %v, want ErrUnavailable", got)
	}
}
