package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
)

// demoCommand is `flashgrab demo`: the README's walkthrough as one command,
// with fresh ids every run, so it works against a server that has seen it
// before and needs no id copied by hand.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the README walkthrough (sale, grabs, both payment channels, WeChat mini program pay, a red packet) against a running dev server",
		Description: "Needs a server with the payment sandbox (make run, or serve --dev). Tokens are minted from\n" +
			"--jwt-secret / FLASHGRAB_JWT_SECRET, else from the dev secret file serve --dev keeps. Every\n" +
			"request and answer is printed; the first unexpected answer stops the demo with a non-zero exit.\n" +
			"Payment settles asynchronously: after the sandbox pay the order reads \"pending\" until the\n" +
			"provider's notify arrives, so the demo polls GET /v1/orders/{id} until it reads \"paid\".",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: "http://127.0.0.1:8080", Sources: cli.EnvVars("FLASHGRAB_URL"),
				Usage: "base URL of the flashgrab server"},
			&cli.StringFlag{Name: "sandbox-url", Value: "http://127.0.0.1:8081", Usage: "base URL of the payment sandbox"},
			secretFlag, devSecretFlag,
			&cli.DurationFlag{Name: "wait", Value: 30 * time.Second, Usage: "how long to wait for a paid order's notify"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			secret, err := clientSecret(cmd, "jwt-secret")
			if err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			d := &demo{
				base:    strings.TrimRight(cmd.String("url"), "/"),
				sandbox: strings.TrimRight(cmd.String("sandbox-url"), "/"),
				auth:    api.Auth{Secret: []byte(secret)},
				client:  &http.Client{Timeout: 10 * time.Second},
				out:     cmd.Root().Writer,
				wait:    cmd.Duration("wait"),
				run:     newDemoRun(),
			}
			return d.all(ctx)
		},
	}
}

// demo drives one walkthrough against a server.
type demo struct {
	base, sandbox string
	auth          api.Auth
	client        *http.Client
	out           io.Writer
	wait          time.Duration
	run           string // makes every id of this run fresh
}

// newDemoRun is a run id: the time for the reader, random bits so that two
// runs in the same second do not collide.
func newDemoRun() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("0102150405") + hex.EncodeToString(b[:])
}

// id names a sale, user or merchant of this run.
func (d *demo) id(name string) string { return name + "-" + d.run }

// token mints a short-lived token for user.
func (d *demo) token(user string, admin bool) (string, error) {
	return d.auth.Mint(user, admin, time.Hour)
}

// call sends one request, prints it and the answer, and decodes a JSON
// answer into into (if not nil). An answer other than want is an error that
// names the request and carries the answer.
func (d *demo) call(ctx context.Context, method, rawURL, user string, admin bool, body string, want int, into any) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return err
	}
	if user != "" {
		tok, err := d.token(user, admin)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	who := "token of " + user
	switch {
	case user == "":
		who = "no token"
	case admin:
		who = "admin token"
	}
	shown := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		shown = u.Host + u.RequestURI()
	}
	fmt.Fprintf(d.out, "> %s %s (%s) %s\n", method, shown, who, body)
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, shown, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, shown, err)
	}
	fmt.Fprintf(d.out, "< %d %s\n", resp.StatusCode, bytes.TrimSpace(got))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, shown, resp.StatusCode, want, bytes.TrimSpace(got))
	}
	if into != nil {
		if err := json.Unmarshal(got, into); err != nil {
			return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, shown, err)
		}
	}
	return nil
}

// step prints a heading between the requests.
func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n== "+format+"\n", args...)
}

// The answers the demo reads; the fields it checks only.
type (
	demoGrab struct {
		OrderID     string `json:"order_id"`
		AmountCents int64  `json:"amount_cents"`
		Repeat      bool   `json:"repeat"`
	}
	demoOrder struct {
		Status string `json:"status"`
	}
	demoPay struct {
		OutTradeNo  string          `json:"out_trade_no"`
		JSAPIParams json.RawMessage `json:"jsapi_params"`
	}
	demoCode struct {
		Code string `json:"code"`
	}
	demoAccount struct {
		BalanceCents int64 `json:"balance_cents"`
	}
	demoPacket struct {
		ID             string `json:"id"`
		RemainingCents int64  `json:"remaining_cents"`
		RemainingCount int64  `json:"remaining_count"`
		Grabs          []struct {
			UserID      string `json:"user_id"`
			AmountCents int64  `json:"amount_cents"`
		} `json:"grabs"`
	}
	demoShare struct {
		AmountCents int64 `json:"amount_cents"`
		Repeat      bool  `json:"repeat"`
	}
)

const demoPrice = 599900 // fen: 5,999 yuan

// all runs the walkthrough: a sale paid through both channels, then a red
// packet.
func (d *demo) all(ctx context.Context) error {
	sale, merchant := d.id("phone"), d.id("shop")
	d.step("create sale %s for merchant %s (admin)", sale, merchant)
	now := time.Now().UTC()
	body := fmt.Sprintf(`{"id":%q,"merchant_id":%q,"price_cents":%d,"stock":100,"per_user_limit":1,"starts_at":%q,"ends_at":%q}`,
		sale, merchant, demoPrice, now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
	if err := d.call(ctx, "POST", d.base+"/v1/sales", "admin", true, body, http.StatusCreated, nil); err != nil {
		return err
	}
	if err := d.buyAndPay(ctx, sale, merchant, d.id("alice"), pay.ChannelAlipay, "qr", demoPrice); err != nil {
		return err
	}
	if err := d.buyAndPay(ctx, sale, merchant, d.id("bob"), pay.ChannelWeChat, "qr", 2*demoPrice); err != nil {
		return err
	}
	if err := d.buyAndPay(ctx, sale, merchant, d.id("carol"), pay.ChannelWeChat, "jsapi", 3*demoPrice); err != nil {
		return err
	}
	if err := d.packet(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\ndemo passed: every answer was the expected one (run %s)\n", d.run)
	return nil
}

// buyAndPay grabs one unit for user, grabs again (the same order), pays it on
// channel by method through the sandbox, waits for the notify to mark it
// paid, and checks that the merchant's balance is then wantBalance.
func (d *demo) buyAndPay(ctx context.Context, sale, merchant, user, channel, method string, wantBalance int64) error {
	d.step("%s grabs, then grabs again (a retry returns the same order)", user)
	var g, again demoGrab
	if err := d.call(ctx, "POST", d.base+"/v1/sales/"+sale+"/grab", user, false, "", http.StatusOK, &g); err != nil {
		return err
	}
	if g.Repeat || g.AmountCents != demoPrice {
		return fmt.Errorf("first grab: repeat %v, amount %d; want false and %d", g.Repeat, g.AmountCents, demoPrice)
	}
	if err := d.call(ctx, "POST", d.base+"/v1/sales/"+sale+"/grab", user, false, "", http.StatusOK, &again); err != nil {
		return err
	}
	if !again.Repeat || again.OrderID != g.OrderID {
		return fmt.Errorf("second grab: order %s repeat %v; want the same order %s with repeat true", again.OrderID, again.Repeat, g.OrderID)
	}
	order := d.base + "/v1/orders/" + g.OrderID
	var o demoOrder
	if err := d.call(ctx, "GET", order, user, false, "", http.StatusOK, &o); err != nil {
		return err
	}
	if o.Status != "pending" {
		return fmt.Errorf("order %s is %q before payment, want pending", g.OrderID, o.Status)
	}

	if method == "jsapi" {
		if err := d.miniProgramLogin(ctx, user); err != nil {
			return err
		}
	}
	d.step("%s pays order %s with %s (%s) in the sandbox", user, g.OrderID, channel, method)
	var p demoPay
	if err := d.call(ctx, "POST", order+"/pay", user, false, fmt.Sprintf(`{"channel":%q,"method":%q}`, channel, method), http.StatusOK, &p); err != nil {
		return err
	}
	if p.OutTradeNo == "" {
		return fmt.Errorf("pay %s: no out_trade_no in the answer", g.OrderID)
	}
	switch method {
	case "jsapi": // what wx.requestPayment sends, with the answer's jsapi_params
		if len(p.JSAPIParams) == 0 {
			return fmt.Errorf("pay %s by jsapi: no jsapi_params in the answer", g.OrderID)
		}
		payURL := d.sandbox + "/wechat/sdk/jsapi?openid=" + url.QueryEscape("o"+user)
		if err := d.call(ctx, "POST", payURL, "", false, string(p.JSAPIParams), http.StatusOK, nil); err != nil {
			return err
		}
	default:
		payURL := d.sandbox + "/" + channel + "/pay?out_trade_no=" + url.QueryEscape(p.OutTradeNo)
		if err := d.call(ctx, "POST", payURL, "", false, "", http.StatusOK, nil); err != nil {
			return err
		}
	}

	d.step("wait for the %s notify: the order reads pending until it arrives (up to %v)", channel, d.wait)
	if err := d.waitPaid(ctx, order, user); err != nil {
		return err
	}
	var a demoAccount
	if err := d.call(ctx, "GET", d.base+"/v1/accounts/"+merchant, "admin", true, "", http.StatusOK, &a); err != nil {
		return err
	}
	if a.BalanceCents != wantBalance {
		return fmt.Errorf("merchant %s holds %d fen after the %s payment, want %d", merchant, a.BalanceCents, channel, wantBalance)
	}
	return nil
}

// miniProgramLogin logs user in as the WeChat user o<user>: wx.login in the
// sandbox gives a code, POST /v1/wechat/login exchanges it; then the user
// accepts the "your order is paid" subscribe message.
func (d *demo) miniProgramLogin(ctx context.Context, user string) error {
	d.step("%s opens the mini program: wx.login, then the server's code2Session, and accepts the paid message", user)
	openID := url.QueryEscape("o" + user)
	var c demoCode
	if err := d.call(ctx, "POST", d.sandbox+"/wechat/sdk/login?openid="+openID, "", false, "", http.StatusOK, &c); err != nil {
		return err
	}
	if err := d.call(ctx, "POST", d.base+"/v1/wechat/login", user, false, fmt.Sprintf(`{"code":%q}`, c.Code), http.StatusOK, nil); err != nil {
		return err
	}
	return d.call(ctx, "POST", d.sandbox+"/wechat/sdk/subscribe?openid="+openID+"&template_id="+sandbox.DevPaidTemplateID,
		"", false, "", http.StatusNoContent, nil)
}

// waitPaid polls the order until it reads paid, printing only the first
// answer and the last, so a slow notify does not flood the output.
func (d *demo) waitPaid(ctx context.Context, order, user string) error {
	deadline := time.Now().Add(d.wait)
	quiet := &demo{base: d.base, auth: d.auth, client: d.client, out: io.Discard}
	for polls := 0; ; polls++ {
		who := d
		if polls > 0 {
			who = quiet
		}
		var o demoOrder
		if err := who.call(ctx, "GET", order, user, false, "", http.StatusOK, &o); err != nil {
			return err
		}
		if o.Status == "paid" {
			if polls > 0 {
				fmt.Fprintf(d.out, "  ... paid after %d more polls of 100 ms\n", polls)
				return d.call(ctx, "GET", order, user, false, "", http.StatusOK, &o)
			}
			return nil
		}
		if o.Status != "pending" {
			return fmt.Errorf("order %s is %q while waiting for the notify, want pending then paid", order, o.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("order %s still pending %v after the sandbox pay: no notify arrived (is the sandbox's notify URL this server?)", order, d.wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// packet credits a sender, sends a packet of 2 yuan in 5 random shares, lets
// two users grab one share each and reads the packet back.
func (d *demo) packet(ctx context.Context) error {
	sender, u1, u2 := d.id("carol"), d.id("dave"), d.id("erin")
	d.step("a red packet: credit %s 100 yuan (admin), send 2 yuan in 5 shares", sender)
	var a demoAccount
	if err := d.call(ctx, "POST", d.base+"/v1/admin/accounts/"+sender+"/credit", "admin", true,
		fmt.Sprintf(`{"amount_cents":10000,"ref":%q}`, d.id("seed")), http.StatusOK, &a); err != nil {
		return err
	}
	if a.BalanceCents != 10000 {
		return fmt.Errorf("%s holds %d fen after the credit, want 10000", sender, a.BalanceCents)
	}
	var p demoPacket
	if err := d.call(ctx, "POST", d.base+"/v1/packets", sender, false, `{"total_cents":200,"count":5,"mode":"random"}`,
		http.StatusCreated, &p); err != nil {
		return err
	}
	if p.ID == "" {
		return fmt.Errorf("create packet: no id in the answer")
	}
	d.step("%s and %s grab a share each", u1, u2)
	var sum int64
	for _, u := range []string{u1, u2} {
		var s demoShare
		if err := d.call(ctx, "POST", d.base+"/v1/packets/"+p.ID+"/grab", u, false, "", http.StatusOK, &s); err != nil {
			return err
		}
		if s.Repeat || s.AmountCents < 1 {
			return fmt.Errorf("%s's share: %d fen, repeat %v; want at least 1 fen, not a repeat", u, s.AmountCents, s.Repeat)
		}
		sum += s.AmountCents
	}
	d.step("read the packet")
	var got demoPacket
	if err := d.call(ctx, "GET", d.base+"/v1/packets/"+p.ID, "", false, "", http.StatusOK, &got); err != nil {
		return err
	}
	if got.RemainingCount != 3 || got.RemainingCents != 200-sum || len(got.Grabs) != 2 {
		return fmt.Errorf("packet %s: %d shares and %d fen left, %d grabs; want 3, %d and 2",
			p.ID, got.RemainingCount, got.RemainingCents, len(got.Grabs), 200-sum)
	}
	return nil
}
