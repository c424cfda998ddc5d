package settle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// deadLetter moves an entry that cannot be settled to the partition's
// dead-letter stream, Keys.Events(p) + "-dead", and acknowledges and deletes
// it in the same MULTI, so that it is never both gone from the stream and
// missing from the dead letters. The dead letter carries reason (why),
// id (the entry's id) and the entry's own fields; a field of the entry named
// reason or id (orders and sales carry their own id) is kept as event_reason
// or event_id. It is logged at Error level: someone must look at it.
func (s *Settler) deadLetter(p int, m redis.XMessage, reason error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := s.keys.Events(p)
	values := []any{"reason", reason.Error(), "id", m.ID}
	for k, v := range m.Values {
		if k == "reason" || k == "id" {
			k = "event_" + k
		}
		values = append(values, k, v)
	}
	_, err := s.redis.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: deadLetterStream(s.keys, p), Values: values})
		pipe.XAck(ctx, stream, s.Group, m.ID)
		pipe.XDel(ctx, stream, m.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dead-letter entry %s of %s: %w: %v", m.ID, stream, flashgrab.ErrUnavailable, err)
	}
	s.Logger.Error("settler: event cannot be settled; moved to the dead-letter stream",
		"partition", p, "id", m.ID, "stream", deadLetterStream(s.keys, p), "reason", reason)
	if s.Metrics != nil {
		s.Metrics.DeadLetters.Inc()
	}
	return nil
}

// deadLetterStream is where partition p's settler puts the events it cannot
// settle; reconcile counts what is there.
func deadLetterStream(ks engine.Keyspace, p int) string { return ks.Events(p) + "-dead" }

// DeadReplay is what ReplayDead did with one partition's dead letters.
type DeadReplay struct {
	Partition int
	// Settled counts the dead letters settled now and removed.
	Settled int
	// Stale counts those of an epoch a rebuild has left, removed unsettled:
	// the rebuild restored the partition from MySQL without them, so
	// settling them would count them twice (the settler drops such entries
	// the same way).
	Stale int
	// Left says, for each dead letter kept, "<entry id>: <why>".
	Left []string
}

func (r DeadReplay) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "partition %d: %d dead letters settled, %d dropped as older than a rebuild, %d left",
		r.Partition, r.Settled, r.Stale, len(r.Left))
	for _, l := range r.Left {
		b.WriteString("\n  ")
		b.WriteString(l)
	}
	return b.String()
}

// ReplayDead settles partition p's dead letters again, each on its own, once
// what made them fail is mended (a bug fixed, an account created). One that
// settles now is removed from the dead-letter stream; the others stay, and
// Left says why. Settling is keyed by event, so a dead letter settled before
// changes nothing. One of an epoch a rebuild has left is removed unsettled
// (Stale), as the settler drops such entries: the rebuild restored the
// partition from MySQL without it. An outage stops the replay with an
// error; what it settled until then is removed.
func (s *Settler) ReplayDead(ctx context.Context, p int) (DeadReplay, error) {
	out := DeadReplay{Partition: p}
	stream := deadLetterStream(s.keys, p)
	msgs, err := s.redis.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		return out, fmt.Errorf("read %s: %w: %v", stream, flashgrab.ErrUnavailable, err)
	}
	for _, dead := range msgs {
		m, err := deadEntry(dead)
		if err != nil {
			out.Left = append(out.Left, dead.ID+": "+err.Error())
			continue
		}
		evs, err := engine.ParseEntry(p, m)
		if err == nil {
			err = s.Apply(ctx, evs)
		}
		var stale *StaleEpochError
		switch {
		case errors.As(err, &stale):
		case err == nil:
		case outage(err):
			return out, fmt.Errorf("replay dead letter %s of %s: %w", dead.ID, stream, err)
		default:
			out.Left = append(out.Left, fmt.Sprintf("%s (entry %s): %v", dead.ID, m.ID, err))
			continue
		}
		if err := s.redis.XDel(ctx, stream, dead.ID).Err(); err != nil {
			return out, fmt.Errorf("remove dead letter %s of %s: %w: %v", dead.ID, stream, flashgrab.ErrUnavailable, err)
		}
		if stale != nil {
			out.Stale++
			s.Logger.Error("settler: dead letter of an epoch before the partition's rebuild dropped: the rebuild restored the partition from MySQL without it, and settling it now would count it twice",
				"partition", p, "dead_letter", dead.ID, "entry", m.ID, "epoch", stale.Epoch, "current", stale.Current)
			continue
		}
		out.Settled++
		s.Logger.Info("settler: dead letter settled on replay", "partition", p, "dead_letter", dead.ID, "entry", m.ID)
	}
	return out, nil
}

// deadEntry gives back the stream entry a dead letter was made of
// (deadLetter): its id and its own fields.
func deadEntry(dead redis.XMessage) (redis.XMessage, error) {
	id, _ := dead.Values["id"].(string)
	if id == "" {
		return redis.XMessage{}, errors.New("dead letter without the entry's id")
	}
	values := make(map[string]any, len(dead.Values))
	for k, v := range dead.Values {
		switch k {
		case "reason", "id":
			continue
		case "event_reason":
			k = "reason"
		case "event_id":
			k = "id"
		}
		values[k] = v
	}
	return redis.XMessage{ID: id, Values: values}, nil
}
