package engine

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// cmdCounter is a go-redis hook counting the commands sent, by name.
type cmdCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *cmdCounter) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	for _, cmd := range cmds {
		c.n[cmd.Name()]++
	}
}

// take returns the counts since the last take.
func (c *cmdCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = nil
	return n
}

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add(cmds...)
		return next(ctx, cmds)
	}
}

// TestGrabOfMissingSale (issue 11): a sale's head keeps what the engine
// knows of it. 200 concurrent grabs of a sale that does not exist answer
// not found for one read of the sale and no script call; a sale created
// afterwards through this engine (unsharded or sharded) is grabbable at
// once, one created through another instance once absentHold ends (on a
// controlled clock); a missing sale of a partition that lost its state
// answers ErrRebuilding, as the grab script does, never not found.
func TestGrabOfMissingSale(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ks := Keyspace{Prefix: prefix, Partitions: 16}
	e, err := New(ctx, Config{Redis: rdb, Keys: ks, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	other, err := New(ctx, Config{Redis: rdb, Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	var calls cmdCounter
	rdb.AddHook(&calls)
	grab := func(sale, user string) (flashgrab.GrabResult, error) {
		return e.Grab(ctx, flashgrab.GrabRequest{SaleID: sale, UserID: user, Qty: 1})
	}

	// A flood: the first grab reads the sale and finds it absent, every
	// other one (concurrent or later, within the hold) answers from memory.
	calls.take()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := grab("ghost", "u"+strconv.Itoa(i)); !errors.Is(err, flashgrab.ErrNotFound) {
				t.Errorf("grab of a missing sale: %v, want ErrNotFound", err)
			}
		}()
	}
	wg.Wait()
	got := calls.take()
	if got["hmget"] != 1 || got["evalsha"]+got["eval"] != 0 {
		t.Fatalf("200 grabs of a missing sale sent %v, want one HMGET and no script call", got)
	}
	for i := range 50 {
		if _, err := grab("ghost", "v"+strconv.Itoa(i)); !errors.Is(err, flashgrab.ErrNotFound) {
			t.Fatalf("grab of a missing sale: %v, want ErrNotFound", err)
		}
	}
	if got := calls.take(); len(got) != 0 {
		t.Fatalf("grabs of a sale held absent sent %v, want nothing", got)
	}

	// Created through this engine: grabbable at once, held or not.
	if _, err := e.CreateSale(ctx, openSaleOf("ghost", 5)); err != nil {
		t.Fatal(err)
	}
	if res, err := grab("ghost", "w"); err != nil || res.Qty != 1 {
		t.Fatalf("grab right after the create: %+v %v", res, err)
	}
	if _, err := grab("sharded", "w"); !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("grab of a missing sale: %v, want ErrNotFound", err)
	}
	if _, err := e.CreateSale(ctx, shardedSale("sharded", 6, 1, 3)); err != nil {
		t.Fatal(err)
	}
	l, err := e.saleLayout(ctx, e.saleHead("sharded"), "sharded")
	if err != nil || l == unsharded || len(l.parts) != 3 {
		t.Fatalf("layout of the sharded sale created after a miss: %v %v", l, err)
	}
	for i := range 6 {
		u := "s" + strconv.Itoa(i)
		res, err := grab("sharded", u)
		if err != nil {
			t.Fatalf("grab %d of the sharded sale: %v", i, err)
		}
		// Won on the user's home shard: the layout, not the sale's own
		// partition, routed it.
		if p := l.parts[l.home(u)]; res.OrderID[len(res.OrderID)-len(strconv.Itoa(p))-1:] != "-"+strconv.Itoa(p) {
			t.Fatalf("order %s of user %s, want one of its home shard's partition %d", res.OrderID, u, p)
		}
	}
	if _, err := grab("sharded", "s9"); !errors.Is(err, flashgrab.ErrSoldOut) {
		t.Fatalf("grab past the sharded sale's stock: %v, want sold out", err)
	}

	// Created through another instance while this one holds it absent:
	// not found until the hold ends, then grabbable.
	if _, err := grab("later", "x"); !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("grab of a missing sale: %v, want ErrNotFound", err)
	}
	if _, err := other.CreateSale(ctx, openSaleOf("later", 5)); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(absentHold) - 1)
	if _, err := grab("later", "x"); !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("grab within the hold: %v, want ErrNotFound (from memory)", err)
	}
	now.Add(1)
	if res, err := grab("later", "x"); err != nil || res.Qty != 1 {
		t.Fatalf("grab once the hold ended: %+v %v", res, err)
	}

	// A partition without its marker: rebuilding, never held as absent.
	var fenced string
	for i := 0; fenced == ""; i++ {
		if id := "f" + strconv.Itoa(i); ks.Partition(id) != ks.Partition("ghost") {
			fenced = id
		}
	}
	if err := rdb.Del(ctx, ks.Epoch(ks.Partition(fenced))).Err(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := grab(fenced, "y"); !errors.Is(err, flashgrab.ErrRebuilding) {
			t.Fatalf("grab of a missing sale on a fenced partition: %v, want ErrRebuilding", err)
		}
	}
}

func openSaleOf(id string, stock int64) flashgrab.Sale {
	now := time.Now()
	return flashgrab.Sale{ID: id, MerchantID: "m1", PriceCents: 100, Stock: stock, PerUserLimit: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
}
