package api

import (
	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/settle"
)

type accountJSON struct {
	ID           string `json:"id"`
	BalanceCents int64  `json:"balance_cents"`
	Version      int64  `json:"version"`
}

func accountOut(a settle.Account) accountJSON {
	return accountJSON{ID: a.ID, BalanceCents: a.BalanceCents, Version: a.Version}
}

func (s *Server) getAccount(ctx *fasthttp.RequestCtx, ps params) error {
	p, err := s.principal(ctx)
	if err != nil {
		return err
	}
	if ps[0] != p.UserID && !p.Admin {
		return forbidden("an account is readable by its owner or an admin")
	}
	c, cancel := s.reqContext()
	defer cancel()
	a, err := s.Books.Account(c, ps[0])
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, accountOut(a))
}

type creditRequest struct {
	AmountCents int64  `json:"amount_cents"`
	Ref         string `json:"ref"`
}

// maxCreditCents bounds one admin credit (10 million yuan).
const maxCreditCents = 1_000_000_000

// credit is an admin credit, idempotent by ref: the same ref again returns
// the account unchanged; a ref reused for another account or amount is 409.
func (s *Server) credit(ctx *fasthttp.RequestCtx, ps params) error {
	if _, err := s.admin(ctx); err != nil {
		return err
	}
	var req creditRequest
	if err := decode(ctx, &req, false); err != nil {
		return err
	}
	switch {
	case !flashgrab.ValidID(ps[0]):
		return flashgrab.InvalidID("account")
	case req.AmountCents < 1 || req.AmountCents > maxCreditCents:
		return flashgrab.Invalid("amount_cents", "must be in [1, 1000000000]")
	case !flashgrab.ValidID(req.Ref):
		return flashgrab.InvalidID("ref")
	}
	c, cancel := s.reqContext()
	defer cancel()
	a, err := s.Books.Credit(c, ps[0], req.AmountCents, req.Ref)
	if err != nil {
		return err
	}
	return writeJSON(ctx, fasthttp.StatusOK, accountOut(a))
}
