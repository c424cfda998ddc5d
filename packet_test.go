package flashgrab_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab"
)

// TestPacketValidate pins the terms a new packet must meet, and which field
// each rejection names (the API's error detail): the lifetime is
// ExpiresAt - CreatedAt, bounds included.
func TestPacketValidate(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ok := flashgrab.Packet{SenderID: "alice", TotalCents: 100, Count: 4, Mode: flashgrab.ModeFixed,
		CreatedAt: at, ExpiresAt: at.Add(flashgrab.DefaultPacketTTL)}
	for _, c := range []struct {
		name  string
		edit  func(p *flashgrab.Packet)
		field string // "" when valid
	}{
		{"valid", func(p *flashgrab.Packet) {}, ""},
		{"shortest lifetime", func(p *flashgrab.Packet) { p.ExpiresAt = at.Add(flashgrab.MinPacketTTL) }, ""},
		{"longest lifetime", func(p *flashgrab.Packet) { p.ExpiresAt = at.Add(flashgrab.MaxPacketTTL) }, ""},
		{"1 fen a share", func(p *flashgrab.Packet) { p.TotalCents, p.Count, p.Mode = 1000, 1000, flashgrab.ModeRandom }, ""},
		{"bad sender", func(p *flashgrab.Packet) { p.SenderID = "a b" }, "sender"},
		{"no count", func(p *flashgrab.Packet) { p.Count = 0 }, "count"},
		{"count over the limit", func(p *flashgrab.Packet) { p.Count = flashgrab.MaxPacketCount + 1 }, "count"},
		{"under 1 fen a share", func(p *flashgrab.Packet) { p.TotalCents = 3 }, "total_cents"},
		{"total over the limit", func(p *flashgrab.Packet) { p.TotalCents = flashgrab.MaxPacketCents + 4 }, "total_cents"},
		{"unknown mode", func(p *flashgrab.Packet) { p.Mode = "lucky" }, "mode"},
		{"fixed with a remainder", func(p *flashgrab.Packet) { p.TotalCents = 101 }, "total_cents"},
		{"lifetime too short", func(p *flashgrab.Packet) { p.ExpiresAt = at.Add(flashgrab.MinPacketTTL - time.Millisecond) }, "expires_in_s"},
		{"lifetime too long", func(p *flashgrab.Packet) { p.ExpiresAt = at.Add(flashgrab.MaxPacketTTL + time.Millisecond) }, "expires_in_s"},
		{"expires before created", func(p *flashgrab.Packet) { p.ExpiresAt = at.Add(-time.Hour) }, "expires_in_s"},
		{"sender checked first", func(p *flashgrab.Packet) { p.SenderID, p.Count, p.Mode = "", 0, "lucky" }, "sender"},
	} {
		p := ok
		c.edit(&p)
		err := p.Validate()
		var inv *flashgrab.InvalidError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v, want valid", c.name, err)
		case c.field != "" && (!errors.As(err, &inv) || inv.Field != c.field):
			t.Errorf("%s: %v, want an *InvalidError on %s", c.name, err, c.field)
		}
	}
}
