package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/flashgrab/flashgrab"
)

// TestReleaseWithoutRecordReturnsOnce is issue 13 item 11: an expired order
// whose Redis record is gone (retention, a lost Redis write) still gives its
// stock and the buyer's limit back, from the facts MySQL holds, exactly once
// however often it is released; the buyer can then buy again, and the order
// reads as not found in Redis (MySQL has it).
func TestReleaseWithoutRecordReturnsOnce(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 3, 2)); err != nil {
		t.Fatal(err)
	}
	won, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Key: "k1", Qty: 2})
	if err != nil {
		t.Fatal(err)
	}
	ks := e.Keys()
	if err := rdb.HDel(ctx, ks.Orders(ks.Partition("s1"), won.OrderID), won.OrderID).Err(); err != nil {
		t.Fatal(err)
	}
	facts := flashgrab.Order{ID: won.OrderID, SaleID: "s1", UserID: "alice", MerchantID: "m1", Qty: 2, AmountCents: 300}
	for i, want := range []bool{true, false, false} {
		released, err := e.ReleaseOrder(ctx, facts)
		if err != nil || released != want {
			t.Fatalf("release %d: %v %v, want released=%v", i+1, released, err, want)
		}
	}
	s, err := e.Sale(ctx, "s1")
	if err != nil || s.Stock != 3 || s.Sold != 0 {
		t.Fatalf("sale after releases: %+v %v, want stock 3 sold 0", s, err)
	}
	if _, err := e.Order(ctx, won.OrderID); !errors.Is(err, flashgrab.ErrNotFound) {
		t.Fatalf("released order without record: %v, want ErrNotFound", err)
	}
	// The limit is back and the attempt's key is free: the same key buys a
	// new order rather than repeating the released one.
	again, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Key: "k1", Qty: 2})
	if err != nil || again.Repeat || again.OrderID == won.OrderID || again.Remaining != 1 {
		t.Fatalf("grab after release: %+v %v, want a new order of 2 leaving 1", again, err)
	}
}

// TestReleaseOfGoneSaleIsReported: when the sale's keys are gone too,
// nothing can be returned; the release says so (ErrSaleGone), every time,
// and makes up no sale.
func TestReleaseOfGoneSaleIsReported(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 3, 1)); err != nil {
		t.Fatal(err)
	}
	won, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	ks := e.Keys()
	p := ks.Partition("s1")
	facts := flashgrab.Order{ID: won.OrderID, SaleID: "s1", UserID: "alice", Qty: 1}
	// In this order: the second step deletes only the record, on top of the
	// first (a map's random order ran it alone, with the sale still there).
	for _, step := range []struct {
		name string
		del  func() error
	}{
		{"sale gone, record kept", func() error { return rdb.Del(ctx, ks.Sale(p, "s1"), ks.Buyers(p, "s1")).Err() }},
		{"sale and record gone", func() error { return rdb.HDel(ctx, ks.Orders(p, won.OrderID), won.OrderID).Err() }},
	} {
		name := step.name
		if err := step.del(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if released, err := e.ReleaseOrder(ctx, facts); released || !errors.Is(err, flashgrab.ErrSaleGone) {
				t.Fatalf("%s: %v %v, want ErrSaleGone", name, released, err)
			}
		}
		if n, _ := rdb.Exists(ctx, ks.Sale(p, "s1")).Result(); n != 0 {
			t.Fatalf("%s: the release made up a sale hash", name)
		}
	}
}

// TestReleaseTombstoneOfExpiredBucket: a release whose order's whole bucket
// is gone (every record of its time expired) leaves a tombstone in a bucket
// that expires too, and a second release returns nothing more.
func TestReleaseTombstoneOfExpiredBucket(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	if _, err := e.CreateSale(ctx, openSale("s1", 3, 1)); err != nil {
		t.Fatal(err)
	}
	won, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	ks := e.Keys()
	bucket := ks.Orders(ks.Partition("s1"), won.OrderID)
	if err := rdb.Del(ctx, bucket).Err(); err != nil {
		t.Fatal(err)
	}
	facts := flashgrab.Order{ID: won.OrderID, SaleID: "s1", UserID: "alice", MerchantID: "m1", Qty: 1, AmountCents: 150}
	for i, want := range []bool{true, false} {
		released, err := e.ReleaseOrder(ctx, facts)
		if err != nil || released != want {
			t.Fatalf("release %d: %v %v, want released=%v", i+1, released, err, want)
		}
	}
	if ttl := rdb.PTTL(ctx, bucket).Val(); ttl <= 0 {
		t.Fatalf("bucket made by the tombstone expires in %v, want a retention", ttl)
	}
	if s, err := e.Sale(ctx, "s1"); err != nil || s.Stock != 3 || s.Sold != 0 {
		t.Fatalf("sale after the releases: %+v %v, want stock 3 sold 0", s, err)
	}
}
