// Package sandbox simulates Alipay and WeChat Pay locally, so that the whole
// payment flow (create a trade, pay it, receive signed notifies, query, close,
// refund) runs offline. It follows the providers' wire formats closely enough
// that the real clients in pay/alipay and pay/wechat talk to it unchanged.
package sandbox

import (
	"fmt"
	"sync"
	"time"
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

// Retry schedules of the real providers for notifies that were not acknowledged.
var (
	AlipayRetries = []time.Duration{4 * time.Minute, 10 * time.Minute, 10 * time.Minute, time.Hour,
		2 * time.Hour, 6 * time.Hour, 15 * time.Hour}
	WeChatRetries = []time.Duration{15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute,
		10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute,
		time.Hour, 3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour}
)

// Schedule is a provider retry schedule compressed by Scale (0.001 turns
// Alipay's 4 minutes into 240 ms); Scale 0 means real time.
type Schedule struct {
	Delays []time.Duration
	Scale  float64
}

// Delay returns how long to wait before retry number attempt (0-based), and
// false once the schedule is exhausted.
func (s Schedule) Delay(attempt int) (time.Duration, bool) {
	if attempt < 0 || attempt >= len(s.Delays) {
		return 0, false
	}
	d := s.Delays[attempt]
	if s.Scale > 0 {
		d = time.Duration(float64(d) * s.Scale)
	}
	return d, true
}
