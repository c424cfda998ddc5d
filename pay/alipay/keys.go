package alipay

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ParsePrivateKey reads the app private key in any form merchants are handed:
// PEM "RSA PRIVATE KEY" (PKCS#1), PEM "PRIVATE KEY" (PKCS#8), or the bare
// base64 body without PEM armour that Alipay's key tool and console produce.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	der, pemType, err := keyDER(data)
	if err != nil {
		return nil, fmt.Errorf("alipay private key: %w", err)
	}
	switch pemType {
	case "RSA PRIVATE KEY":
		return parsePKCS1Private(der)
	case "PRIVATE KEY":
		return parsePKCS8Private(der)
	case "":
		if k, err := parsePKCS8Private(der); err == nil {
			return k, nil
		}
		return parsePKCS1Private(der)
	default:
		return nil, fmt.Errorf("alipay private key: unsupported PEM block %q (want PRIVATE KEY or RSA PRIVATE KEY)", pemType)
	}
}

// ParsePublicKey reads an RSA public key (normally the Alipay public key):
// PEM "PUBLIC KEY" (PKIX), PEM "RSA PUBLIC KEY" (PKCS#1), or the bare base64
// body that the Alipay console shows.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	der, pemType, err := keyDER(data)
	if err != nil {
		return nil, fmt.Errorf("alipay public key: %w", err)
	}
	switch pemType {
	case "PUBLIC KEY":
		return parsePKIXPublic(der)
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("alipay public key: PKCS#1: %w", err)
		}
		return k, nil
	case "":
		if k, err := parsePKIXPublic(der); err == nil {
			return k, nil
		}
		k, err := x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("alipay public key: bare base64 is neither PKIX nor PKCS#1: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("alipay public key: unsupported PEM block %q (want PUBLIC KEY; certificate mode is not supported)", pemType)
	}
}

// keyDER returns the DER bytes of a key and its PEM type, or an empty type
// when the input was bare base64.
func keyDER(data []byte) ([]byte, string, error) {
	if block, _ := pem.Decode(data); block != nil {
		if _, encrypted := block.Headers["Proc-Type"]; encrypted {
			return nil, "", errors.New("encrypted PEM keys are not supported")
		}
		return block.Bytes, block.Type, nil
	}
	// The console's form: base64 possibly wrapped over lines.
	body := strings.Join(strings.Fields(string(data)), "")
	if body == "" {
		return nil, "", errors.New("empty key")
	}
	der, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, "", fmt.Errorf("neither PEM nor base64: %w", err)
	}
	return der, "", nil
}

func parsePKCS1Private(der []byte) (*rsa.PrivateKey, error) {
	k, err := x509.ParsePKCS1PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("alipay private key: PKCS#1: %w", err)
	}
	return k, nil
}

func parsePKCS8Private(der []byte) (*rsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("alipay private key: PKCS#8: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("alipay private key: PKCS#8 holds a %T, RSA2 needs an RSA key", k)
	}
	return rk, nil
}

func parsePKIXPublic(der []byte) (*rsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("alipay public key: PKIX: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("alipay public key: PKIX holds a %T, RSA2 needs an RSA key", k)
	}
	return rk, nil
}
