package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server the test started itself, in a temp dir, on a
// free loopback port: the one kind of Redis a test may kill, reconfigure or
// make a replica of (never the shared one).
type RedisServer struct {
	Addr string
	Port int
	path string   // the redis-server binary
	args []string // everything it was started with, for Restart
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedisServer starts redis-server with args added to a throwaway set-up
// (no snapshots, its files in a temp dir) and returns once it answers PING.
// It is killed when the test ends.
func StartRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not installed: %v", err)
	}
	dir := t.TempDir()
	// A free port can be taken between Close and redis-server's bind: try a few.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		all := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--daemonize", "no", "--logfile", ""}, args...)
		s := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, path: path, args: all}
		if err := s.start(); err != nil {
			t.Fatalf("testenv: start redis-server %v: %v", all, err)
		}
		if s.waitUp() {
			t.Cleanup(s.Kill)
			return s
		}
		s.Kill()
	}
	t.Fatalf("testenv: redis-server %v did not answer on a free port in 5 tries", args)
	return nil
}

func (s *RedisServer) start() error {
	s.cmd, s.done = exec.Command(s.path, s.args...), make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		return err
	}
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()
	return nil
}

// Restart starts the server again after Kill, with the same arguments, port
// and directory: it loads whatever it persisted there (its AOF, when started
// with --appendonly yes), as a crashed Redis restarted by its supervisor
// would. It returns once the server answers PING.
func (s *RedisServer) Restart(t testing.TB) {
	t.Helper()
	select {
	case <-s.done:
	default:
		t.Fatalf("testenv: restart redis-server on %s: it still runs (Kill it first)", s.Addr)
	}
	if err := s.start(); err != nil {
		t.Fatalf("testenv: restart redis-server %v: %v", s.args, err)
	}
	if !s.waitUp() {
		s.Kill()
		t.Fatalf("testenv: restarted redis-server on %s did not answer PING within 10s", s.Addr)
	}
}

// Kill stops the server at once (SIGKILL, no shutdown save) and waits for it
// to exit. Killing it twice is harmless.
func (s *RedisServer) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Pause stops the server's process (SIGSTOP): it keeps its connections but
// answers nothing, as a replica stuck behind a slow disk or network would.
func (s *RedisServer) Pause() { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume lets a paused server go on (SIGCONT).
func (s *RedisServer) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

// Client returns a client of the server, closed when the test ends.
func (s *RedisServer) Client(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 64, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// waitUp polls PING until the server answers, exits, or 10 s pass.
func (s *RedisServer) waitUp() bool {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(pollEvery)
	}
	return false
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
