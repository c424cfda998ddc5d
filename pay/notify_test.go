package pay_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/pay/wechat"
	"github.com/flashgrab/flashgrab/settle"
)

// bothChannels is the registry of both channels on a sandbox's credentials
// (no trade is opened, so nothing needs to listen).
func bothChannels(t *testing.T) pay.Channels {
	t.Helper()
	dev, err := sandbox.NewDev("http://127.0.0.1:1", "http://127.0.0.1:1", 0.001)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	ac, err := alipay.New(dev.AlipayClient)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := wechat.New(dev.WeChatClient)
	if err != nil {
		t.Fatal(err)
	}
	return pay.NewChannels(ac, wc)
}

// TestNotifyAcks: each channel answers in its provider's format, and the
// refusal says whose fault it was where the provider cares (WeChat Pay: 400
// for the notify's, 404 for a channel that is off, 500 for ours, without
// our error's text).
func TestNotifyAcks(t *testing.T) {
	cs := bothChannels(t)
	if got := pay.Names(); len(got) != 2 || got[0] != pay.ChannelAlipay || got[1] != pay.ChannelWeChat {
		t.Fatalf("Names() = %v", got)
	}
	if ps := cs.Providers(); len(ps) != 2 || ps[pay.ChannelAlipay] == nil || ps[pay.ChannelWeChat] == nil {
		t.Fatalf("Providers() = %v", ps)
	}
	noHeader := func(string) string { return "" }
	_, aliBad := cs[pay.ChannelAlipay].ParseNotify(noHeader, []byte("out_trade_no=X&sign=forged"))
	_, wxBad := cs[pay.ChannelWeChat].ParseNotify(noHeader, []byte(`{"id":"forged"}`))
	if aliBad == nil || wxBad == nil {
		t.Fatalf("forged notifies accepted: alipay %v, wechat %v", aliBad, wxBad)
	}
	unknown := fmt.Errorf("notify for X9: %w", settle.ErrUnknownTrade)
	mismatch := fmt.Errorf("notify for X9: %w", settle.ErrAmountMismatch)
	down := errors.New("commit payment X9: dial tcp 127.0.0.1:3306: connection refused")
	const wxJSON = "application/json"
	cases := []struct {
		channel     string
		err         error
		status      int
		contentType string
		body        string
	}{
		{pay.ChannelAlipay, nil, 200, "text/plain; charset=utf-8", "success"},
		{pay.ChannelAlipay, aliBad, 200, "text/plain; charset=utf-8", "fail"},
		{pay.ChannelAlipay, unknown, 200, "text/plain; charset=utf-8", "fail"},
		{pay.ChannelAlipay, settle.ErrNoChannel, 200, "text/plain; charset=utf-8", "fail"},
		{pay.ChannelAlipay, down, 200, "text/plain; charset=utf-8", "fail"},
		{pay.ChannelWeChat, nil, 204, "", ""},
		{pay.ChannelWeChat, wxBad, 400, wxJSON, string(wechat.FailBody(wxBad.Error()))},
		{pay.ChannelWeChat, unknown, 400, wxJSON, string(wechat.FailBody(unknown.Error()))},
		{pay.ChannelWeChat, mismatch, 400, wxJSON, string(wechat.FailBody(mismatch.Error()))},
		{pay.ChannelWeChat, settle.ErrNoChannel, 404, wxJSON, `{"code":"FAIL","message":"payment channel not configured"}`},
		{pay.ChannelWeChat, down, 500, wxJSON, `{"code":"FAIL","message":"not recorded; retry later"}`},
	}
	for i, c := range cases {
		r := cs[c.channel].Ack(c.err)
		if r.Status != c.status || r.ContentType != c.contentType || string(r.Body) != c.body {
			t.Errorf("%d: %s Ack(%v) = %d %q %q; want %d %q %q", i, c.channel, c.err, r.Status, r.ContentType, r.Body,
				c.status, c.contentType, c.body)
		}
	}
}

// TestNotifierOfChannelOff: a channel flashgrab has but that is off here
// refuses every notify with settle.ErrNoChannel, in its provider's format;
// a name that is no channel has no notifier.
func TestNotifierOfChannelOff(t *testing.T) {
	none := pay.Channels{}
	for _, c := range []struct {
		channel string
		status  int
		body    string
	}{
		{pay.ChannelAlipay, 200, "fail"},
		{pay.ChannelWeChat, 404, `{"code":"FAIL","message":"payment channel not configured"}`},
	} {
		nf, ok := none.Notifier(c.channel)
		if !ok || !pay.Known(c.channel) {
			t.Fatalf("%s: no notifier while off", c.channel)
		}
		n, err := nf.ParseNotify(func(string) string { return "" }, []byte("anything"))
		if !errors.Is(err, settle.ErrNoChannel) || n.Paid != nil || n.Refund != nil {
			t.Fatalf("%s off: ParseNotify = %+v, %v; want ErrNoChannel", c.channel, n, err)
		}
		if r := nf.Ack(err); r.Status != c.status || string(r.Body) != c.body {
			t.Fatalf("%s off: Ack = %d %q; want %d %q", c.channel, r.Status, r.Body, c.status, c.body)
		}
	}
	if _, ok := none.Notifier("paypal"); ok || pay.Known("paypal") || pay.Known("") {
		t.Fatal("a name that is no channel has a notifier")
	}
	if cs := pay.NewChannels(nil, nil); len(cs) != 0 {
		t.Fatalf("NewChannels(nil, nil) = %v; want none on", cs)
	}
}
