// Package pay is the one home of the payment channels: for each provider
// (Alipay, WeChat Pay) a Channel that opens, closes, queries and refunds its
// trades for settlement (settle.Provider), verifies its notifies into what
// settlement applies, and writes the acknowledgement that provider expects.
// Channels is the registry of the channels that are on, by name. The thin
// provider clients (pay/alipay, pay/wechat) and the local provider simulator
// (pay/sandbox) live in the subpackages. HTTP stays with the caller: a notify
// comes in as a header getter and a body, and goes out as a Reply.
package pay

import (
	"errors"
	"maps"
	"slices"

	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// Channel names, as clients send them and as the notify routes end. They are
// also what the payments table records, so they never change.
const (
	ChannelAlipay = "alipay"
	ChannelWeChat = "wechat"
)

// Channel is one payment provider: its trades, as settlement needs them,
// what the payer's client needs to pay them, and its notifies.
type Channel interface {
	settle.Provider
	Notifier
	// ClientParams turns what Create returned for a trade paid by method
	// into the parameters the payer's SDK takes. WeChat signs them anew on
	// every call (fresh nonce and time), so asking again is fine.
	ClientParams(method, created string) (ClientParams, error)
}

var (
	_ Channel = Alipay{}
	_ Channel = WeChat{}
)

// Notifier is the notify side of a channel.
type Notifier interface {
	// ParseNotify verifies a notify (its headers, read through header, and
	// its raw body) and says what settlement must apply. An error means the
	// notify is refused and must change nothing.
	ParseNotify(header func(name string) string, body []byte) (Notify, error)
	// Ack is the answer to a notify: the acknowledgement when err is nil (the
	// notify is applied, was before, or asks for nothing), otherwise the
	// refusal after which the provider retries. err is what ParseNotify or
	// settlement returned.
	Ack(err error) Reply
}

// Notify is what a verified notify asks of settlement: at most one of its
// fields is set; neither means nothing to settle (a trade not paid yet, or
// closed), and the notify is acknowledged as it is.
type Notify struct {
	// Paid is a paid trade, for settle.Payments.Paid.
	Paid *settle.Notice
	// Refund is a refund that ended, for settle.Payments.Refunded.
	Refund *settle.RefundNotice
}

// Reply is the HTTP answer to a notify, in the provider's format.
type Reply struct {
	Status      int
	ContentType string // empty: none is set
	Body        []byte // nil: no body
}

// Channels is the registry of the payment channels that are on, by name.
type Channels map[string]Channel

// NewChannels registers the channels whose client is given; a nil client
// leaves its channel off.
func NewChannels(ac *alipay.Client, wc *wechat.Client) Channels {
	cs := Channels{}
	if ac != nil {
		cs[ChannelAlipay] = Alipay{Client: ac}
	}
	if wc != nil {
		cs[ChannelWeChat] = WeChat{Client: wc}
	}
	return cs
}

// Providers is the channels as settlement takes them (settle.Payments).
func (cs Channels) Providers() map[string]settle.Provider {
	ps := make(map[string]settle.Provider, len(cs))
	for name, c := range cs {
		ps[name] = c
	}
	return ps
}

// Notifier is the named channel's notify side. A channel that is known but
// off still answers in its provider's format, so the provider retries as it
// would: its ParseNotify refuses every notify with settle.ErrNoChannel. ok
// is false for a name that is no channel.
func (cs Channels) Notifier(name string) (n Notifier, ok bool) {
	if c, on := cs[name]; on {
		return c, true
	}
	ack, known := acks[name]
	return off(ack), known
}

// acks are the acknowledgement formats of every channel flashgrab has, on
// or off.
var acks = map[string]func(error) Reply{ChannelAlipay: alipayAck, ChannelWeChat: wechatAck}

// Names lists every channel flashgrab has, on or off, in order.
func Names() []string {
	return slices.Sorted(maps.Keys(acks))
}

// Known reports whether name is a channel flashgrab has (whether or not
// it is on here).
func Known(name string) bool {
	_, ok := acks[name]
	return ok
}

// off is the notify side of a channel that is not configured.
type off func(error) Reply

func (off) ParseNotify(func(string) string, []byte) (Notify, error) {
	return Notify{}, settle.ErrNoChannel
}

func (a off) Ack(err error) Reply { return a(err) }

// badNotify marks an error of the notify itself (it did not verify or
// parse), as opposed to one of settlement's: providers that answer the two
// differently (WeChat Pay: 400 against 500) tell them apart by it. Its text
// is the error's own.
type badNotify struct{ err error }

func (e badNotify) Error() string { return e.err.Error() }
func (e badNotify) Unwrap() error { return e.err }

// isBadNotify reports whether err is the notify's fault rather than ours:
// it did not verify or parse, or names a trade or an amount settlement does
// not have. A retry of the same notify cannot succeed.
func isBadNotify(err error) bool {
	var bad badNotify
	return errors.As(err, &bad) || errors.Is(err, settle.ErrUnknownTrade) || errors.Is(err, settle.ErrAmountMismatch)
}
