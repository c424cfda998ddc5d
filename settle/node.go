package settle

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Id node leases.
//
// Order and packet ids embed a 10-bit node number, and two live instances
// sharing one would hand out the same ids. A node number is therefore leased
// from MySQL, which outlives a Redis loss: a row of node_leases per number,
// taken by a conditional write only when free or expired (by the server's
// clock), renewed every TTL/3 while the instance runs, and freed on a clean
// stop. A crashed instance's number comes back when its lease expires, so
// numbers are never used up, and the holder stops handing out ids before
// its lease can expire (NodeHolder), so an expired number is never in use
// twice.

// DefaultNodeTTL is how long a node lease lasts without renewal.
const DefaultNodeTTL = 30 * time.Second

// nodeCount is the number of node numbers (10 bits, as in engine ids).
const nodeCount = 1024

// freedAt is a released lease's expiry: long past, so it is taken first.
var freedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// ErrLeaseLost reports that the node lease expired or another owner holds it.
var ErrLeaseLost = errors.New("node lease lost")

// NodeHolder uses a leased node number; *engine.IDs is one. Hold is called
// on each claim and renewal with the last moment (local clock) the node may
// still be used, safely before the lease can expire; Drop when it is lost.
type NodeHolder interface {
	Hold(node int64, until time.Time)
	Drop()
}

// NodeLease is one instance's lease on an id node number. It is not safe for
// concurrent use: while Keep runs, Keep owns it.
type NodeLease struct {
	db     *sql.DB
	prefix string // the owner's name, for operators
	ttl    time.Duration
	Logger *slog.Logger

	node  int64
	owner string    // prefix plus a random token, unique per claim
	until time.Time // local clock: use the node no later than this
}

// ClaimNode leases a free (or expired) node number for owner (a name for
// operators, such as host:pid) for ttl (DefaultNodeTTL when 0). It fails
// when every number is held by a live lease.
func ClaimNode(ctx context.Context, db *sql.DB, owner string, ttl time.Duration) (*NodeLease, error) {
	if ttl <= 0 {
		ttl = DefaultNodeTTL
	}
	if len(owner) > 100 {
		owner = owner[:100]
	}
	l := &NodeLease{db: db, prefix: owner, ttl: ttl}
	if err := l.claim(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Node returns the leased node number.
func (l *NodeLease) Node() int64 { return l.node }

// Until returns the last moment, by this process's clock, the node may be
// used under the lease as last claimed or renewed.
func (l *NodeLease) Until() time.Time { return l.until }

// claim takes the free or longest-expired number in one conditional write,
// then reads back which row carries this claim's owner token.
func (l *NodeLease) claim(ctx context.Context) error {
	var tok [8]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return fmt.Errorf("claim id node: owner token: %w", err)
	}
	l.owner = l.prefix + "/" + hex.EncodeToString(tok[:])
	for attempt := 0; ; attempt++ {
		start := time.Now()
		res, err := l.db.ExecContext(ctx, `UPDATE node_leases SET owner = ?, expires_at = NOW(3) + INTERVAL ? MICROSECOND
			WHERE expires_at <= NOW(3) ORDER BY expires_at, node LIMIT 1`, l.owner, l.ttl.Microseconds())
		if err != nil {
			if isDeadlock(err) && attempt < 5 {
				continue
			}
			return fmt.Errorf("claim id node for %s: %w", l.prefix, unavailable(err))
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := l.db.QueryRowContext(ctx, `SELECT node FROM node_leases WHERE owner = ?`, l.owner).Scan(&l.node); err != nil {
				return fmt.Errorf("claim id node for %s: read back: %w", l.prefix, unavailable(err))
			}
			l.until = l.validUntil(start)
			return nil
		}
		if attempt > 0 {
			return fmt.Errorf("claim id node for %s: all %d node numbers are leased by live instances", l.prefix, nodeCount)
		}
		// First use of the table: one free row per number, then claim again.
		if err := seedNodes(ctx, l.db); err != nil {
			return fmt.Errorf("claim id node for %s: %w", l.prefix, err)
		}
	}
}

// validUntil is the last moment the node may be used after a claim or
// renewal sent at start: the server set the expiry from its own clock no
// earlier than start, so this ends a tenth of the TTL before the lease can
// (room for clock-rate drift and for ids borrowed from future milliseconds).
func (l *NodeLease) validUntil(start time.Time) time.Time { return start.Add(l.ttl - l.ttl/10) }

// seedNodes inserts the missing rows of node_leases, free.
func seedNodes(ctx context.Context, db *sql.DB) error {
	var b strings.Builder
	b.WriteString("INSERT IGNORE INTO node_leases (node, owner, expires_at) VALUES ")
	for n := range nodeCount {
		if n > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(%d,'','%s')", n, freedAt.Format("2006-01-02 15:04:05"))
	}
	if _, err := db.ExecContext(ctx, b.String()); err != nil {
		return fmt.Errorf("seed node_leases: %w", unavailable(err))
	}
	return nil
}

// Renew extends the lease by its TTL. It fails with ErrLeaseLost when the
// lease expired or another owner took the number; other errors (MySQL
// unreachable) leave the lease as it was, to be renewed again.
func (l *NodeLease) Renew(ctx context.Context) error {
	start := time.Now()
	res, err := l.db.ExecContext(ctx, `UPDATE node_leases SET expires_at = NOW(3) + INTERVAL ? MICROSECOND
		WHERE node = ? AND owner = ? AND expires_at > NOW(3)`, l.ttl.Microseconds(), l.node, l.owner)
	if err != nil {
		return fmt.Errorf("renew id node %d: %w", l.node, unavailable(err))
	}
	if n, _ := res.RowsAffected(); n != 1 {
		// Zero rows also when the expiry did not change (renewed twice in
		// one millisecond): look before calling the lease lost.
		var held bool
		err := l.db.QueryRowContext(ctx, `SELECT owner = ? AND expires_at > NOW(3) FROM node_leases WHERE node = ?`,
			l.owner, l.node).Scan(&held)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("renew id node %d: %w", l.node, unavailable(err))
		}
		if !held {
			return fmt.Errorf("renew id node %d: %w", l.node, ErrLeaseLost)
		}
	}
	l.until = l.validUntil(start)
	return nil
}

// Release frees the number for the next instance at once. Call it only once
// nothing uses the node any more.
func (l *NodeLease) Release(ctx context.Context) error {
	_, err := l.db.ExecContext(ctx, `UPDATE node_leases SET owner = '', expires_at = ? WHERE node = ? AND owner = ?`,
		freedAt, l.node, l.owner)
	if err != nil {
		return fmt.Errorf("release id node %d: %w", l.node, unavailable(err))
	}
	return nil
}

// Keep holds the lease for h until ctx ends: it tells h the node now, renews
// every TTL/3 and tells h each time, and when the lease is lost drops it
// from h and claims a number again (h resumes once one is held). MySQL
// failures are retried each period; h stops using the node by itself once
// the last renewal's time is up. When ctx ends, the caller must have stopped
// using the node: h is dropped and the lease released.
func (l *NodeLease) Keep(ctx context.Context, h NodeHolder) {
	h.Hold(l.node, l.until)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	lost := false
	for {
		select {
		case <-ctx.Done():
			h.Drop()
			if !lost {
				c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := l.Release(c); err != nil {
					l.logger().Warn("id node lease not released; it expires by itself", "node", l.node, "err", err)
				}
				cancel()
			}
			return
		case <-t.C:
		}
		c, cancel := context.WithTimeout(ctx, l.ttl/3)
		var err error
		if lost {
			err = l.claim(c)
		} else if err = l.Renew(c); errors.Is(err, ErrLeaseLost) {
			h.Drop()
			l.logger().Error("id node lease lost; ids stop until a node is leased again", "node", l.node)
			lost = true
			err = l.claim(c)
		}
		cancel()
		if err != nil {
			l.logger().Warn("id node lease", "node", l.node, "lost", lost, "err", err)
			continue
		}
		if lost {
			l.logger().Info("id node leased again", "node", l.node)
			lost = false
		}
		h.Hold(l.node, l.until)
	}
}

func (l *NodeLease) logger() *slog.Logger {
	if l.Logger != nil {
		return l.Logger
	}
	return slog.Default()
}

// isDeadlock reports MySQL's deadlock error (1213): concurrent claims may
// collide on their row locks; the statement did nothing and is retried.
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}
