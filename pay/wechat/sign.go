package wechat

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names WeChat Pay uses to sign its responses and notifies. They are
// exported so that a handler on another HTTP stack (fasthttp) can read them
// without net/http; see NotifyHeaderFrom.
const (
	HeaderTimestamp = "Wechatpay-Timestamp"
	HeaderNonce     = "Wechatpay-Nonce"
	HeaderSignature = "Wechatpay-Signature"
	HeaderSerial    = "Wechatpay-Serial"
)

// AuthScheme is the scheme of the Authorization header on merchant requests.
const AuthScheme = "WECHATPAY2-SHA256-RSA2048"

// MaxSkew is how far a signed timestamp may be from our clock: WeChat Pay
// rejects requests 5 minutes off, and we reject responses and notifies whose
// |skew| reaches it, which bounds how long a captured message can be replayed.
const MaxSkew = 300 * time.Second

// ProbePrefix starts the Wechatpay-Signature of WeChat Pay's signature-check
// probes. Such a notify carries no payment and must never be treated as one.
const ProbePrefix = "WECHATPAY/SIGNTEST/"

// requestMessage is what a merchant signs: METHOD\nURL\ntimestamp\nnonce\nbody\n,
// URL being the request-target exactly as sent (path plus query).
func requestMessage(method, uri, timestamp, nonce string, body []byte) []byte {
	var b strings.Builder
	b.Grow(len(method) + len(uri) + len(timestamp) + len(nonce) + len(body) + 5)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(uri)
	b.WriteByte('\n')
	b.WriteString(timestamp)
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.Write(body)
	b.WriteByte('\n')
	return []byte(b.String())
}

// responseMessage is what WeChat Pay signs on responses and notifies:
// timestamp\nnonce\nbody\n over the raw body bytes.
func responseMessage(timestamp, nonce string, body []byte) []byte {
	msg := make([]byte, 0, len(timestamp)+len(nonce)+len(body)+3)
	msg = append(msg, timestamp...)
	msg = append(msg, '\n')
	msg = append(msg, nonce...)
	msg = append(msg, '\n')
	msg = append(msg, body...)
	msg = append(msg, '\n')
	return msg
}

// signSHA256 is SHA256withRSA (PKCS#1 v1.5), standard base64.
func signSHA256(key *rsa.PrivateKey, msg []byte) (string, error) {
	sum := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("wechat: sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// authorization builds the Authorization header value for one request.
func authorization(mchID, serial string, key *rsa.PrivateKey, method, uri string, now time.Time, body []byte) (string, error) {
	nonce, err := newNonce()
	if err != nil {
		return "", err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	sig, err := signSHA256(key, requestMessage(method, uri, ts, nonce, body))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`%s mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"`,
		AuthScheme, mchID, nonce, ts, serial, sig), nil
}

// newNonce returns 32 random hex characters.
func newNonce() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("wechat: nonce: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// verifySigned checks a WeChat Pay signature over timestamp\nnonce\nbody\n
// with the key named by the serial. It runs before any parsing of body: a
// parsed-and-reserialised body would not verify, and an unverified one must
// not be trusted.
func verifySigned(verifiers map[string]*rsa.PublicKey, now time.Time, h NotifyHeader, body []byte) error {
	if strings.HasPrefix(h.Signature, ProbePrefix) {
		return ErrProbe
	}
	if h.Timestamp == "" || h.Nonce == "" || h.Signature == "" || h.Serial == "" {
		return fmt.Errorf("%w: missing Wechatpay-* header (timestamp %t, nonce %t, signature %t, serial %t)",
			ErrBadSignature, h.Timestamp != "", h.Nonce != "", h.Signature != "", h.Serial != "")
	}
	ts, err := strconv.ParseInt(h.Timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: Wechatpay-Timestamp %q is not unix seconds", ErrBadSignature, h.Timestamp)
	}
	// Compare in whole seconds without subtracting the untrusted value, so an
	// absurd timestamp cannot overflow into "fresh".
	nowS := now.Unix()
	limit := int64(MaxSkew / time.Second)
	if ts <= nowS-limit || ts >= nowS+limit {
		return fmt.Errorf("%w: Wechatpay-Timestamp %d is %ds from now", ErrStale, ts, nowS-ts)
	}
	pub, ok := verifiers[h.Serial]
	if !ok || pub == nil {
		return fmt.Errorf("%w: unknown Wechatpay-Serial %q", ErrBadSignature, h.Serial)
	}
	sig, err := base64.StdEncoding.DecodeString(h.Signature)
	if err != nil {
		return fmt.Errorf("%w: Wechatpay-Signature is not base64", ErrBadSignature)
	}
	sum := sha256.Sum256(responseMessage(h.Timestamp, h.Nonce, body))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("%w: serial %s", ErrBadSignature, h.Serial)
	}
	return nil
}
