// Package sandbox simulates Alipay and WeChat Pay locally, so that the whole
// payment flow (create a trade, pay it, receive signed notifies, query, close,
// refund) runs offline. It follows the providers' wire formats closely enough
// that the real clients in pay/alipay and pay/wechat talk to it unchanged.
package sandbox

import (
	"fmt"
	"sync"
)

// The seed's sandbox accounts: a buyer holding 99,999 yuan and a seller holding nothing.
const (
	BuyerAccount  = "15911111111"
	SellerAccount = "15922222222"

	buyerOpeningCents = 99_999_00
)

// Wallets are the simulated provider-side balances that a payment moves money
// between. The zero value is not usable; call NewWallets.
type Wallets struct {
	mu       sync.Mutex
	balances map[string]int64
}

// NewWallets returns the seed's opening balances.
func NewWallets() *Wallets {
	return &Wallets{balances: map[string]int64{BuyerAccount: buyerOpeningCents, SellerAccount: 0}}
}

// Transfer moves cents from one wallet to another, failing when from is short.
func (w *Wallets) Transfer(from, to string, cents int64) error {
	if cents <= 0 {
		return fmt.Errorf("sandbox transfer: amount %d fen must be positive", cents)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.balances[from] < cents {
		return fmt.Errorf("sandbox transfer: wallet %s holds %d fen, needs %d", from, w.balances[from], cents)
	}
	w.balances[from] -= cents
	w.balances[to] += cents
	return nil
}

// Balance returns the wallet's balance in fen.
func (w *Wallets) Balance(account string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.balances[account]
}
