package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
)

// Order returns an order as the grab recorded it in Redis. It is there the
// moment the grab returns, before settlement, and for Config.Retention
// after; its payment status lives in MySQL.
func (e *Engine) Order(ctx context.Context, id string) (flashgrab.Order, error) {
	p, ok := e.keys.orderPartition(id)
	if !ok {
		return flashgrab.Order{}, fmt.Errorf("order %q: %w", id, flashgrab.ErrNotFound)
	}
	bucket := e.keys.Orders(p, id)
	rec, err := e.rdb.HGet(ctx, bucket, id).Result()
	if errors.Is(err, redis.Nil) || rec == releasedTombstone {
		return flashgrab.Order{}, fmt.Errorf("order %s: %w", id, flashgrab.ErrNotFound)
	}
	if err != nil {
		return flashgrab.Order{}, fmt.Errorf("get order %s: %w", id, wrapRedis(err))
	}
	// "sale|user|merchant|qty|amount|at_ms|key[|rel]", see sale_grab.lua.
	f := strings.Split(rec, "|")
	if len(f) < 7 {
		return flashgrab.Order{}, fmt.Errorf("order %s: malformed record %q", id, rec)
	}
	d := recordDecoder{key: bucket + " " + id}
	o := flashgrab.Order{ID: id, SaleID: f[0], UserID: f[1], MerchantID: f[2], Qty: d.int("qty", f[3]),
		AmountCents: d.int("amount", f[4]), CreatedAt: time.UnixMilli(d.int("at_ms", f[5])).UTC(),
		Key: f[6], KeyKnown: f[6] != noKey}
	if d.err != nil {
		return flashgrab.Order{}, fmt.Errorf("order %s: %w", id, d.err)
	}
	return o, nil
}

// releasedTombstone stands in for an order record that was gone when the
// order was released from the caller's facts (see order_release.lua).
const releasedTombstone = "~rel"

// ReleaseOrder returns a cancelled order's stock to its sale and frees the
// buyer to grab again. It is idempotent: released reports whether this call
// did the release.
//
// When Redis no longer has the order's record, o's SaleID, UserID and Qty
// (the order as MySQL has it) say what to return, still exactly once. When
// the sale's own keys are gone too nothing can be returned: ErrSaleGone.
func (e *Engine) ReleaseOrder(ctx context.Context, o flashgrab.Order) (released bool, err error) {
	p, ok := e.keys.orderPartition(o.ID)
	if !ok {
		return false, fmt.Errorf("release order %q: %w", o.ID, flashgrab.ErrNotFound)
	}
	keys := []string{e.keys.Sale(p, o.SaleID), e.keys.Buyers(p, o.SaleID), e.keys.Orders(p, o.ID), e.keys.Epoch(p)}
	r, err := e.orderRelease.Run(ctx, e.rdb, keys, o.UserID, o.Qty, o.ID, e.retention.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("release order %s: %w", o.ID, e.noteFenced(p, wrapRedis(err)))
	}
	switch r {
	case -1:
		return false, fmt.Errorf("release order %s: no record in Redis and no user and qty given: %w", o.ID, flashgrab.ErrNotFound)
	case -2:
		return false, fmt.Errorf("release order %s of sale %s (user %s, qty %d): %w", o.ID, o.SaleID, o.UserID, o.Qty, flashgrab.ErrSaleGone)
	case 1:
		// Stock is back: this instance stops answering "sold out" at once
		// (other instances within their mark's TTL).
		e.soldOut.observe(o.SaleID, p, max(o.Qty, 1), e.soldOut.now())
		e.stockBack(o.SaleID)
	}
	return r == 1, nil
}
