package api

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab/engine"
)

type saleJSON struct {
	ID           string    `json:"id"`
	MerchantID   string    `json:"merchant_id"`
	PriceCents   int64     `json:"price_cents"`
	Stock        int64     `json:"stock"`
	Sold         int64     `json:"sold"`
	PerUserLimit int64     `json:"per_user_limit"`
	StartsAt     time.Time `json:"starts_at"`
	EndsAt       time.Time `json:"ends_at"`
}

func saleOut(s engine.Sale) saleJSON {
	return saleJSON{ID: s.ID, MerchantID: s.MerchantID, PriceCents: s.PriceCents, Stock: s.Stock, Sold: s.Sold,
		PerUserLimit: s.PerUserLimit, StartsAt: s.StartsAt.UTC(), EndsAt: s.EndsAt.UTC()}
}

type createSaleRequest struct {
	ID           string    `json:"id"`
	MerchantID   string    `json:"merchant_id"`
	PriceCents   int64     `json:"price_cents"`
	Stock        int64     `json:"stock"`
	PerUserLimit int64     `json:"per_user_limit"`
	StartsAt     time.Time `json:"starts_at"`
	EndsAt       time.Time `json:"ends_at"`
}

func (s *Server) createSale(ctx *fasthttp.RequestCtx, _ params) error {
	if _, err := s.admin(ctx); err != nil {
		return err
	}
	var req createSaleRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	c, cancel := s.reqContext()
	defer cancel()
	sale, err := s.Engine.CreateSale(c, engine.Sale{ID: req.ID, MerchantID: req.MerchantID, PriceCents: req.PriceCents,
		Stock: req.Stock, PerUserLimit: req.PerUserLimit, StartsAt: req.StartsAt, EndsAt: req.EndsAt})
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusCreated, saleOut(sale))
}

func (s *Server) getSale(ctx *fasthttp.RequestCtx, ps params) error {
	c, cancel := s.reqContext()
	defer cancel()
	sale, err := s.Engine.Sale(c, ps[0])
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, saleOut(sale))
}

type grabSaleRequest struct {
	Qty *int64 `json:"qty"`
}

type grabSaleResponse struct {
	OrderID     string `json:"order_id"`
	SaleID      string `json:"sale_id"`
	Qty         int64  `json:"qty"`
	AmountCents int64  `json:"amount_cents"`
	Remaining   int64  `json:"remaining"`
	Repeat      bool   `json:"repeat"`
}

// grabSale decides a grab. The optional Idempotency-Key header names the
// attempt: without it a grab is the user's first attempt, so a retry returns
// the same order; a client that wants a further unit within its limit sends a
// fresh key.
func (s *Server) grabSale(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	var req grabSaleRequest
	if err := decode(ctx, &req, true); err != nil {
		return err
	}
	qty := int64(1)
	if req.Qty != nil {
		qty = *req.Qty
	}
	c, cancel := s.reqContext()
	defer cancel()
	res, err := s.Engine.Grab(c, engine.GrabRequest{SaleID: ps[0], UserID: p.UserID,
		Key: string(ctx.Request.Header.Peek("Idempotency-Key")), Qty: qty})
	s.metrics.grabs.WithLabelValues("sale", outcome(res.Repeat, err)).Inc()
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, grabSaleResponse{OrderID: res.OrderID, SaleID: res.SaleID, Qty: res.Qty,
		AmountCents: res.AmountCents, Remaining: res.Remaining, Repeat: res.Repeat})
}

// outcome is the metrics label of a grab's result.
func outcome(repeat bool, err error) string {
	switch {
	case err == nil && repeat:
		return "repeat"
	case err == nil:
		return "won"
	}
	_, code, _ := statusOf(err)
	return code
}

type orderJSON struct {
	ID          string     `json:"id"`
	SaleID      string     `json:"sale_id"`
	UserID      string     `json:"user_id"`
	Qty         int64      `json:"qty"`
	AmountCents int64      `json:"amount_cents"`
	Status      string     `json:"status"`
	Channel     *string    `json:"channel"`
	CreatedAt   time.Time  `json:"created_at"`
	PaidAt      *time.Time `json:"paid_at"`
}

// getOrder reads the order from Redis, where it exists the moment its grab
// returned, and its status from MySQL once settled; until then it is pending.
func (s *Server) getOrder(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	c, cancel := s.reqContext()
	defer cancel()
	o, err := s.Engine.Order(c, ps[0])
	if err != nil {
		return err
	}
	if o.UserID != p.UserID && !p.Admin {
		return engine.ErrNotFound // do not reveal other users' orders
	}
	out := orderJSON{ID: o.ID, SaleID: o.SaleID, UserID: o.UserID, Qty: o.Qty, AmountCents: o.AmountCents,
		Status: "pending", CreatedAt: o.CreatedAt}
	st, err := s.Books.Order(c, o.ID)
	switch {
	case err == nil:
		out.Status, out.PaidAt = st.Status, st.PaidAt
		if st.Channel != "" {
			out.Channel = &st.Channel
		}
	case !errors.Is(err, engine.ErrNotFound):
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, out)
}
