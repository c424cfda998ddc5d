package wechat

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ParsePrivateKey reads the merchant's RSA private key (apiclient_key.pem) from
// PEM. Both PKCS#8 ("PRIVATE KEY", what the merchant platform issues) and
// PKCS#1 ("RSA PRIVATE KEY") blocks are accepted.
func ParsePrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("wechat: private key: %w", err)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("wechat: private key: PKCS#8: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("wechat: private key: got %T, need RSA", k)
		}
		return rk, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("wechat: private key: PKCS#1: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("wechat: private key: unexpected PEM block %q", block.Type)
	}
}

// ParsePublicKey reads an RSA public key from PEM: the WeChat Pay public key
// (pub_key.pem, used with a PUB_KEY_ID_… serial) is a PKIX "PUBLIC KEY";
// PKCS#1 "RSA PUBLIC KEY" is accepted too.
func ParsePublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("wechat: public key: %w", err)
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("wechat: public key: PKIX: %w", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("wechat: public key: got %T, need RSA", k)
		}
		return rk, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("wechat: public key: PKCS#1: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("wechat: public key: unexpected PEM block %q", block.Type)
	}
}

// ParseCertificate reads an X.509 certificate (a platform certificate, or the
// merchant's apiclient_cert.pem) and returns its serial number the way
// WeChat Pay writes it in Wechatpay-Serial and serial_no: upper-case hex
// without separators. The certificate's validity period is not checked here:
// rotation is handled by keeping every live serial in Config.Verifiers.
func ParseCertificate(pemBytes []byte) (serial string, key *rsa.PublicKey, err error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return "", nil, fmt.Errorf("wechat: certificate: %w", err)
	}
	if block.Type != "CERTIFICATE" {
		return "", nil, fmt.Errorf("wechat: certificate: unexpected PEM block %q", block.Type)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", nil, fmt.Errorf("wechat: certificate: %w", err)
	}
	rk, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return "", nil, fmt.Errorf("wechat: certificate %s: key is %T, need RSA", CertSerial(cert), cert.PublicKey)
	}
	return CertSerial(cert), rk, nil
}

// CertSerial formats a certificate's serial number as WeChat Pay does:
// upper-case hex, no separators, no leading zero padding.
func CertSerial(cert *x509.Certificate) string {
	return strings.ToUpper(cert.SerialNumber.Text(16))
}

func decodePEM(b []byte) (*pem.Block, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	return block, nil
}
