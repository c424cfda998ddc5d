package flashgrab

import (
	"errors"
	"fmt"
)

// Domain errors. api/ maps each to one HTTP status and code, in one place.
var (
	ErrNotFound          = errors.New("not found")
	ErrExists            = errors.New("already exists")
	ErrSoldOut           = errors.New("sold out")
	ErrLimitReached      = errors.New("per-user limit reached")
	ErrNotStarted        = errors.New("sale not started")
	ErrEnded             = errors.New("sale ended")
	ErrEmpty             = errors.New("packet empty")
	ErrExpired           = errors.New("packet expired")
	ErrInsufficientFunds = errors.New("insufficient funds")
	ErrNotPayable        = errors.New("order not payable")
	// ErrSaleGone reports an order whose sale is no longer in Redis, so its
	// stock and the buyer's limit cannot be returned (the order is stranded).
	ErrSaleGone = errors.New("sale gone from redis")
	// ErrUnavailable wraps a failure of a backing store (Redis, MySQL):
	// the request may be retried later.
	ErrUnavailable = errors.New("unavailable")
	// ErrRebuilding reports a partition whose Redis state was lost and is
	// being rebuilt from MySQL: nothing on it is decided until the rebuild
	// is done. It is an ErrUnavailable too (errors.Is), so whatever retries
	// an outage retries it.
	ErrRebuilding = fmt.Errorf("%w: partition being rebuilt from MySQL", ErrUnavailable)
)

// InvalidError reports input that breaks a rule; Field names what is wrong.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// Invalid returns an *InvalidError for field.
func Invalid(field, reason string) error { return &InvalidError{Field: field, Reason: reason} }
