package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// row is one fault's line of the table, every number measured.
type row struct {
	fault, mode string
	missing     string // a command the fault needs and the binary lacks: not run
	failed      bool   // the fault's test failed (its numbers may be partial)
	ran         bool   // false: left out by -run
	counted     bool   // losses are counted, not refused (mode none, a flush under load)

	wins         int64    // orders and packet shares answered 200
	inMySQL      int64    // of those, in MySQL (a COUNT over the ids)
	lost         int64    // of those, not in MySQL (the ids a SELECT did not return)
	lostExamples []string // a few of them
	// oversold: units beyond a sale's stock or a user's limit, counting
	// every order answered 200 or in MySQL (what buyers were promised),
	// plus shares beyond a packet's count; oversoldInMySQL counts MySQL's
	// orders only (the books themselves).
	oversold, oversoldInMySQL int64
	refundsDue                int64    // packets answered 201 and never emptied, all expired by now
	refundsDone               int64    // of those, refunded in MySQL with exactly what was not grabbed there
	refundsWrong              []string // of those, refunded with another amount: what MySQL holds, per packet
	reconcile                 int      // exit status of flashgrab reconcile
	reconcileOut              string
}

func (r row) line() string {
	if r.missing != "" {
		return fmt.Sprintf("%s (%s): NOT AVAILABLE, needs %s", r.fault, r.mode, r.missing)
	}
	return fmt.Sprintf("%s (%s): %d wins answered 200, %d in MySQL, %d lost, %d oversold, refunds %d due %d done, reconcile exit %d",
		r.fault, r.mode, r.wins, r.inMySQL, r.lost, r.oversold, r.refundsDue, r.refundsDone, r.reconcile)
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tmode\twins 200\tin MySQL\tlost\toversold\trefunds due\trefunds done\treconcile\tverdict\t")
	for _, r := range rows {
		if !r.ran {
			continue
		}
		if r.missing != "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\tNOT AVAILABLE: needs %s\t\n", r.fault, r.mode, r.missing)
			continue
		}
		verdict := "ok"
		switch {
		case r.failed:
			verdict = "FAILED"
		case r.counted:
			verdict = "counted"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\texit %d\t%s\t\n", r.fault, r.mode, r.wins, r.inMySQL, r.lost,
			r.oversold, r.refundsDue, r.refundsDone, r.reconcile, verdict)
	}
	tw.Flush()
}

// measure waits for settlement to drain and the packets to be closed, then
// compares MySQL with what the clients were answered and runs reconcile.
func (e *env) measure() row {
	rec := e.load.rec
	start := time.Now()
	defer func() { e.t.Logf("measure: %v in all", time.Since(start).Round(time.Millisecond)) }()
	e.waitDrained()
	e.t.Logf("measure: settlement drained after %v", time.Since(start).Round(time.Millisecond))
	var r row
	orders := make([]string, 0, len(rec.orders))
	for id := range rec.orders {
		orders = append(orders, id)
	}
	var found map[string]bool
	r.inMySQL, found = e.countIn("SELECT %s FROM orders WHERE id IN (%s)", "id", orders)
	for _, id := range orders {
		if !found[id] {
			r.lost++
			if len(r.lostExamples) < 5 {
				r.lostExamples = append(r.lostExamples, "order "+id)
			}
		}
	}
	// Shares: one row per packet and user.
	byPacket := map[string]int64{}
	keys := make([]string, 0, len(rec.shares))
	for s := range rec.shares {
		byPacket[s.packet]++
		keys = append(keys, s.packet+"|"+s.user)
	}
	n, found := e.countIn("SELECT %s FROM packet_grabs WHERE CONCAT(packet_id, '|', user_id) IN (%s)",
		"CONCAT(packet_id, '|', user_id)", keys)
	r.inMySQL += n
	for _, k := range keys {
		if !found[k] {
			r.lost++
			if len(r.lostExamples) < 5 {
				r.lostExamples = append(r.lostExamples, "share "+k)
			}
		}
	}
	r.wins = int64(len(orders) + len(keys))

	r.oversold, r.oversoldInMySQL = e.oversold()
	e.refunds(&r, byPacket)
	e.t.Logf("measure: refunds counted after %v", time.Since(start).Round(time.Millisecond))

	r.reconcile, r.reconcileOut = runCommand(e.t, "reconcile", "--redis-addrs", e.redisAddrs, "--mysql-dsn", e.dsn,
		"--key-prefix", e.prefix, "--partitions", fmt.Sprint(e.partitions))
	return r
}

// waitDrained waits until every partition stream is empty: settled entries
// are deleted, so nothing is left to settle.
func (e *env) waitDrained() {
	ctx := context.Background()
	ks := engine.Keyspace{Prefix: e.prefix, Partitions: e.partitions}
	testenv.Eventually(e.t, 3*time.Minute, func() (bool, string) {
		var n int64
		for p := range e.partitions {
			l, err := e.rdb.XLen(ctx, ks.Events(p)).Result()
			if err != nil && err != redis.Nil {
				return false, fmt.Sprintf("XLEN %s: %v", ks.Events(p), err)
			}
			n += l
		}
		return n == 0, fmt.Sprintf("%d events not settled yet", n)
	})

}

// refunds counts the packets owed a refund (answered 201, never emptied by
// the shares answered) and those refunded in MySQL with exactly the total
// less the shares MySQL holds. It first waits until every one of them is
// refunded, or (mode none) can no longer be: its Redis record is gone.
func (e *env) refunds(r *row, answeredShares map[string]int64) {
	ctx := context.Background()
	ks := engine.Keyspace{Prefix: e.prefix, Partitions: e.partitions}
	var due []string
	for id := range e.load.rec.packets {
		if answeredShares[id] < 1000 {
			due = append(due, id)
		}
	}
	r.refundsDue = int64(len(due))
	var done map[string]bool
	var wrong map[string]string
	testenv.Eventually(e.t, 2*time.Minute, func() (bool, string) {
		wrong = map[string]string{}
		_, done = e.countIn(`SELECT %s FROM packets p
			LEFT JOIN (SELECT packet_id, SUM(amount_cents) AS s FROM packet_grabs GROUP BY packet_id) g ON g.packet_id = p.id
			WHERE p.status = 'refunded' AND p.refunded_cents = p.total_cents - COALESCE(g.s, 0) AND p.id IN (%s)`, "p.id", due)
		for _, id := range due {
			if done[id] {
				continue
			}
			var status string
			var total, refunded, shares, n int64
			if err := e.db.QueryRow(`SELECT p.status, p.total_cents, p.refunded_cents, COALESCE(SUM(g.amount_cents), 0), COUNT(g.packet_id)
				FROM packets p LEFT JOIN packet_grabs g ON g.packet_id = p.id WHERE p.id = ? GROUP BY p.id`, id).
				Scan(&status, &total, &refunded, &shares, &n); err != nil {
				return false, fmt.Sprintf("packet %s: %v", id, err)
			}
			if status == "refunded" && refunded == total-shares {
				done[id] = true // refunded since the query above
				continue
			}
			if status == "refunded" {
				// Refunded, but not total less the shares MySQL holds: final,
				// and wrong (see row.refundsWrong).
				wrong[id] = fmt.Sprintf("packet %s refunded %d of %d fen while MySQL holds %d fen in %d shares", id, refunded, total, shares, n)
				continue
			}
			if e.mode != modeNone {
				return false, fmt.Sprintf("packet %s not refunded yet (%d of %d done; %s in MySQL, %d of %d fen in %d shares)",
					id, len(done), len(due), status, shares, total, n)
			}
			exists, err := e.rdb.Exists(ctx, ks.Packet(ks.Partition(id), id)).Result()
			if err != nil || exists == 1 || status == "funded" {
				return false, fmt.Sprintf("packet %s (%s in MySQL, in Redis: %d %v) not refunded yet", id, status, exists, err)
			}
		}
		return true, ""
	})
	r.refundsDone = int64(len(done))
	for _, w := range wrong {
		r.refundsWrong = append(r.refundsWrong, w)
	}
	sort.Strings(r.refundsWrong)
}

// countIn runs query (with %s for the selected column and for the
// placeholders) over ids in chunks, and returns how many rows a COUNT(*)
// finds and the set of ids the rows name.
func (e *env) countIn(query, col string, ids []string) (int64, map[string]bool) {
	found := map[string]bool{}
	var count int64
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		marks := strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")
		var n int64
		if err := e.db.QueryRow(fmt.Sprintf(query, "COUNT(*)", marks), args...).Scan(&n); err != nil {
			e.t.Fatalf("count: %v", err)
		}
		count += n
		rows, err := e.db.Query(fmt.Sprintf(query, col, marks), args...)
		if err != nil {
			e.t.Fatalf("select: %v", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				e.t.Fatal(err)
			}
			found[id] = true
		}
		if err := rows.Close(); err != nil {
			e.t.Fatal(err)
		}
	}
	return count, found
}

// oversold counts units sold beyond a sale's stock or a user's per-sale
// limit, over the union of the orders answered 200 and those in MySQL (an
// order lost before settling whose unit was sold again is oversold, though
// MySQL alone cannot show it), and over MySQL's alone; both add the shares
// beyond a packet's count.
func (e *env) oversold() (promised, books int64) {
	all := map[string]unit{}
	inMySQL := map[string]unit{}
	for id, b := range e.load.rec.orders {
		all[id] = unit{b.sale, b.user}
	}
	rows, err := e.db.Query("SELECT id, sale_id, user_id, qty FROM orders")
	if err != nil {
		e.t.Fatalf("read orders: %v", err)
	}
	for rows.Next() {
		var id string
		var u unit
		var qty int64
		if err := rows.Scan(&id, &u.sale, &u.user, &qty); err != nil {
			e.t.Fatal(err)
		}
		if qty != 1 {
			e.t.Fatalf("order %s has qty %d; the load buys one unit at a time", id, qty)
		}
		all[id], inMySQL[id] = u, u
	}
	if err := rows.Close(); err != nil {
		e.t.Fatal(err)
	}
	shares := e.sum(`SELECT COALESCE(SUM(GREATEST(n - p.count, 0)), 0) FROM packets p
		JOIN (SELECT packet_id, COUNT(*) AS n FROM packet_grabs GROUP BY packet_id) g ON g.packet_id = p.id`)
	return excess(all, e.sz.stock, e.sz.limit) + shares, excess(inMySQL, e.sz.stock, e.sz.limit) + shares
}

// unit is one unit of a sale held by a user (an order of qty 1).
type unit struct{ sale, user string }

// excess counts the units of orders beyond each sale's stock plus those
// beyond each user's limit in a sale.
func excess(orders map[string]unit, stock, limit int64) int64 {
	perSale, perUser := map[string]int64{}, map[unit]int64{}
	for _, u := range orders {
		perSale[u.sale]++
		perUser[u]++
	}
	var n int64
	for _, sold := range perSale {
		n += max(0, sold-stock)
	}
	for _, held := range perUser {
		n += max(0, held-limit)
	}
	return n
}

func (e *env) sum(query string) int64 {
	var n sql.NullInt64
	if err := e.db.QueryRow(query).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

// TestExcessCountsOversell: the table's oversold column counts units beyond
// stock and beyond a user's limit, and nothing within them.
func TestExcessCountsOversell(t *testing.T) {
	orders := map[string]unit{
		"1": {"a", "x"}, "2": {"a", "y"}, "3": {"a", "z"}, // sale a: 3 units, stock 2 → 1
		"4": {"b", "x"}, "5": {"b", "x"}, "6": {"b", "x"}, // sale b: stock fine, x holds 3, limit 2 → 1
		"7": {"c", "x"}, "8": {"c", "y"}, // within both
	}
	if got := excess(orders, 3, 2); got != 1 {
		t.Fatalf("stock 3, limit 2: excess %d, want 1 (x holds 3 of b)", got)
	}
	if got := excess(orders, 2, 2); got != 3 {
		t.Fatalf("stock 2, limit 2: excess %d, want 3 (a and b one over stock, x one over its limit in b)", got)
	}
	if got := excess(map[string]unit{"1": {"a", "x"}}, 1, 1); got != 0 {
		t.Fatalf("one unit of one: excess %d, want 0", got)
	}
}
