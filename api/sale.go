package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
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
	Shards       int       `json:"shards"`
	// ShardPartitions is omitted for a sale of one shard.
	ShardPartitions []int `json:"shard_partitions,omitempty"`
}

func saleOut(s flashgrab.Sale) saleJSON {
	return saleJSON{ID: s.ID, MerchantID: s.MerchantID, PriceCents: s.PriceCents, Stock: s.Stock, Sold: s.Sold,
		PerUserLimit: s.PerUserLimit, StartsAt: s.StartsAt.UTC(), EndsAt: s.EndsAt.UTC(),
		Shards: s.ShardCount(), ShardPartitions: s.ShardPartitions}
}

type createSaleRequest struct {
	ID           string    `json:"id"`
	MerchantID   string    `json:"merchant_id"`
	PriceCents   int64     `json:"price_cents"`
	Stock        int64     `json:"stock"`
	PerUserLimit int64     `json:"per_user_limit"`
	StartsAt     time.Time `json:"starts_at"`
	EndsAt       time.Time `json:"ends_at"`
	// Shards is optional (1); present, it must be in [1, MaxShards].
	Shards *int `json:"shards"`
}

func (s *Server) createSale(ctx *fasthttp.RequestCtx, _ params) error {
	if _, err := s.admin(ctx); err != nil {
		return err
	}
	var req createSaleRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	shards := 1
	if req.Shards != nil {
		if shards = *req.Shards; shards < 1 {
			return flashgrab.Invalid("shards", fmt.Sprintf("must be in [1, %d]", flashgrab.MaxShards))
		}
	}
	c, cancel := s.reqContext()
	defer cancel()
	sale, err := s.createSaleOnce(c, flashgrab.Sale{ID: req.ID, MerchantID: req.MerchantID, PriceCents: req.PriceCents,
		Stock: req.Stock, PerUserLimit: req.PerUserLimit, StartsAt: req.StartsAt, EndsAt: req.EndsAt, Shards: shards})
	if err != nil {
		return err
	}
	s.activity.track(sale.ID) // on the operator's page before its first grab
	return writeJSON(ctx, fasthttp.StatusCreated, saleOut(sale))
}

// createSaleOnce creates a sale unless its id was ever taken. Redis alone
// cannot tell: after Redis comes back empty its record of the id is gone, and
// a second create would open the sale again with new terms or full stock, so
// that buyers could buy beyond the stock and their limits. The sales settled
// into MySQL are the record that survives, and are consulted first; MySQL
// unreachable means no create at all (503), since a create without the check
// would reopen that hole.
//
// A sale in MySQL under other terms is ErrExists. With the same terms it is
// a retried create, answered as the engine answers one (the terms, sold 0)
// while Redis still has the sale; if Redis lost it, it is ErrExists too: its
// stock and buyers must be rebuilt from MySQL, and a plain create would
// restore the full stock and oversell.
func (s *Server) createSaleOnce(ctx context.Context, sale flashgrab.Sale) (flashgrab.Sale, error) {
	if err := sale.Validate(); err != nil {
		return flashgrab.Sale{}, err
	}
	settled, ok, err := s.Books.Sale(ctx, sale.ID)
	if err != nil {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", sale.ID, err)
	}
	if !ok {
		return s.Engine.CreateSale(ctx, sale)
	}
	if !sameTerms(settled, sale) {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: other terms under this id, settled in MySQL: %w", sale.ID, flashgrab.ErrExists)
	}
	live, err := s.Engine.Sale(ctx, sale.ID)
	if errors.Is(err, flashgrab.ErrNotFound) {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: settled in MySQL but missing from Redis; it needs a rebuild from MySQL, not a new create: %w",
			sale.ID, flashgrab.ErrExists)
	} else if err != nil {
		return flashgrab.Sale{}, fmt.Errorf("create sale %s: %w", sale.ID, err)
	}
	sale.Sold = 0
	sale.StartsAt, sale.EndsAt = sale.StartsAt.Truncate(time.Millisecond), sale.EndsAt.Truncate(time.Millisecond)
	sale.ShardPartitions = live.ShardPartitions
	return sale, nil
}

// sameTerms compares what sale_create.lua compares: every term, times to the
// millisecond the scripts keep.
func sameTerms(a, b flashgrab.Sale) bool {
	return a.MerchantID == b.MerchantID && a.PriceCents == b.PriceCents && a.Stock == b.Stock &&
		a.PerUserLimit == b.PerUserLimit && a.StartsAt.UnixMilli() == b.StartsAt.UnixMilli() &&
		a.EndsAt.UnixMilli() == b.EndsAt.UnixMilli() && a.ShardCount() == b.ShardCount()
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

// grabSaleResponse is the grab answer's shape. grabSale appends it by hand;
// a test checks that the two agree.
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
//
// This is the hot path: a sale that this instance knows to be sold out is
// answered without a request context or Redis, and answers are appended by
// hand into the response buffer, without reflection or allocation.
func (s *Server) grabSale(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.grabPrincipal(ctx)
	if err != nil {
		return err
	}
	if !s.admitGrab(ctx, "sale", p.UserID) {
		return nil
	}
	qty := int64(1)
	if len(bytes.TrimSpace(ctx.PostBody())) > 0 {
		var req grabSaleRequest
		if err := decode(ctx, &req, false); err != nil {
			return err
		}
		if req.Qty != nil {
			qty = *req.Qty
		}
	}
	r := flashgrab.GrabRequest{SaleID: ps[0], UserID: p.UserID,
		Key: string(ctx.Request.Header.Peek("Idempotency-Key")), Qty: qty}
	res, local, err := s.Engine.GrabLocal(r)
	if !local {
		c, cancel := s.reqContext()
		res, err = s.Engine.Grab(c, r)
		cancel()
	}
	if err != nil {
		status, code, msg := grabRefusal(err)
		s.metrics.grabs.WithLabelValues("sale", code).Inc()
		s.activity.grab(r.SaleID, code)
		if status >= 500 {
			return err // logged by the common error path
		}
		writeErrorFast(ctx, status, code, msg)
		return nil
	}
	label := "won"
	if res.Repeat {
		label = "repeat"
	}
	s.metrics.grabs.WithLabelValues("sale", label).Inc()
	s.activity.grab(r.SaleID, label)
	writeGrabAnswer(ctx, res)
	return nil
}

// writeGrabAnswer answers 200 with the grabSaleResponse of res.
func writeGrabAnswer(ctx *fasthttp.RequestCtx, res flashgrab.GrabResult) {
	var arr [256]byte
	b := append(arr[:0], `{"order_id":`...)
	b = appendJSONString(b, res.OrderID)
	b = append(b, `,"sale_id":`...)
	b = appendJSONString(b, res.SaleID)
	b = append(b, `,"qty":`...)
	b = strconv.AppendInt(b, res.Qty, 10)
	b = append(b, `,"amount_cents":`...)
	b = strconv.AppendInt(b, res.AmountCents, 10)
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, res.Remaining, 10)
	b = append(b, `,"repeat":`...)
	b = strconv.AppendBool(b, res.Repeat)
	b = append(b, '}')
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(b)
}

// Status and code of the refusals a sale grab answers most, taken from
// statusOf once: statusOf is the one mapping, but it searches (and
// allocates) on every call.
var (
	soldOutStatus, soldOutCode, _ = statusOf(flashgrab.ErrSoldOut)
	limitStatus, limitCode, _     = statusOf(flashgrab.ErrLimitReached)
)

// grabRefusal is statusOf for a grab's error, fast for sold_out and limit_reached.
func grabRefusal(err error) (status int, code, msg string) {
	switch {
	case errors.Is(err, flashgrab.ErrSoldOut):
		return soldOutStatus, soldOutCode, err.Error()
	case errors.Is(err, flashgrab.ErrLimitReached):
		return limitStatus, limitCode, err.Error()
	}
	return statusOf(err)
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

// writeErrorFast answers with the JSON error model, as writeErrorBody does,
// appended by hand for the grab path's frequent refusals (sold_out,
// limit_reached).
func writeErrorFast(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	var arr [256]byte
	b := append(arr[:0], `{"error":{"code":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, "}}"...)
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(b)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, like
// encoding/json (which also escapes <, > and & for HTML; JSON does not need it).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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
// returned, and its status from MySQL once settled (pending until then). An
// order past its Redis retention is read from MySQL alone.
func (s *Server) getOrder(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	c, cancel := s.reqContext()
	defer cancel()
	o, err := s.Engine.Order(c, ps[0])
	inRedis := err == nil
	if err != nil && !errors.Is(err, flashgrab.ErrNotFound) {
		return err
	}
	st, serr := s.Books.Order(c, ps[0])
	switch {
	case serr == nil:
		o = st.Order
	case !inRedis || !errors.Is(serr, flashgrab.ErrNotFound):
		return serr
	}
	if o.UserID != p.UserID && !p.Admin {
		return flashgrab.ErrNotFound // do not reveal other users' orders
	}
	out := orderJSON{ID: o.ID, SaleID: o.SaleID, UserID: o.UserID, Qty: o.Qty, AmountCents: o.AmountCents,
		Status: "pending", CreatedAt: o.CreatedAt}
	if serr == nil {
		out.Status, out.PaidAt = st.Status, st.PaidAt
		if st.Channel != "" {
			out.Channel = &st.Channel
		}
	}
	return writeJSON(ctx, fasthttp.StatusOK, out)
}
