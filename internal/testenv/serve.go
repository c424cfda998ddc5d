package testenv

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// Serve runs hs on a free loopback port until t ends and returns its
// address (host:port). Listening before Serve returns means the caller can
// send at once, without waiting for the server to come up.
func Serve(t testing.TB, hs *fasthttp.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Shutdown() })
	return ln.Addr().String()
}
