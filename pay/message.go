package pay

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// Sender sends a mini program subscribe message (*wechat.Messenger).
type Sender interface {
	Send(ctx context.Context, msg wechat.SubscribeMessage) error
}

// PaidMessages tells a buyer "your order is paid" by a mini program
// subscribe message once the payment is committed (settle.Payments.OnPaid),
// whatever channel paid it, if the buyer logged in with the mini program
// (settle.Books.PayerID) and accepted the template. Sending happens on its
// own goroutine, so a slow or failing WeChat never delays a notify's
// acknowledgement. It is best effort: a message that fails is logged and
// dropped, and messages queued when the process stops are lost; the order
// is paid all the same.
//
// The template must have the fields character_string1 (the order id),
// amount2 (the amount, yuan) and time3 (when it was paid).
type PaidMessages struct {
	sender     Sender
	books      *settle.Books
	templateID string
	log        *slog.Logger

	queue  chan settle.Payment
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   sync.WaitGroup
	once   sync.Once
}

// paidQueue bounds the messages waiting; beyond it they are dropped
// (logged): a burst of payments must not hold memory or notifies.
const paidQueue = 4096

// NewPaidMessages starts the sender goroutine; Close stops it.
func NewPaidMessages(sender Sender, books *settle.Books, templateID string, log *slog.Logger) *PaidMessages {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &PaidMessages{sender: sender, books: books, templateID: templateID, log: log,
		queue: make(chan settle.Payment, paidQueue), ctx: ctx, cancel: cancel}
	m.done.Add(1)
	go m.run()
	return m
}

// Paid queues the message of a payment just applied; it never blocks.
func (m *PaidMessages) Paid(p settle.Payment) {
	select {
	case m.queue <- p:
	default:
		m.log.Warn("paid message dropped: queue full", "order", p.OrderID)
	}
}

// Close stops sending after the message in flight and waits; queued
// messages are dropped. A second Close does nothing.
func (m *PaidMessages) Close() {
	m.once.Do(func() {
		m.cancel()
		m.done.Wait()
	})
}

func (m *PaidMessages) run() {
	defer m.done.Done()
	for {
		select {
		case p := <-m.queue:
			m.send(p)
		case <-m.ctx.Done():
			return
		}
	}
}

// send tells the buyer of p, if the buyer has an openid.
func (m *PaidMessages) send(p settle.Payment) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	openID, err := m.books.PayerID(ctx, p.UserID, ChannelWeChat)
	if errors.Is(err, settle.ErrNoPayerID) {
		return // never logged in with the mini program: nobody to tell there
	}
	if err != nil {
		m.log.Warn("paid message not sent", "order", p.OrderID, "err", err)
		return
	}
	err = m.sender.Send(ctx, wechat.SubscribeMessage{ToUser: openID, TemplateID: m.templateID,
		Page: "pages/order/order?id=" + p.OrderID,
		Data: map[string]string{"character_string1": p.OrderID, "amount2": alipay.FormatYuan(p.AmountCents) + "元",
			"time3": time.Now().In(cst).Format("2006-01-02 15:04:05")}})
	switch {
	case errors.Is(err, wechat.ErrNotSubscribed):
		m.log.Info("paid message not sent: the buyer did not subscribe", "order", p.OrderID)
	case err != nil:
		m.log.Warn("paid message not sent", "order", p.OrderID, "err", err)
	}
}

// cst is China Standard Time, the zone the message's time is read in.
var cst = time.FixedZone("CST", 8*3600)
