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
}
