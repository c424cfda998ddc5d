package flashgrab

import "time"

// Order is a won grab.
type Order struct {
	ID          string
	SaleID      string
	UserID      string
	MerchantID  string
	Qty         int64
	AmountCents int64
	CreatedAt   time.Time
	// Key is the grab's idempotency key ("" for the default attempt), when
	// KeyKnown: orders settled before keys were recorded have none. A
	// rebuild restores a retry's answer only for a known key.
	Key      string
	KeyKnown bool
}
