package pay

import (
	"slices"

	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// methods are the payment methods of each channel, the default first.
var methods = map[string][]string{
	ChannelAlipay: {settle.MethodQR, settle.MethodApp},
	ChannelWeChat: {settle.MethodQR, settle.MethodApp, settle.MethodJSAPI},
}

// Methods lists the payment methods of a channel, in order; nil for a name
// that is no channel.
func Methods(channel string) []string { return slices.Clone(methods[channel]) }

// Supports reports whether the channel can be paid by method.
func Supports(channel, method string) bool { return slices.Contains(methods[channel], method) }

// ClientParams are what the payer's client needs to pay a trade by an SDK
// method, as the provider's SDK takes them; at most one field is set (none
// for MethodQR, whose URL is the trade's own).
type ClientParams struct {
	// OrderString is Alipay APP's signed order string for the Alipay SDK.
	OrderString string
	// WeChatApp are WeChat APP's PayReq fields for the WeChat SDK.
	WeChatApp *wechat.AppPayParams
	// WeChatJSAPI are wx.requestPayment's fields (mini program, JSAPI).
	WeChatJSAPI *wechat.JSAPIPayParams
}
