package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/flashgrab/flashgrab"
)

// Posting is one line of the ledger: Delta fen to Account. EventID makes it
// idempotent: a posting whose EventID is already in the ledger is skipped.
type Posting struct {
	EventID string
	Account string
	Delta   int64
	Kind    string
	Ref     string
}

// Account is a balance with the version that guards it.
type Account struct {
	ID           string
	BalanceCents int64
	Version      int64
}

// errConflict means a versioned compare-and-set lost a race: another writer
// changed the account since it was read. The transaction is retried.
var errConflict = errors.New("balance version conflict")

// Books changes balances only by versioned compare-and-set, and records every
// change in the append-only ledger in the same transaction.
//
// Within one process, transactions that touch the same account take turns
// (striped locks by account): a hot merchant then costs queueing, not a storm
// of failed compare-and-sets. Across processes the version check alone keeps
// balances right, and conflicts are retried with jittered backoff. Share one
// Books per process so the stripes are shared.
type Books struct {
	DB *sql.DB
	// MaxAttempts bounds the retries of a conflicting transaction (default 100).
	MaxAttempts int
	// OrderTTL is how long an unpaid order lives (default 15 minutes).
	OrderTTL time.Duration

	stripes   [64]sync.Mutex
	conflicts atomic.Int64
}

// DefaultOrderTTL is an unpaid order's lifetime when Books.OrderTTL is unset.
const DefaultOrderTTL = 15 * time.Minute

func (b *Books) orderTTL() time.Duration {
	if b.OrderTTL > 0 {
		return b.OrderTTL
	}
	return DefaultOrderTTL
}

// Conflicts is how many transactions lost a compare-and-set or a lock race
// and were retried.
func (b *Books) Conflicts() int64 { return b.conflicts.Load() }

// lock takes the stripes of accounts in ascending order, so that two callers
// never wait on each other crosswise; it returns the unlock.
func (b *Books) lock(accounts []string) func() {
	var set [64]bool
	for _, a := range accounts {
		set[crc32.ChecksumIEEE([]byte(a))%64] = true
	}
	for i := range set {
		if set[i] {
			b.stripes[i].Lock()
		}
	}
	return func() {
		for i := range set {
			if set[i] {
				b.stripes[i].Unlock()
			}
		}
	}
}

// Account returns an account; ErrNotFound when it never held money.
func (b *Books) Account(ctx context.Context, id string) (Account, error) {
	a := Account{ID: id}
	err := b.DB.QueryRowContext(ctx, `SELECT balance_cents, version FROM accounts WHERE id = ?`, id).
		Scan(&a.BalanceCents, &a.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, fmt.Errorf("account %s: %w", id, flashgrab.ErrNotFound)
	}
	if err != nil {
		return Account{}, fmt.Errorf("get account %s: %w", id, unavailable(err))
	}
	return a, nil
}

// Credit posts amount to account once per ref (an admin credit). Repeating a
// ref with the same account and amount changes nothing; with different ones it
// fails with ErrExists.
func (b *Books) Credit(ctx context.Context, account string, amount int64, ref string) (Account, error) {
	p := Posting{EventID: "credit:" + ref, Account: account, Delta: amount, Kind: "credit", Ref: ref}
	if err := b.Post(ctx, []Posting{p}, false); err != nil {
		return Account{}, err
	}
	var acct string
	var delta int64
	err := b.DB.QueryRowContext(ctx, `SELECT account_id, delta_cents FROM ledger WHERE event_id = ?`, p.EventID).
		Scan(&acct, &delta)
	if err != nil {
		return Account{}, fmt.Errorf("credit %s: read back: %w", ref, unavailable(err))
	}
	if acct != account || delta != amount {
		return Account{}, fmt.Errorf("credit ref %s was used for %d fen to %s: %w", ref, delta, acct, flashgrab.ErrExists)
	}
	return b.Account(ctx, account)
}

// Post applies postings in one transaction, retrying on version conflicts.
// With noOverdraft, a posting that would take a balance below zero fails the
// whole call with ErrInsufficientFunds.
func (b *Books) Post(ctx context.Context, ps []Posting, noOverdraft bool) error {
	return b.Tx(ctx, func(tx *sql.Tx) error {
		_, err := post(ctx, tx, ps, noOverdraft)
		return err
	}, accountsOf(ps))
}

// Tx runs fn in a transaction and retries it, with jittered backoff, while it
// fails on a version conflict, a deadlock or a duplicate key (a concurrent
// writer of the same event). accounts are created, outside the transaction,
// before the first attempt: a row that holds 0 at version 0 is harmless, and
// creating it inside would take locks that turn optimistic writers into
// deadlocked ones.
func (b *Books) Tx(ctx context.Context, fn func(*sql.Tx) error, accounts []string) error {
	if err := ensureAccounts(ctx, b.DB, accounts); err != nil {
		return err
	}
	defer b.lock(accounts)()
	attempts := b.MaxAttempts
	if attempts <= 0 {
		attempts = 100
	}
	backoff := 200 * time.Microsecond
	for i := 0; ; i++ {
		err := runTx(ctx, b.DB, fn)
		if err == nil || !retryable(err) || i+1 >= attempts {
			if err != nil && retryable(err) {
				return fmt.Errorf("gave up after %d attempts: %w", attempts, err)
			}
			return err
		}
		b.conflicts.Add(1)
		sleep := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, 50*time.Millisecond)
	}
}

func runTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return unavailable(err)
	}
	// Rolled back on every way out but the commit, a panic in fn included:
	// otherwise the transaction would keep its row locks (the balances' and
	// the epochs') until ctx ended.
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return unavailable(err)
	}
	return nil
}

func retryable(err error) bool {
	if errors.Is(err, errConflict) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1062, 1213, 1205: // duplicate key, deadlock, lock wait timeout
			return true
		}
	}
	return false
}

// unavailable marks a database failure that is not the caller's fault, so the
// API answers 503; MySQL's own rejections keep their identity for retryable.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) || errors.Is(err, flashgrab.ErrUnavailable) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: mysql: %v", flashgrab.ErrUnavailable, err)
}

func accountsOf(ps []Posting) []string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.Account)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func ensureAccounts(ctx context.Context, db *sql.DB, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	q := "INSERT IGNORE INTO accounts (id) VALUES " + placeholders(len(ids), "(?)")
	if _, err := db.ExecContext(ctx, q, anys(ids)...); err != nil {
		return fmt.Errorf("create accounts: %w", unavailable(err))
	}
	return nil
}

// post writes the postings not yet in the ledger and moves the balances:
// credits to one account are summed first, so each account costs exactly one
// compare-and-set per call however many postings it receives. It returns how
// many postings were new.
func post(ctx context.Context, tx *sql.Tx, ps []Posting, noOverdraft bool) (int, error) {
	if len(ps) == 0 {
		return 0, nil
	}
	ids := make([]string, 0, len(ps))
	for _, p := range ps {
		ids = append(ids, p.EventID)
	}
	done := make(map[string]bool)
	rows, err := tx.QueryContext(ctx, "SELECT event_id FROM ledger WHERE event_id IN ("+placeholders(len(ids), "?")+")", anys(ids)...)
	if err != nil {
		return 0, unavailable(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, unavailable(err)
		}
		done[id] = true
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("post: read ledger events: %w", unavailable(err))
	}
	fresh := ps[:0:0]
	for _, p := range ps {
		if !done[p.EventID] {
			done[p.EventID] = true // a batch may carry the same event twice
			fresh = append(fresh, p)
		}
	}
	if len(fresh) == 0 {
		return 0, nil
	}

	accts := accountsOf(fresh)
	balance := make(map[string]int64, len(accts))
	version := make(map[string]int64, len(accts))
	rows, err = tx.QueryContext(ctx, "SELECT id, balance_cents, version FROM accounts WHERE id IN ("+placeholders(len(accts), "?")+")", anys(accts)...)
	if err != nil {
		return 0, unavailable(err)
	}
	for rows.Next() {
		var id string
		var bal, ver int64
		if err := rows.Scan(&id, &bal, &ver); err != nil {
			rows.Close()
			return 0, unavailable(err)
		}
		balance[id], version[id] = bal, ver
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("post: read accounts: %w", unavailable(err))
	}
	for _, a := range accts {
		if _, ok := version[a]; !ok {
			return 0, fmt.Errorf("post: account %s missing (create it before the transaction)", a)
		}
	}

	var sb strings.Builder
	sb.WriteString("INSERT INTO ledger (event_id, account_id, delta_cents, balance_after, kind, ref) VALUES ")
	args := make([]any, 0, len(fresh)*6)
	for i, p := range fresh {
		balance[p.Account] += p.Delta
		if noOverdraft && balance[p.Account] < 0 {
			return 0, fmt.Errorf("account %s: %w", p.Account, flashgrab.ErrInsufficientFunds)
		}
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("(?,?,?,?,?,?)")
		args = append(args, p.EventID, p.Account, p.Delta, balance[p.Account], p.Kind, p.Ref)
	}
	if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
		return 0, unavailable(err)
	}
	if err := compareAndSet(ctx, tx, accts, balance, version); err != nil {
		return 0, err
	}
	return len(fresh), nil
}

// compareAndSet writes the new balances of accts in one statement per 500
// accounts, each row guarded by the version read earlier:
//
//	UPDATE accounts SET balance_cents = CASE id WHEN a THEN 5 ... END, version = version + 1
//	WHERE id IN (a, ...) AND version = CASE id WHEN a THEN 7 ... END
//
// Fewer rows changed than accounts named means another writer got there
// first: errConflict, and the transaction is retried.
func compareAndSet(ctx context.Context, tx *sql.Tx, accts []string, balance, version map[string]int64) error {
	for len(accts) > 0 {
		chunk := accts[:min(len(accts), 500)]
		accts = accts[len(chunk):]
		var sb strings.Builder
		args := make([]any, 0, len(chunk)*5)
		sb.WriteString("UPDATE accounts SET balance_cents = CASE id")
		for _, a := range chunk {
			sb.WriteString(" WHEN ? THEN ?")
			args = append(args, a, balance[a])
		}
		sb.WriteString(" END, version = version + 1 WHERE id IN (" + placeholders(len(chunk), "?") + ") AND version = CASE id")
		for _, a := range chunk {
			args = append(args, a)
		}
		for _, a := range chunk {
			sb.WriteString(" WHEN ? THEN ?")
			args = append(args, a, version[a])
		}
		sb.WriteString(" END")
		res, err := tx.ExecContext(ctx, sb.String(), args...)
		if err != nil {
			return unavailable(err)
		}
		if n, _ := res.RowsAffected(); n != int64(len(chunk)) {
			return errConflict
		}
	}
	return nil
}

// placeholders returns n copies of unit joined by commas: "?,?,?".
func placeholders(n int, unit string) string {
	var sb strings.Builder
	sb.Grow(n * (len(unit) + 1))
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(unit)
	}
	return sb.String()
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
