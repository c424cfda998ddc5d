package main

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/pay"
	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/sandbox"
	"github.com/flashgrab/flashgrab/pay/wechat"
)

// paymentFlags configure the two channels. A channel is on when its app id is
// set, or always in sandbox mode. Keys are read from PEM files, never from
// the command line, so they stay out of shell history and process listings.
func paymentFlags() []cli.Flag {
	env := func(name, usage string) *cli.StringFlag {
		return &cli.StringFlag{Name: strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "FLASHGRAB_"), "_", "-")),
			Sources: cli.EnvVars(name), Usage: usage}
	}
	return []cli.Flag{
		&cli.BoolFlag{Name: "sandbox", Sources: cli.EnvVars("FLASHGRAB_SANDBOX"),
			Usage: "run the provider sandbox in-process and point both channels at it (default: on with --dev)"},
		&cli.StringFlag{Name: "sandbox-addr", Value: "127.0.0.1:8081", Sources: cli.EnvVars("FLASHGRAB_SANDBOX_ADDR"),
			Usage: "listen address of the in-process sandbox"},
		env("FLASHGRAB_PUBLIC_URL", "base URL at which the providers reach this server's /v1/notify/* (default http://<addr>)"),
		env("FLASHGRAB_ALIPAY_APP_ID", "Alipay app id; empty turns Alipay off"),
		env("FLASHGRAB_ALIPAY_SELLER_ID", "Alipay seller (partner) id, checked on every notify; required with the app id outside sandbox mode"),
		env("FLASHGRAB_ALIPAY_PRIVATE_KEY_FILE", "PEM file of the app's RSA2 private key"),
		env("FLASHGRAB_ALIPAY_PUBLIC_KEY_FILE", "PEM file of Alipay's public key (not the app's)"),
		&cli.StringFlag{Name: "alipay-gateway", Value: "http://127.0.0.1:8081/alipay/gateway.do", Sources: cli.EnvVars("FLASHGRAB_ALIPAY_GATEWAY"),
			Usage: "Alipay gateway; production " + alipay.ProductionGateway},
		env("FLASHGRAB_WECHAT_APP_ID", "WeChat app id; empty turns WeChat Pay off"),
		env("FLASHGRAB_WECHAT_MCH_ID", "WeChat Pay merchant id"),
		env("FLASHGRAB_WECHAT_MCH_SERIAL", "serial of the merchant API certificate"),
		env("FLASHGRAB_WECHAT_MCH_KEY_FILE", "PEM file of the merchant API private key"),
		env("FLASHGRAB_WECHAT_APIV3_KEY", "the 32-character APIv3 key (decrypts notifies)"),
		env("FLASHGRAB_WECHAT_PLATFORM_KEYS", "serial=file,... : WeChat Pay public keys (PUB_KEY_ID_...) or platform certificates, PEM"),
		&cli.StringFlag{Name: "wechat-host", Value: "http://127.0.0.1:8081/wechat", Sources: cli.EnvVars("FLASHGRAB_WECHAT_HOST"),
			Usage: "WeChat Pay API host; production https://api.mch.weixin.qq.com"},
		env("FLASHGRAB_WECHAT_APP_SECRET", "the mini program's app secret, for its login (code2Session) and so the jsapi method; empty turns them off"),
		env("FLASHGRAB_WECHAT_PAID_TEMPLATE_ID", "subscribe message template that tells a mini program buyer the order is paid (fields character_string1, amount2, time3); empty sends none (default in sandbox mode: the sandbox's)"),
		&cli.StringFlag{Name: "wechat-login-host", Value: "http://127.0.0.1:8081/wechat", Sources: cli.EnvVars("FLASHGRAB_WECHAT_LOGIN_HOST"),
			Usage: "host of the mini program login (code2Session); production " + wechat.DefaultLoginHost},
	}
}

// channels are the configured payment channels, and the in-process sandbox
// when there is one.
type channels struct {
	on    pay.Channels
	login *wechat.Login // the mini program login; nil when off
	// messenger and paidTemplate send "your order is paid"; nil or empty when off.
	messenger    *wechat.Messenger
	paidTemplate string
	dev          *sandbox.Dev
	server       *http.Server
}

func (c *channels) close() {
	if c.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.server.Shutdown(ctx)
	}
	if c.dev != nil {
		c.dev.Close()
	}
}

func openChannels(cmd *cli.Command, apiAddr string, dev bool, log *slog.Logger) (*channels, error) {
	public := strings.TrimRight(cmd.String("public-url"), "/")
	if public == "" {
		public = "http://" + apiAddr
	}
	ch := &channels{}
	var ac *alipay.Client
	var wc *wechat.Client
	sandboxOn := dev
	if cmd.IsSet("sandbox") {
		sandboxOn = cmd.Bool("sandbox")
	}
	if sandboxOn {
		ln, err := net.Listen("tcp", cmd.String("sandbox-addr"))
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		d, err := sandbox.NewDev("http://"+ln.Addr().String(), public, 0.01)
		if err != nil {
			ln.Close()
			return nil, err
		}
		ch.dev, ch.server = d, &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go ch.server.Serve(ln)
		log.Info("payment sandbox serving (Alipay and WeChat Pay simulators)", "addr", ln.Addr().String())
		if ac, err = alipay.New(d.AlipayClient); err != nil {
			return nil, err
		}
		if wc, err = wechat.New(d.WeChatClient); err != nil {
			return nil, err
		}
		if ch.login, err = wechat.NewLogin(d.WeChatLogin); err != nil {
			return nil, err
		}
		if ch.messenger, err = wechat.NewMessenger(d.WeChatLogin); err != nil {
			return nil, err
		}
		ch.paidTemplate = sandbox.DevPaidTemplateID
		if cmd.IsSet("wechat-paid-template-id") {
			ch.paidTemplate = cmd.String("wechat-paid-template-id")
		}
	} else {
		var err error
		if ac, err = alipayFromFlags(cmd, public); err != nil {
			return nil, err
		}
		if wc, err = wechatFromFlags(cmd, public); err != nil {
			return nil, err
		}
		if wc != nil && cmd.String("wechat-app-secret") != "" {
			mini := wechat.MiniProgramConfig{AppID: cmd.String("wechat-app-id"),
				AppSecret: cmd.String("wechat-app-secret"), Host: cmd.String("wechat-login-host")}
			if ch.login, err = wechat.NewLogin(mini); err != nil {
				return nil, err
			}
			if ch.paidTemplate = cmd.String("wechat-paid-template-id"); ch.paidTemplate != "" {
				if ch.messenger, err = wechat.NewMessenger(mini); err != nil {
					return nil, err
				}
			}
		}
	}
	ch.on = pay.NewChannels(ac, wc)
	return ch, nil
}

// alipayFromFlags builds the Alipay client of a real deployment (sandbox
// mode off). The seller id is required there: without it a notify signed by
// Alipay for another merchant of the same app would be accepted.
func alipayFromFlags(cmd *cli.Command, public string) (*alipay.Client, error) {
	if cmd.String("alipay-app-id") == "" {
		return nil, nil
	}
	if cmd.String("alipay-seller-id") == "" {
		return nil, errors.New("--alipay-seller-id (FLASHGRAB_ALIPAY_SELLER_ID) is required with --alipay-app-id outside sandbox mode: " +
			"every notify's seller_id is checked against it (your 2088… partner id)")
	}
	priv, err := readPEM(cmd.String("alipay-private-key-file"), "alipay-private-key-file")
	if err != nil {
		return nil, err
	}
	key, err := alipay.ParsePrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("alipay private key: %w", err)
	}
	pubPEM, err := readPEM(cmd.String("alipay-public-key-file"), "alipay-public-key-file")
	if err != nil {
		return nil, err
	}
	pub, err := alipay.ParsePublicKey(pubPEM)
	if err != nil {
		return nil, fmt.Errorf("alipay public key: %w", err)
	}
	return alipay.New(alipay.Config{AppID: cmd.String("alipay-app-id"), SellerID: cmd.String("alipay-seller-id"),
		PrivateKey: key, AlipayPublicKey: pub, Gateway: cmd.String("alipay-gateway"),
		NotifyURL: public + api.NotifyPath(pay.ChannelAlipay)})
}

func wechatFromFlags(cmd *cli.Command, public string) (*wechat.Client, error) {
	if cmd.String("wechat-app-id") == "" {
		return nil, nil
	}
	priv, err := readPEM(cmd.String("wechat-mch-key-file"), "wechat-mch-key-file")
	if err != nil {
		return nil, err
	}
	key, err := wechat.ParsePrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("wechat merchant key: %w", err)
	}
	verifiers := map[string]*rsa.PublicKey{}
	for _, item := range strings.Split(cmd.String("wechat-platform-keys"), ",") {
		serial, file, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("--wechat-platform-keys: %q is not serial=file", item)
		}
		data, err := readPEM(file, "wechat-platform-keys")
		if err != nil {
			return nil, err
		}
		var pub *rsa.PublicKey
		if strings.Contains(string(data), "CERTIFICATE") {
			_, pub, err = wechat.ParseCertificate(data)
		} else {
			pub, err = wechat.ParsePublicKey(data)
		}
		if err != nil {
			return nil, fmt.Errorf("wechat platform key %s: %w", serial, err)
		}
		verifiers[serial] = pub
	}
	return wechat.New(wechat.Config{AppID: cmd.String("wechat-app-id"), MchID: cmd.String("wechat-mch-id"),
		MchSerial: cmd.String("wechat-mch-serial"), MchKey: key, APIv3Key: cmd.String("wechat-apiv3-key"),
		Verifiers: verifiers, Host: cmd.String("wechat-host"), NotifyURL: public + api.NotifyPath(pay.ChannelWeChat)})
}

func readPEM(path, flag string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("--%s is required", flag)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return b, nil
}

func sandboxCommand() *cli.Command {
	return &cli.Command{
		Name:  "sandbox",
		Usage: "run the Alipay and WeChat Pay simulators on their own, and write matching merchant credentials",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8081", Usage: "listen address"},
			&cli.StringFlag{Name: "notify-base", Value: "http://127.0.0.1:8080", Usage: "base URL of the flashgrab server receiving notifies"},
			&cli.StringFlag{Name: "creds-dir", Value: "sandbox-creds", Usage: "where to write the merchant keys and flashgrab.env"},
			&cli.FloatFlag{Name: "retry-scale", Value: 0.01, Usage: "compress the providers' notify retry schedules by this factor"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ln, err := net.Listen("tcp", cmd.String("addr"))
			if err != nil {
				return err
			}
			d, err := sandbox.NewDev("http://"+ln.Addr().String(), cmd.String("notify-base"), cmd.Float("retry-scale"))
			if err != nil {
				return err
			}
			defer d.Close()
			envFile, err := d.WriteCredentials(cmd.String("creds-dir"))
			if err != nil {
				return err
			}
			fmt.Printf("sandbox serving on http://%s (Alipay under /alipay/, WeChat Pay under /wechat/)\n", ln.Addr())
			fmt.Printf("buyer %s holds %d fen, seller %s holds %d fen\n", sandbox.BuyerAccount,
				d.Wallets.Balance(sandbox.BuyerAccount), sandbox.SellerAccount, d.Wallets.Balance(sandbox.SellerAccount))
			fmt.Printf("merchant credentials: set -a; . %s; set +a   (then flashgrab serve)\n", envFile)
			srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
			go func() { <-ctx.Done(); srv.Shutdown(context.Background()) }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
}
