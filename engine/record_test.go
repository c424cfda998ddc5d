package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flashgrab/flashgrab"
)

// TestCorruptRecordsFailLoudly: a sale, order or packet record with a field
// that is not an integer is an error naming the record's key and the field,
// not a value read as zero.
func TestCorruptRecordsFailLoudly(t *testing.T) {
	e, rdb := newEngine(t)
	ctx := context.Background()
	ks := e.Keys()
	for _, id := range []string{"s1", "s2"} {
		if _, err := e.CreateSale(ctx, openSale(id, 3, 1)); err != nil {
			t.Fatal(err)
		}
	}
	won, err := e.Grab(ctx, flashgrab.GrabRequest{SaleID: "s1", UserID: "alice", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	pk := publish(t, e, 200, 5, flashgrab.ModeFixed)

	saleKey := ks.Sale(ks.Partition("s1"), "s1")
	sale2Key := ks.Sale(ks.Partition("s2"), "s2")
	bucket := ks.Orders(ks.Partition("s1"), won.OrderID)
	packetKey := ks.Packet(ks.Partition(pk.ID), pk.ID)
	rec, err := rdb.HGet(ctx, bucket, won.OrderID).Result()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(rec, "|")
	f[4] = "12x" // amount
	for _, c := range []struct {
		name, key, field string
		corrupt          func() error
		read             func() error
	}{
		{"sale", saleKey, "price", func() error { return rdb.HSet(ctx, saleKey, "price", "ten").Err() },
			func() error { _, err := e.Sale(ctx, "s1"); return err }},
		{"sale missing field", sale2Key, "end", func() error { return rdb.HDel(ctx, sale2Key, "end").Err() },
			func() error { _, err := e.Sale(ctx, "s2"); return err }},
		{"order", bucket + " " + won.OrderID, "amount", func() error { return rdb.HSet(ctx, bucket, won.OrderID, strings.Join(f, "|")).Err() },
			func() error { _, err := e.Order(ctx, won.OrderID); return err }},
		{"packet", packetKey, "rem", func() error { return rdb.HSet(ctx, packetKey, "rem", "").Err() },
			func() error { _, err := e.Packet(ctx, pk.ID); return err }},
	} {
		if err := c.corrupt(); err != nil {
			t.Fatal(err)
		}
		err := c.read()
		if err == nil || !strings.Contains(err.Error(), "record "+c.key+": field "+c.field+" ") {
			t.Errorf("%s: %v; want an error naming %s and field %s", c.name, err, c.key, c.field)
		}
	}
}
