package api

import (
	"hash/maphash"
	"sync"
	"time"
)

// RateLimit is a token bucket: Rate tokens a second up to Burst. The zero
// value (Rate 0) turns the limit off.
type RateLimit struct {
	Rate  float64
	Burst int
}

// maxLimited bounds each limiter's map (a bucket is about 60 bytes with its
// key, so about 8 MiB in all). Past it an insertion drops refilled buckets (a
// full bucket holds nothing a fresh one would not) or, under a flood of
// distinct keys, an arbitrary one, whose key then starts over with a full
// burst.
const maxLimited = 1 << 17

const limiterShards = 32

// limiter keeps one token bucket per key (user id, client IP) in a bounded,
// sharded map. It is written by hand rather than with golang.org/x/time/rate:
// a bucket here is two numbers under the shard's lock, so allow allocates
// only when it meets a new key, and the map can drop refilled buckets, which
// a map of *rate.Limiter cannot see without a lock of each.
type limiter[K comparable] struct {
	rate     float64 // tokens a nanosecond
	burst    float64
	perShard int
	seed     maphash.Seed
	shards   [limiterShards]limiterShard[K]
}

type limiterShard[K comparable] struct {
	mu sync.Mutex
	m  map[K]bucket
	_  [40]byte // keep shards on separate cache lines
}

// bucket holds the tokens left at the last refill time.
type bucket struct {
	tokens float64
	at     int64 // unix nanoseconds
}

// newLimiter returns nil for a zero limit: allow on a nil limiter always
// admits.
func newLimiter[K comparable](l RateLimit, size int) *limiter[K] {
	if l.Rate <= 0 {
		return nil
	}
	burst := max(l.Burst, 1)
	lm := &limiter[K]{rate: l.Rate / 1e9, burst: float64(burst), perShard: max(size/limiterShards, 1), seed: maphash.MakeSeed()}
	for i := range lm.shards {
		lm.shards[i].m = map[K]bucket{}
	}
	return lm
}

// allow takes one token from key's bucket, reporting whether there was one.
func (lm *limiter[K]) allow(key K, now time.Time) bool {
	if lm == nil {
		return true
	}
	sh := &lm.shards[maphash.Comparable(lm.seed, key)%limiterShards]
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b, ok := sh.m[key]
	if !ok {
		if len(sh.m) >= lm.perShard {
			lm.evict(sh, t)
		}
		b = bucket{tokens: lm.burst, at: t}
	} else if t > b.at {
		b.tokens = min(lm.burst, b.tokens+float64(t-b.at)*lm.rate)
		b.at = t
	}
	if b.tokens < 1 {
		sh.m[key] = b
		return false
	}
	b.tokens--
	sh.m[key] = b
	return true
}

// evict makes room in a full shard from a sample of a few buckets (map
// order is random): the refilled ones among them go, or, when none has, the
// first. Sampling keeps an insertion's cost constant under a flood of
// distinct keys.
func (lm *limiter[K]) evict(sh *limiterShard[K], t int64) {
	const sample = 8
	var first K
	seen, dropped := 0, false
	for k, b := range sh.m {
		if seen == 0 {
			first = k
		}
		if b.tokens+float64(t-b.at)*lm.rate >= lm.burst {
			delete(sh.m, k)
			dropped = true
		}
		if seen++; seen == sample {
			break
		}
	}
	if !dropped {
		delete(sh.m, first)
	}
}
