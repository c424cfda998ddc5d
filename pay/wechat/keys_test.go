package wechat

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// encodePrivateKeyPEM writes key as a PKCS#8 PEM block, the format the
// merchant platform hands out, for the parsers' round trip.
func encodePrivateKeyPEM(t *testing.T, key *rsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("encode private key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// encodePublicKeyPEM writes key as a PKIX "PUBLIC KEY" PEM block, the
// format of the WeChat Pay public key (pub_key.pem).
func encodePublicKeyPEM(t *testing.T, key *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatalf("encode public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
