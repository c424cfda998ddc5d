package api

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
)

type createPacketRequest struct {
	TotalCents int64  `json:"total_cents"`
	Count      int64  `json:"count"`
	Mode       string `json:"mode"`
	ExpiresInS *int64 `json:"expires_in_s"`
}

type shareJSON struct {
	UserID      string    `json:"user_id"`
	AmountCents int64     `json:"amount_cents"`
	At          time.Time `json:"at"`
}

type packetJSON struct {
	ID             string      `json:"id"`
	SenderID       string      `json:"sender_id"`
	TotalCents     int64       `json:"total_cents"`
	Count          int64       `json:"count"`
	Mode           string      `json:"mode"`
	RemainingCents int64       `json:"remaining_cents"`
	RemainingCount int64       `json:"remaining_count"`
	ExpiresAt      time.Time   `json:"expires_at"`
	Expired        bool        `json:"expired"`
	RefundCents    int64       `json:"refund_cents"`
	Grabs          []shareJSON `json:"grabs"`
}

func packetOut(p flashgrab.Packet) packetJSON {
	out := packetJSON{ID: p.ID, SenderID: p.SenderID, TotalCents: p.TotalCents, Count: p.Count, Mode: p.Mode,
		RemainingCents: p.RemainingCents, RemainingCount: p.RemainingCount, ExpiresAt: p.ExpiresAt,
		Expired: p.Expired, RefundCents: p.RefundCents, Grabs: make([]shareJSON, 0, len(p.Grabs))}
	for _, g := range p.Grabs {
		out.Grabs = append(out.Grabs, shareJSON{UserID: g.UserID, AmountCents: g.AmountCents, At: g.At})
	}
	return out
}

// createPacket debits the sender in MySQL first (versioned CAS; 402 when
// short, 503 when MySQL is down and nothing is debited), then publishes the
// packet to Redis. Once the debit has committed the packet exists: if Redis
// fails at that moment the answer is still 201, and the sweeper publishes the
// packet when Redis is back, so the money is never left nowhere.
func (s *Server) createPacket(ctx *fasthttp.RequestCtx, _ params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	var req createPacketRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	var ttl time.Duration // the default
	if req.ExpiresInS != nil {
		if ttl, err = flashgrab.PacketTTL(*req.ExpiresInS); err != nil {
			return err
		}
	}
	pk, err := s.Engine.NewPacket(p.UserID, req.TotalCents, req.Count, req.Mode, ttl)
	if err != nil {
		return err
	}
	c, cancel := s.reqContext()
	defer cancel()
	if err := s.Books.FundPacket(c, pk); err != nil {
		return err
	}
	s.packets.created.Add(1)
	s.packets.createdCents.Add(pk.TotalCents)
	if err := s.Engine.PublishPacket(c, pk); err != nil {
		s.reqLogger(ctx).Warn("packet funded but not yet published; the sweeper will publish it", "packet", pk.ID, "err", err)
	} else if err := s.Books.MarkPacketLive(c, pk.ID); err != nil {
		s.reqLogger(ctx).Warn("packet published but not marked live; the sweeper will", "packet", pk.ID, "err", err)
	}
	return writeJSON(ctx, fasthttp.StatusCreated, packetOut(pk))
}

func (s *Server) getPacket(ctx *fasthttp.RequestCtx, ps params) error {
	c, cancel := s.reqContext()
	defer cancel()
	pk, err := s.Engine.Packet(c, ps[0])
	if errors.Is(err, flashgrab.ErrNotFound) {
		// Past its Redis retention (or never published): MySQL has it.
		pk, err = s.Books.Packet(c, ps[0])
	}
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, packetOut(pk))
}

type grabPacketResponse struct {
	PacketID       string `json:"packet_id"`
	AmountCents    int64  `json:"amount_cents"`
	RemainingCount int64  `json:"remaining_count"`
	RemainingCents int64  `json:"remaining_cents"`
	Repeat         bool   `json:"repeat"`
}

func (s *Server) grabPacket(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	if !s.admitGrab(ctx, "packet", p.UserID) {
		return nil
	}
	if err := decode(ctx, &struct{}{}, true); err != nil {
		return err
	}
	c, cancel := s.reqContext()
	defer cancel()
	res, err := s.Engine.GrabPacket(c, ps[0], p.UserID)
	s.metrics.grabs.WithLabelValues("packet", outcome(res.Repeat, err)).Inc()
	if err != nil {
		return err
	}
	if !res.Repeat {
		s.packets.shares.Add(1)
		s.packets.sharesCents.Add(res.AmountCents)
	}
	return writeJSON(ctx, fasthttp.StatusOK, grabPacketResponse{PacketID: res.PacketID, AmountCents: res.AmountCents,
		RemainingCount: res.RemainingCount, RemainingCents: res.RemainingCents, Repeat: res.Repeat})
}
