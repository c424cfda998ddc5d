package testenv

import (
	"database/sql"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

// Proxy is a TCP proxy in front of a real server that a test can cut and
// restore, to show what happens while Redis or MySQL is unreachable.
type Proxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]struct{}
	accepted atomic.Int64
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.Down() })
	return p
}

// Addr is the proxy's address, to give the client under test.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted is how many connections the proxy has accepted, refused ones
// included: what a client's dials cost while the server is cut.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Down closes every connection and refuses new ones until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Retarget sends new connections to target and closes the ones open, as a
// failover that moves a service address to another server does.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Up lets connections through again.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	target := p.target
	p.mu.Unlock()
	s, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { io.Copy(s, c); s.Close(); c.Close() }()
	io.Copy(c, s)
	c.Close()
	s.Close()
}

// RedisBehindProxy returns a client that reaches Redis through a proxy the
// test can cut, and a key prefix of the test's own (as Redis gives); short
// timeouts make a cut fail fast instead of waiting out go-redis's defaults.
func RedisBehindProxy(t testing.TB) (*redis.Client, string, *Proxy) {
	t.Helper()
	_, prefix := Redis(t)
	proxy := NewProxy(t, RedisAddr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	return rdb, prefix, proxy
}

// MySQLBehindProxy returns a handle on db's database that goes through a
// proxy the test can cut, with short timeouts so a cut fails fast.
func MySQLBehindProxy(t testing.TB, db *sql.DB) (*sql.DB, *Proxy) {
	t.Helper()
	var name string
	if err := db.QueryRow("SELECT DATABASE()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	cfg, err := mysql.ParseDSN(MySQLDSN())
	if err != nil {
		t.Fatal(err)
	}
	proxy := NewProxy(t, cfg.Addr)
	cfg.Addr, cfg.DBName = proxy.Addr(), name
	cfg.ParseTime, cfg.InterpolateParams = true, true
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 300*time.Millisecond, time.Second, time.Second
	pdb, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pdb.Close() })
	return pdb, proxy
}
