package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// RetryListener wraps a listener so that running out of file descriptors (or
// any other temporary accept error) never stops the server: fasthttp's Serve
// returns on any accept error that is not a timeout, and serve then exits.
// Accept logs the error and tries again after a backoff that doubles from
// 5ms to 1s; the connections being served meanwhile finish and free
// descriptors.
type RetryListener struct {
	net.Listener
	Logger *slog.Logger
	// sleep waits between attempts; tests replace it.
	sleep func(time.Duration)
}

// Accept waits for the next connection, retrying temporary errors.
func (l *RetryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !retryable(err) {
			return c, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		logger := l.Logger
		if logger == nil {
			logger = slog.Default()
		}
		logger.Warn("accept failed; retrying", "err", err, "backoff", delay)
		if l.sleep != nil {
			l.sleep(delay)
		} else {
			time.Sleep(delay)
		}
	}
}

// retryable reports whether an accept error is worth waiting out: too many
// open files (per process or system-wide), no buffers, a connection aborted
// before it was accepted.
func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR:
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RaiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and returns
// the new soft limit: every connection holds a descriptor, and the usual
// soft default (1024) would let a few thousand idle clients stop accepts.
func RaiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur >= rl.Max {
		return rl.Cur, nil
	}
	want := rl.Max
	rl.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("setrlimit RLIMIT_NOFILE to %d: %w", want, err)
	}
	return want, nil
}
