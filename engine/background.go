package engine

import (
	"context"
	"sync"
)

// background owns the goroutines the engine starts for itself: the sold-out
// mark's loads and the batcher's sender loops. They run on a context Close
// cancels, and Close waits for them.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex // orders wg.Add against Close's Wait
	closed bool
	wg     sync.WaitGroup
}

func newBackground() *background {
	ctx, cancel := context.WithCancel(context.Background())
	return &background{ctx: ctx, cancel: cancel}
}

// start runs f in a goroutine on the background context and reports true,
// or reports false once Close has begun: the caller then does without it.
func (b *background) start(f func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f(b.ctx)
	}()
	return true
}

// close cancels the goroutines' context and waits for them; it can be
// called again.
func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}
