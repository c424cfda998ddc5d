package wechat

import (
	"strconv"
)

// PackageSignWXPay is the fixed package value of an APP payment.
const PackageSignWXPay = "Sign=WXPay"

// AppPayParams are what an app hands the WeChat SDK (PayReq) to pay a trade
// opened with Prepay(App, …), field names as the SDK takes them.
type AppPayParams struct {
	AppID     string `json:"appid"`
	PartnerID string `json:"partnerid"` // the merchant id
	PrepayID  string `json:"prepayid"`
	Package   string `json:"package"` // always Sign=WXPay
	NonceStr  string `json:"noncestr"`
	Timestamp string `json:"timestamp"` // Unix seconds
	// Sign is SHA256withRSA by the merchant key over
	// appid\ntimestamp\nnoncestr\nprepayid\n, standard base64.
	Sign string `json:"sign"`
}

// JSAPIPayParams are what a mini program passes to wx.requestPayment (or an
// Official Account page to WeixinJSBridge) to pay a trade opened with
// Prepay(JSAPI, …), field names as the API takes them.
type JSAPIPayParams struct {
	AppID     string `json:"appId"`
	TimeStamp string `json:"timeStamp"` // Unix seconds
	NonceStr  string `json:"nonceStr"`
	Package   string `json:"package"`  // prepay_id=<prepay id>
	SignType  string `json:"signType"` // always RSA
	// PaySign is SHA256withRSA by the merchant key over
	// appId\ntimeStamp\nnonceStr\npackage\n, standard base64.
	PaySign string `json:"paySign"`
}

// clientMessage is what the merchant signs for a payer's client: each field
// followed by a newline, the rule of both APP and JSAPI.
func clientMessage(fields ...string) []byte {
	var b []byte
	for _, f := range fields {
		b = append(b, f...)
		b = append(b, '\n')
	}
	return b
}

// AppPayParams signs the SDK parameters of an APP trade with a fresh nonce
// and the current time. A prepay id stays valid for two hours, so an app may
// ask again for the same trade and gets new parameters each time.
func (c *Client) AppPayParams(prepayID string) (AppPayParams, error) {
	nonce, err := newNonce()
	if err != nil {
		return AppPayParams{}, err
	}
	p := AppPayParams{AppID: c.cfg.AppID, PartnerID: c.cfg.MchID, PrepayID: prepayID, Package: PackageSignWXPay,
		NonceStr: nonce, Timestamp: strconv.FormatInt(c.now().Unix(), 10)}
	p.Sign, err = signSHA256(c.cfg.MchKey, clientMessage(p.AppID, p.Timestamp, p.NonceStr, p.PrepayID))
	if err != nil {
		return AppPayParams{}, err
	}
	return p, nil
}

// JSAPIPayParams signs the wx.requestPayment parameters of a JSAPI trade
// with a fresh nonce and the current time.
func (c *Client) JSAPIPayParams(prepayID string) (JSAPIPayParams, error) {
	nonce, err := newNonce()
	if err != nil {
		return JSAPIPayParams{}, err
	}
	p := JSAPIPayParams{AppID: c.cfg.AppID, TimeStamp: strconv.FormatInt(c.now().Unix(), 10), NonceStr: nonce,
		Package: "prepay_id=" + prepayID, SignType: "RSA"}
	p.PaySign, err = signSHA256(c.cfg.MchKey, clientMessage(p.AppID, p.TimeStamp, p.NonceStr, p.Package))
	if err != nil {
		return JSAPIPayParams{}, err
	}
	return p, nil
}
