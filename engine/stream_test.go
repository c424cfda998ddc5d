package engine_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestAckSettledTrimsOnlySettledHistory: trimming after an acknowledgement
// never removes an entry some consumer still holds (a dead settler's pending
// entries, which XAUTOCLAIM must find), nor any entry after it, nor one not
// yet read; once those are acknowledged too, the stream is empty.
func TestAckSettledTrimsOnlySettledHistory(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	stream := prefix + ":{p0}:events"
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", i}}).Val()
	}
	if err := rdb.XGroupCreate(ctx, stream, "settlers", "0").Err(); err != nil {
		t.Fatal(err)
	}
	read := func(consumer string, n int64) []string {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "settlers", Consumer: consumer,
			Streams: []string{stream, ">"}, Count: n, Block: -1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range res[0].Messages {
			out = append(out, m.ID)
		}
		return out
	}
	left := func() []string {
		msgs := rdb.XRange(ctx, stream, "-", "+").Val()
		out := make([]string, len(msgs))
		for i, m := range msgs {
			out[i] = m.ID
		}
		return out
	}
	same := func(what string, got, want []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: stream holds %d entries, want %d", what, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: entry %d is %s, want %s", what, i, got[i], want[i])
			}
		}
	}

	first := read("a", 10)  // a settles these
	dead := read("dead", 5) // a settler that dies holding these
	later := read("b", 5)   // b settles these; 10 stay unread
	if n, err := engine.AckSettled(ctx, rdb, stream, "settlers", first...); err != nil || n != 10 {
		t.Fatalf("ack a's entries: %d %v, want 10", n, err)
	}
	same("a acknowledged", left(), ids[10:])
	if n, err := engine.AckSettled(ctx, rdb, stream, "settlers", later...); err != nil || n != 5 {
		t.Fatalf("ack b's entries: %d %v, want 5", n, err)
	}
	// dead's entries are the oldest pending: nothing from them on may go.
	same("b acknowledged, dead's pending", left(), ids[10:])
	if n, err := engine.AckSettled(ctx, rdb, stream, "settlers", dead...); err != nil || n != 5 {
		t.Fatalf("ack dead's entries: %d %v, want 5", n, err)
	}
	same("all read acknowledged", left(), ids[20:]) // the unread stay
	// An acknowledgement repeated (a replayed batch) acknowledges nothing
	// and trims nothing more.
	if n, err := engine.AckSettled(ctx, rdb, stream, "settlers", first...); err != nil || n != 0 {
		t.Fatalf("ack again: %d %v, want 0", n, err)
	}
	same("repeat", left(), ids[20:])
	if n, err := engine.AckSettled(ctx, rdb, stream, "settlers", read("a", 100)...); err != nil || n != 10 {
		t.Fatalf("ack the rest: %d %v, want 10", n, err)
	}
	same("everything settled", left(), nil)
}
