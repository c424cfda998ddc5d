package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Errors from ParseNotify (and from response verification). Every one of them
// means: change nothing and answer with a 4xx/5xx and FailBody. Match with
// errors.Is; the returned errors carry details.
var (
	// ErrProbe marks a WeChat Pay signature-check probe
	// (Wechatpay-Signature starting with WECHATPAY/SIGNTEST/). It is never a payment.
	ErrProbe = errors.New("wechat: signature probe (WECHATPAY/SIGNTEST), not a payment")
	// ErrStale means Wechatpay-Timestamp is MaxSkew or more away from our clock.
	ErrStale = errors.New("wechat: stale timestamp")
	// ErrBadSignature covers a missing, malformed or wrong signature and an
	// unknown Wechatpay-Serial.
	ErrBadSignature = errors.New("wechat: bad signature")
	// ErrDecrypt means the AEAD_AES_256_GCM resource did not open (wrong key,
	// tampered ciphertext, nonce or associated data).
	ErrDecrypt = errors.New("wechat: resource decryption failed")
	// ErrMalformed means a verified message was not the JSON we expect.
	ErrMalformed = errors.New("wechat: malformed message")
	// ErrUnexpectedEvent means a verified notify that is not about a
	// transaction (e.g. a refund notify sent to the payment endpoint).
	ErrUnexpectedEvent = errors.New("wechat: notify is not a transaction event")
	// ErrWrongMerchant means a verified message names another mchid or appid.
	ErrWrongMerchant = errors.New("wechat: message is for another merchant or app")
)

// NotifyHeader holds the four signature headers of a notify (or response).
type NotifyHeader struct {
	Timestamp, Nonce, Signature, Serial string
}

// NotifyHeaderFrom fills a NotifyHeader from any header getter, e.g.
// r.Header.Get for net/http or
// func(k string) string { return string(ctx.Request.Header.Peek(k)) } for fasthttp.
func NotifyHeaderFrom(get func(name string) string) NotifyHeader {
	return NotifyHeader{
		Timestamp: get(HeaderTimestamp),
		Nonce:     get(HeaderNonce),
		Signature: get(HeaderSignature),
		Serial:    get(HeaderSerial),
	}
}

// FailBody is the JSON body to send with a 4xx/5xx status when a notify is
// refused; WeChat Pay then retries. The status code, not the body, decides.
func FailBody(message string) []byte {
	b, err := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{"FAIL", message})
	if err != nil { // cannot happen for two strings; keep a valid body anyway
		return []byte(`{"code":"FAIL","message":"fail"}`)
	}
	return b
}

// maxNotifyBody bounds what ParseNotify accepts; real notifies are ~1 KiB.
const maxNotifyBody = 64 << 10

type notifyEnvelope struct {
	ID           string `json:"id"`
	CreateTime   string `json:"create_time"`
	EventType    string `json:"event_type"`
	ResourceType string `json:"resource_type"`
	Summary      string `json:"summary"`
	Resource     *struct {
		OriginalType   string `json:"original_type"`
		Algorithm      string `json:"algorithm"`
		Ciphertext     string `json:"ciphertext"`
		Nonce          string `json:"nonce"`
		AssociatedData string `json:"associated_data"`
	} `json:"resource"`
}

// Event is a verified, decrypted notify: a payment (TRANSACTION.*) or a
// refund (REFUND.SUCCESS, REFUND.ABNORMAL, REFUND.CLOSED). Exactly one of
// Transaction and Refund is set.
type Event struct {
	ID          string
	Type        string // event_type, e.g. TRANSACTION.SUCCESS, REFUND.ABNORMAL
	Transaction *Transaction
	Refund      *RefundResult
}

// ParseNotify authenticates a payment notify and returns its transaction; a
// verified notify of another kind (a refund) gives ErrUnexpectedEvent. A
// handler that takes refund notifies on the same URL uses ParseEvent.
//
// The caller still has to check that OutTradeNo is a known order, that
// TotalCents equals the order's amount, that Paid is true, and must apply it
// idempotently (duplicates arrive about a second apart) before answering 200/204.
func (c *Client) ParseNotify(h NotifyHeader, body []byte) (*Transaction, error) {
	ev, err := c.parseEvent(h, body, false)
	if err != nil {
		return nil, err
	}
	return ev.Transaction, nil
}

// ParseEvent authenticates a notify and returns its decrypted resource,
// dispatched on resource.original_type ("transaction" or "refund").
//
// Order matters and follows the provider's rules: the signature is checked
// over the raw body before anything is parsed (probe → ErrProbe, timestamp
// → ErrStale, serial/signature → ErrBadSignature); then the resource is
// decrypted with the APIv3 key (ErrDecrypt) and parsed (ErrMalformed); then
// mchid (and a transaction's appid) must be ours (ErrWrongMerchant).
//
// For a refund the caller still has to check that OutRefundNo is a refund it
// asked for and that RefundCents is what it asked, and apply the state
// idempotently before acknowledging.
func (c *Client) ParseEvent(h NotifyHeader, body []byte) (*Event, error) {
	return c.parseEvent(h, body, true)
}

// parseEvent refuses a refund before decrypting it unless refunds are wanted.
func (c *Client) parseEvent(h NotifyHeader, body []byte, refunds bool) (*Event, error) {
	if len(body) > maxNotifyBody {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrMalformed, len(body), maxNotifyBody)
	}
	if err := verifySigned(c.verifiers, c.now(), h, body); err != nil {
		return nil, err
	}
	var env notifyEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: notify envelope: %v", ErrMalformed, err)
	}
	if env.Resource == nil {
		return nil, fmt.Errorf("%w: notify %q has no resource", ErrMalformed, env.ID)
	}
	r := env.Resource
	if r.OriginalType != "transaction" && (!refunds || r.OriginalType != "refund") {
		return nil, fmt.Errorf("%w: notify %q event %q original_type %q", ErrUnexpectedEvent, env.ID, env.EventType, r.OriginalType)
	}
	if r.Algorithm != "AEAD_AES_256_GCM" {
		return nil, fmt.Errorf("%w: notify %q algorithm %q", ErrMalformed, env.ID, r.Algorithm)
	}
	plain, err := DecryptResource(c.apiV3Key, r.Nonce, r.AssociatedData, r.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("notify %q: %w", env.ID, err)
	}
	ev := &Event{ID: env.ID, Type: env.EventType}
	if r.OriginalType == "refund" {
		rf, err := parseRefund(plain)
		if err != nil {
			return nil, fmt.Errorf("notify %q: %w", env.ID, err)
		}
		// A refund notify carries mchid but no appid.
		if rf.MchID != c.cfg.MchID {
			return nil, fmt.Errorf("notify %q: %w: refund %s has mchid %q", env.ID, ErrWrongMerchant, rf.OutRefundNo, rf.MchID)
		}
		ev.Refund = rf
		return ev, nil
	}
	tx, err := parseTransaction(plain)
	if err != nil {
		return nil, fmt.Errorf("notify %q: %w", env.ID, err)
	}
	if err := c.checkOurs(tx); err != nil {
		return nil, fmt.Errorf("notify %q: %w", env.ID, err)
	}
	ev.Transaction = tx
	return ev, nil
}

// DecryptResource opens an AEAD_AES_256_GCM resource (notifies, platform
// certificate downloads): key = the 32-byte APIv3 key as ASCII bytes,
// nonce = the 12-character string used raw, AAD = associatedData (may be
// empty), ciphertext = base64 of the sealed text followed by the 16-byte tag.
func DecryptResource(apiV3Key, nonce, associatedData, ciphertextB64 string) ([]byte, error) {
	if len(apiV3Key) != 32 {
		return nil, fmt.Errorf("%w: APIv3 key is %d bytes, need 32", ErrDecrypt, len(apiV3Key))
	}
	if len(nonce) != 12 {
		return nil, fmt.Errorf("%w: nonce is %d bytes, need 12", ErrDecrypt, len(nonce))
	}
	ct, err := base64.StdEncoding.DecodeString(ciphertextB64)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext is not base64", ErrDecrypt)
	}
	block, err := aes.NewCipher([]byte(apiV3Key))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	if len(ct) < gcm.Overhead() {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than the tag", ErrDecrypt, len(ct))
	}
	plain, err := gcm.Open(nil, []byte(nonce), ct, []byte(associatedData))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication tag mismatch", ErrDecrypt)
	}
	return plain, nil
}
