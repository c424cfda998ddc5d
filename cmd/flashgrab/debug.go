package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugServer serves Go's runtime profiles (net/http/pprof: CPU, heap,
// allocations, goroutines, mutex and block contention, execution traces)
// for an operator, on a listener of its own: the public API port never
// serves them, since they have no authentication and reveal the process's
// internals. serve starts it only when --debug-addr is set.
type debugServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// startDebug listens on addr and serves the profiles under /debug/pprof/.
// addr must differ from the API's listen address apiAddr.
func startDebug(addr, apiAddr string, log *slog.Logger) (*debugServer, error) {
	if addr == apiAddr {
		return nil, fmt.Errorf("--debug-addr %s is the API's --addr: profiles are served on an address of their own, never the public one", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	// A mux of its own: importing net/http/pprof also registers the
	// handlers on http.DefaultServeMux, which nothing here serves.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No WriteTimeout: a CPU profile or trace streams for as long as asked
	// (?seconds=N).
	d := &debugServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr().String(),
		done: make(chan struct{})}
	if host, _, err := net.SplitHostPort(d.addr); err == nil {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			log.Warn("Go profiles are served beyond this host, without authentication: keep --debug-addr on loopback or an admin network",
				"debug_addr", d.addr)
		}
	}
	go func() {
		defer close(d.done)
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug listener stopped", "err", err)
		}
	}()
	log.Info("serving Go profiles", "debug_addr", d.addr, "path", "/debug/pprof/")
	return d, nil
}

// stop closes the listener and any profile still streaming.
func (d *debugServer) stop() {
	_ = d.srv.Shutdown(context.Background())
	_ = d.srv.Close()
	<-d.done
}
