package engine

import "sync"

// maxHeads bounds a head cache; past it the cache starts afresh (ids come
// from requests, so the cache must not grow with made-up ones).
const maxHeads = 10_000

// headCache keeps, per sale or packet id, what every grab of it sends alike
// (keys, args, the batcher's call head), so a grab builds no key strings.
type headCache[T any] struct {
	mu    sync.RWMutex
	heads map[string]*T
}

// get returns id's head, building it on first use.
func (c *headCache[T]) get(id string, build func() *T) *T {
	c.mu.RLock()
	h := c.heads[id]
	c.mu.RUnlock()
	if h != nil {
		return h
	}
	h = build()
	c.mu.Lock()
	if c.heads == nil || len(c.heads) >= maxHeads {
		c.heads = map[string]*T{}
	}
	c.heads[id] = h
	c.mu.Unlock()
	return h
}

// peek returns id's head if it was built, nil if not.
func (c *headCache[T]) peek(id string) *T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.heads[id]
}
