package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// waitCounter is a go-redis hook counting the WAIT commands sent.
type waitCounter struct{ n atomic.Int64 }

func (w *waitCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *waitCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "wait" {
			w.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (w *waitCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "wait" {
				w.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// grabAll grabs sale for users u<from>..u<to-1> at once and returns each error.
func grabAll(e *engine.Engine, sale string, from, to int) []error {
	errs := make([]error, to-from)
	var wg sync.WaitGroup
	for i := from; i < to; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i-from] = e.Grab(context.Background(), flashgrab.GrabRequest{SaleID: sale, UserID: fmt.Sprintf("u%d", i), Qty: 1})
		}()
	}
	wg.Wait()
	return errs
}

// TestReplicaDurability is issue 9 item 1's replica mode against a primary
// and a replica the test starts. With the replica up, 200 concurrent grabs
// all win, one WAIT follows every round trip (not every grab), and the
// replica holds every settlement event; a red-packet grab wins too. With the
// replica killed, 50 more grabs all fail with ErrUnavailable (503), none
// answered as won, yet all 50 wins are in the primary's stream: nothing lost,
// nothing answered without a replica's acknowledgement. A packet grab, a
// packet publish and a sale create then fail the same way (the packet grab's
// share stands in its stream).
func TestReplicaDurability(t *testing.T) {
	primary := testenv.StartRedisServer(t)
	replica := testenv.StartRedisServer(t, "--replicaof", "127.0.0.1", fmt.Sprint(primary.Port))
	rdb, rrep := primary.Client(t), replica.Client(t)
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		info := rdb.Info(ctx, "replication").Val()
		return strings.Contains(info, ",state=online,"), "the replica is not online at the primary"
	})
	if w := engine.DurabilityWarnings(ctx, rdb, engine.DurabilityReplica); w != nil {
		t.Fatalf("warnings with a replica connected: %q", w)
	}

	waits := &waitCounter{}
	rdb.AddHook(waits)
	e, err := engine.New(ctx, engine.Config{Redis: rdb, Keys: engine.Keyspace{Prefix: "fg", Partitions: 4},
		Durability: engine.DurabilityReplica, WaitTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, err := e.CreateSale(ctx, openSale("dur", 1000, 1)); err != nil {
		t.Fatal(err)
	}
	stream := e.Keys().Events(e.Keys().Partition("dur"))
	base := streamEvents(t, rdb, stream)
	waits.n.Store(0)
	before := e.BatchStats()

	for i, err := range grabAll(e, "dur", 0, 200) {
		if err != nil {
			t.Fatalf("grab %d with the replica up: %v", i, err)
		}
	}
	st := e.BatchStats()
	if pipes := st.Pipelines - before.Pipelines; waits.n.Load() != pipes {
		t.Fatalf("%d WAITs for %d round trips, want one each", waits.n.Load(), pipes)
	}
	if n := streamEvents(t, rdb, stream); n != base+200 {
		t.Fatalf("primary's stream: %d events, want %d", n, base+200)
	}
	// WAIT returned only once the replica had these writes.
	if n := streamEvents(t, rrep, stream); n != base+200 {
		t.Fatalf("replica's stream: %d events, want %d", n, base+200)
	}

	pk := publish(t, e, 100, 2, flashgrab.ModeFixed)
	pstream := e.Keys().Events(e.Keys().Partition(pk.ID))
	if r, err := e.GrabPacket(ctx, pk.ID, "p1"); err != nil || r.AmountCents != 50 {
		t.Fatalf("packet grab with the replica up: %+v %v, want 50 fen", r, err)
	}
	pbase := streamEvents(t, rdb, pstream)

	replica.Kill()
	if _, err := e.GrabPacket(ctx, pk.ID, "p2"); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("packet grab with the replica dead: %v, want unavailable", err)
	}
	if n := streamEvents(t, rdb, pstream); n != pbase+1 {
		t.Fatalf("packet's stream after an unacknowledged grab: %d events, want %d", n, pbase+1)
	}
	pk2, err := e.NewPacket("sender", 100, 2, flashgrab.ModeFixed, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.PublishPacket(ctx, pk2); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("packet publish with the replica dead: %v, want unavailable", err)
	}
	// The packet may share the sale's partition, so count from here.
	base = streamEvents(t, rdb, stream)
	for i, err := range grabAll(e, "dur", 200, 250) {
		if !errors.Is(err, flashgrab.ErrUnavailable) {
			t.Fatalf("grab %d with the replica dead: %v, want unavailable", 200+i, err)
		}
	}
	if n := streamEvents(t, rdb, stream); n != base+50 {
		t.Fatalf("primary's stream after the replica died: %d events, want %d (the unacknowledged wins stand)", n, base+50)
	}
	s, err := e.Sale(ctx, "dur")
	if err != nil || s.Sold != 250 || s.Stock != 750 {
		t.Fatalf("sale: %+v %v, want 250 sold, 750 left", s, err)
	}
	if _, err := e.CreateSale(ctx, openSale("dur2", 10, 1)); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("create with the replica dead: %v, want unavailable", err)
	}
}

// TestDurabilityWarnings: the start-up check warns in aof mode against a
// Redis without AOF (or fsyncing every second), not against one with
// appendonly yes and appendfsync always; in replica mode, against a Redis
// with no replica; in none mode, never.
func TestDurabilityWarnings(t *testing.T) {
	ctx := context.Background()
	plain := testenv.StartRedisServer(t, "--appendonly", "no").Client(t)
	everysec := testenv.StartRedisServer(t, "--appendonly", "yes", "--appendfsync", "everysec").Client(t)
	aof := testenv.StartRedisServer(t, "--appendonly", "yes", "--appendfsync", "always").Client(t)
	for _, c := range []struct {
		name  string
		rdb   *redis.Client
		mode  engine.Durability
		warns int
	}{
		{"aof/no-aof", plain, engine.DurabilityAOF, 1},
		{"aof/everysec", everysec, engine.DurabilityAOF, 1},
		{"aof/always", aof, engine.DurabilityAOF, 0},
		{"replica/none-connected", aof, engine.DurabilityReplica, 1},
		{"none/no-aof", plain, engine.DurabilityNone, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if w := engine.DurabilityWarnings(ctx, c.rdb, c.mode); len(w) != c.warns {
				t.Fatalf("%d warnings %q, want %d", len(w), w, c.warns)
			}
		})
	}
}

// TestDurabilityConfig: an unknown mode, replica mode with a sub-millisecond
// WAIT (WAIT 1 0 blocks for ever) and replica mode on a cluster client are
// refused by New.
func TestDurabilityConfig(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ks := engine.Keyspace{Prefix: prefix, Partitions: 4}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{testenv.RedisAddr()}})
	defer cluster.Close()
	for _, cfg := range []engine.Config{
		{Redis: rdb, Keys: ks, Durability: "fsync"},
		{Redis: rdb, Keys: ks, Durability: engine.DurabilityReplica, WaitTimeout: time.Microsecond},
		{Redis: cluster, Keys: ks, Durability: engine.DurabilityReplica},
	} {
		if e, err := engine.New(context.Background(), cfg); err == nil {
			e.Close()
			t.Fatalf("New accepted durability %q, wait %v, %T", cfg.Durability, cfg.WaitTimeout, cfg.Redis)
		}
	}
	if _, err := engine.ParseDurability("always"); err == nil {
		t.Fatal(`ParseDurability accepted "always"`)
	}
}

// TestReplicaRepeatWaitsForTheWin: a grab won while the replica is stalled
// answers 503; its retry, sent on another connection that never wrote (a
// repeat writes nothing), must not be answered 200 before the replica has the
// win: WAIT alone would wait only for that connection's older offset, which
// the replica acknowledged long ago. Once the replica catches up, the retry
// answers the order as a repeat, and the replica holds its event.
func TestReplicaRepeatWaitsForTheWin(t *testing.T) {
	primary := testenv.StartRedisServer(t)
	replica := testenv.StartRedisServer(t, "--replicaof", "127.0.0.1", fmt.Sprint(primary.Port))
	ctx := context.Background()
	rdb, rrep := primary.Client(t), replica.Client(t)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return strings.Contains(rdb.Info(ctx, "replication").Val(), ",state=online,"), "the replica is not online at the primary"
	})
	// Two engines, two clients: the win and its retry go over different connections.
	// The WAIT timeout is long enough for a busy machine's replica to keep up
	// with the sale's create, and short enough for the stalled grabs to fail quickly.
	engines := make([]*engine.Engine, 2)
	for i := range engines {
		e, err := engine.New(ctx, engine.Config{Redis: primary.Client(t), Keys: engine.Keyspace{Prefix: "fg", Partitions: 4},
			Durability: engine.DurabilityReplica, WaitTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		engines[i] = e
	}
	if _, err := engines[0].CreateSale(ctx, openSale("rep", 10, 1)); err != nil {
		t.Fatal(err)
	}
	stream := engines[0].Keys().Events(engines[0].Keys().Partition("rep"))

	replica.Pause()
	paused := true
	defer func() {
		if paused {
			replica.Resume()
		}
	}()
	grab := flashgrab.GrabRequest{SaleID: "rep", UserID: "zoe", Qty: 1}
	if _, err := engines[0].Grab(ctx, grab); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("win with the replica stalled: %v, want unavailable", err)
	}
	if r, err := engines[1].Grab(ctx, grab); !errors.Is(err, flashgrab.ErrUnavailable) {
		t.Fatalf("retry on another connection with the replica stalled: %+v %v, want unavailable", r, err)
	}
	replica.Resume()
	paused = false
	want := rdb.XLen(ctx, stream).Val()
	var got flashgrab.GrabResult
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		var err error
		got, err = engines[1].Grab(ctx, grab)
		return err == nil, fmt.Sprintf("retry after the replica resumed: %v", err)
	})
	if !got.Repeat || got.OrderID == "" {
		t.Fatalf("retry: %+v, want the first order as a repeat", got)
	}
	if n := rrep.XLen(ctx, stream).Val(); n != want {
		t.Fatalf("replica's stream: %d entries, want %d", n, want)
	}
	if s, _ := engines[0].Sale(ctx, "rep"); s.Sold != 1 {
		t.Fatalf("sold %d, want 1", s.Sold)
	}
}

// streamEvents counts the events a partition stream holds (an entry of a
// grab batch carries several).
func streamEvents(t *testing.T, rdb *redis.Client, stream string) int64 {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, m := range msgs {
		evs, err := engine.ParseEntry(0, m)
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		n += int64(len(evs))
	}
	return n
}
