package sandbox

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/flashgrab/flashgrab/pay/alipay"
	"github.com/flashgrab/flashgrab/pay/wechat"
)

// Dev is both simulated providers behind one handler, with freshly generated
// credentials for both sides: Alipay under /alipay/, WeChat Pay under
// /wechat/. It is what `serve --dev` runs in-process and what
// `flashgrab sandbox` serves on its own.
type Dev struct {
	Alipay  *Alipay
	WeChat  *WeChat
	Wallets *Wallets
	// The client configurations that match the simulators' keys.
	AlipayClient alipay.Config
	WeChatClient wechat.Config
	// WeChatLogin is the mini program's configuration (code2Session, the
	// access_token and subscribe messages against the sandbox, with its app
	// secret).
	WeChatLogin wechat.MiniProgramConfig
}

// NewDev makes the simulators for a sandbox reachable at base (e.g.
// "http://127.0.0.1:8081") whose notifies go to notifyBase (the flashgrab
// server, e.g. "http://127.0.0.1:8080"). scale compresses the providers'
// retry schedules (0.01: Alipay's 4 minutes become 2.4 s).
func NewDev(base, notifyBase string, scale float64) (*Dev, error) {
	base, notifyBase = strings.TrimRight(base, "/"), strings.TrimRight(notifyBase, "/")
	ac, as, err := DevAlipay(base+"/alipay/gateway.do", notifyBase+"/v1/notify/alipay")
	if err != nil {
		return nil, err
	}
	wc, ws, err := DevWeChat(base+"/wechat", notifyBase+"/v1/notify/wechat")
	if err != nil {
		return nil, err
	}
	as.Retry.Scale, ws.Retry.Scale = scale, scale
	ws.RefundAfter = time.Duration(float64(wxDevRefundAfter) * scale)
	w := NewWallets()
	a, err := NewAlipay(as, w)
	if err != nil {
		return nil, err
	}
	x, err := NewWeChat(ws, w)
	if err != nil {
		a.Close()
		return nil, err
	}
	return &Dev{Alipay: a, WeChat: x, Wallets: w, AlipayClient: ac, WeChatClient: wc,
		WeChatLogin: wechat.MiniProgramConfig{AppID: wc.AppID, AppSecret: ws.AppSecret, Host: base + "/wechat"}}, nil
}

// Handler serves both simulators.
func (d *Dev) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/alipay/", http.StripPrefix("/alipay", d.Alipay))
	mux.Handle("/wechat/", http.StripPrefix("/wechat", d.WeChat))
	return mux
}

// Close stops the notify deliveries in flight.
func (d *Dev) Close() {
	d.Alipay.Close()
	d.WeChat.Close()
}

// WriteCredentials writes the merchant side's keys into dir as PEM files,
// and an env file (flashgrab.env) that points `flashgrab serve` at them and
// at this sandbox; it returns the env file's path. Files are 0600: they hold
// private keys.
func (d *Dev) WriteCredentials(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	write := func(name string, block *pem.Block) (string, error) {
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
	}
	priv := func(k *rsa.PrivateKey) *pem.Block {
		return &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	}
	pub := func(k *rsa.PublicKey) *pem.Block {
		der, _ := x509.MarshalPKIXPublicKey(k)
		return &pem.Block{Type: "PUBLIC KEY", Bytes: der}
	}
	a, w := d.AlipayClient, d.WeChatClient
	env := []string{
		"FLASHGRAB_SANDBOX=false",
		"FLASHGRAB_ALIPAY_APP_ID=" + a.AppID,
		"FLASHGRAB_ALIPAY_SELLER_ID=" + a.SellerID,
		"FLASHGRAB_ALIPAY_GATEWAY=" + a.Gateway,
		"FLASHGRAB_WECHAT_APP_ID=" + w.AppID,
		"FLASHGRAB_WECHAT_MCH_ID=" + w.MchID,
		"FLASHGRAB_WECHAT_MCH_SERIAL=" + w.MchSerial,
		"FLASHGRAB_WECHAT_APIV3_KEY=" + w.APIv3Key,
		"FLASHGRAB_WECHAT_HOST=" + w.Host,
		"FLASHGRAB_WECHAT_APP_SECRET=" + d.WeChatLogin.AppSecret,
		"FLASHGRAB_WECHAT_LOGIN_HOST=" + d.WeChatLogin.Host,
		"FLASHGRAB_WECHAT_PAID_TEMPLATE_ID=" + DevPaidTemplateID,
	}
	files := []struct {
		name, env string
		block     *pem.Block
	}{
		{"alipay_app_private_key.pem", "FLASHGRAB_ALIPAY_PRIVATE_KEY_FILE", priv(a.PrivateKey)},
		{"alipay_public_key.pem", "FLASHGRAB_ALIPAY_PUBLIC_KEY_FILE", pub(a.AlipayPublicKey)},
		{"wechat_merchant_private_key.pem", "FLASHGRAB_WECHAT_MCH_KEY_FILE", priv(w.MchKey)},
	}
	for _, f := range files {
		path, err := write(f.name, f.block)
		if err != nil {
			return "", err
		}
		env = append(env, f.env+"="+path)
	}
	serials := make([]string, 0, len(w.Verifiers))
	for s := range w.Verifiers {
		serials = append(serials, s)
	}
	sort.Strings(serials)
	var verifiers []string
	for _, s := range serials {
		path, err := write("wechat_platform_"+s+".pem", pub(w.Verifiers[s]))
		if err != nil {
			return "", err
		}
		verifiers = append(verifiers, s+"="+path)
	}
	env = append(env, "FLASHGRAB_WECHAT_PLATFORM_KEYS="+strings.Join(verifiers, ","))
	path := filepath.Join(dir, "flashgrab.env")
	if err := os.WriteFile(path, []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}
