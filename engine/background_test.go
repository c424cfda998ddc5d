package engine_test

import (
	"bytes"
	"context"
	"errors"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// stallStreamInfo makes XINFO STREAM (the first command of a sold-out mark's
// load) wait until its context ends, as a Redis that stopped answering does,
// and records how each call ended.
type stallStreamInfo struct {
	entered chan struct{}
	mu      sync.Mutex
	ended   []error
}

func (h *stallStreamInfo) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stallStreamInfo) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *stallStreamInfo) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "xinfo" {
			return next(ctx, cmd)
		}
		h.entered <- struct{}{}
		<-ctx.Done()
		h.mu.Lock()
		h.ended = append(h.ended, ctx.Err())
		h.mu.Unlock()
		cmd.SetErr(ctx.Err())
		return ctx.Err()
	}
}

// TestCloseStopsBackgroundWork: the sold-out mark's load, started by the
// grab that took the last unit, runs on a context Close cancels, and Close
// returns only after it ended: no engine goroutine is left. A second Close
// does nothing; grabs after Close are still decided by Redis.
func TestCloseStopsBackgroundWork(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	h := &stallStreamInfo{entered: make(chan struct{}, 1)}
	rdb.AddHook(h)
	if _, err := e.CreateSale(ctx, openSale("s1", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	<-h.entered // the load is under way, stalled
	e.Close()
	h.mu.Lock()
	ended := append([]error(nil), h.ended...)
	h.mu.Unlock()
	if len(ended) != 1 || !errors.Is(ended[0], context.Canceled) {
		t.Fatalf("loads ended when Close returned: %v; want one, cancelled by Close", ended)
	}
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"engine.(*soldOutMarks).refresh", "engine.(*batcher).loop"} {
		if strings.Contains(buf.String(), fn) {
			t.Errorf("%s still running after Close", fn)
		}
	}
	e.Close()
	if _, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "bob", Qty: 1}); !errors.Is(err, flashgrab.ErrSoldOut) {
		t.Fatalf("grab after Close: %v; want sold out", err)
	}
	if st := e.SoldOutStats(); st.Answered != 0 {
		t.Fatalf("%d grabs answered from a mark that never loaded", st.Answered)
	}
}
