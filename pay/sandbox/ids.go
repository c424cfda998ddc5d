package sandbox

import (
	"crypto/rand"
	"encoding/hex"
)

// Random identifiers both simulators hand out: notify ids, nonces, keys,
// request ids. rand.Read never fails since Go 1.24.

const alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters from [A-Za-z0-9] (WeChat's 12-character
// GCM nonces and APIv3 keys).
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphanumeric[int(b[i])%len(alphanumeric)]
	}
	return string(b)
}

// randomHex returns nBytes random bytes in lower-case hex.
func randomHex(nBytes int) string {
	b := make([]byte, nBytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randomUUID returns a random id shaped like a UUID (8-4-4-4-12 hex digits).
func randomUUID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
