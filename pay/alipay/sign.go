package alipay

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// RequestContent is the string signed for a gateway request: every non-empty
// parameter except sign (sign_type and biz_content included), sorted by key,
// joined as k=v&k=v with the raw values. URL-encoding happens only afterwards,
// for transport.
func RequestContent(params url.Values) string {
	return signContent(params, "sign")
}

// NotifyContent is the string signed for an async notify or a return redirect
// (Alipay's rsaCheckV1): like RequestContent, but sign_type is left out too.
// Values are used exactly as form-decoded; trimming them breaks verification.
func NotifyContent(params url.Values) string {
	return signContent(params, "sign", "sign_type")
}

// signContent is the one canonicalisation both directions share. A key with
// several values contributes its first; callers that receive untrusted input
// reject repeated keys before getting here.
func signContent(params url.Values, omit ...string) string {
	keys := make([]string, 0, len(params))
	for k, v := range params {
		if len(v) == 0 || v[0] == "" || contains(omit, k) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k][0])
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Sign returns the RSA2 signature of a gateway request's parameters, ready to
// be put in the sign parameter.
func Sign(params url.Values, key *rsa.PrivateKey) (string, error) {
	return SignBytes([]byte(RequestContent(params)), key)
}

// SignBytes signs msg with SHA256withRSA (PKCS#1 v1.5) and returns standard
// base64, the encoding of every Alipay RSA2 signature.
func SignBytes(msg []byte, key *rsa.PrivateKey) (string, error) {
	sum := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("alipay sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// VerifyBytes checks an RSA2 signature (standard base64) over msg. Failures
// wrap ErrBadSignature.
func VerifyBytes(msg []byte, sig string, pub *rsa.PublicKey) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: sign is not standard base64: %v", ErrBadSignature, err)
	}
	sum := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return nil
}
