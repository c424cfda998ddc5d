package settle

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab"
	"github.com/flashgrab/flashgrab/engine"
)

// Check is one reconciliation check: how many things it looked at and every
// difference it found.
type Check struct {
	Name    string
	Checked int
	Diffs   []string
}

// Report is the outcome of Reconcile.
type Report struct {
	Checks []Check
	// InFlight counts stream entries not settled yet (pending or unread, none
	// older than StuckAfter); their wins are not counted missing.
	InFlight int
	// RefundsInProgress counts payments refunding for less than
	// RefundStuckAfter: asked of the provider, not yet confirmed.
	RefundsInProgress int
}

// OK reports whether no check found a difference.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if len(c.Diffs) > 0 {
			return false
		}
	}
	return true
}

// Print writes what was checked and every difference. A check that found
// nothing to look at says so rather than "ok".
func (r *Report) Print(w io.Writer) {
	for _, c := range r.Checks {
		status := "ok"
		switch {
		case len(c.Diffs) > 0:
			status = fmt.Sprintf("%d DIFFERENCES", len(c.Diffs))
		case c.Checked == 0:
			status = "nothing to check"
		}
		fmt.Fprintf(w, "%-50s checked %-8d %s\n", c.Name, c.Checked, status)
		for i, d := range c.Diffs {
			if i == 20 {
				fmt.Fprintf(w, "    ... and %d more\n", len(c.Diffs)-20)
				break
			}
			fmt.Fprintf(w, "    %s\n", d)
		}
	}
	fmt.Fprintf(w, "in flight (in the streams, not settled yet): %d\n", r.InFlight)
	fmt.Fprintf(w, "refunds in progress (asked, not yet confirmed): %d\n", r.RefundsInProgress)
}

// Reconciler proves the books against DESIGN.md's invariants.
type Reconciler struct {
	DB    *sql.DB
	Redis redis.UniversalClient
	Keys  engine.Keyspace

	// Group is the settlers' consumer group (Settler.Group); default
	// "settlers". Entries it has acknowledged are settled even while they
	// still wait for their XDEL.
	Group string
	// StuckAfter is how old the oldest unsettled entry of a partition may be
	// before its settlement counts as stuck rather than in flight; default 5m.
	StuckAfter time.Duration
	// RefundStuckAfter is how long a payment may stay refunding before it
	// counts as a failed refund rather than one in progress; default 1h.
	RefundStuckAfter time.Duration
}

// Reconcile runs every check. An error means a check could not run; a
// difference is reported in the Report, not as an error.
func (r *Reconciler) Reconcile(ctx context.Context) (*Report, error) {
	if r.Group == "" {
		r.Group = "settlers"
	}
	if r.StuckAfter <= 0 {
		r.StuckAfter = 5 * time.Minute
	}
	if r.RefundStuckAfter <= 0 {
		r.RefundStuckAfter = time.Hour
	}
	sales, err := r.salesByPartition(ctx)
	if err != nil {
		return nil, err
	}
	snaps := make([]*snapshot, r.Keys.Partitions)
	fl := newInflight()
	for p := range snaps {
		if snaps[p], err = r.snapshot(ctx, p, sales[p]); err != nil {
			return nil, err
		}
		fl.add(snaps[p])
	}
	if testHookSnapshotsTaken != nil {
		testHookSnapshotsTaken()
	}
	rep := &Report{InFlight: fl.n}
	st := &state{snaps: snaps, sales: sales, fl: fl, rep: rep}
	for _, check := range []func(context.Context, *state) (Check, error){
		r.balancesMatchLedger, r.creditsArePaid, r.paymentsCreditedOnce, r.moneyConserved, r.packetsAddUp,
		r.salesMatchOrders, r.shardMovesAddUp, r.noStrandedStock, r.ordersHaveSale, r.ordersSettled, r.grabsSettled,
		r.settlementNotStuck, r.noDeadLetters, r.refundsReachBuyers, r.stateNotLost,
	} {
		c, err := check(ctx, st)
		if err != nil {
			return nil, fmt.Errorf("reconcile %q: %w", c.Name, err)
		}
		rep.Checks = append(rep.Checks, c)
	}
	return rep, nil
}

// testHookSnapshotsTaken, when set (by a test), runs in Reconcile once every
// partition's snapshot is taken, before the checks read MySQL.
var testHookSnapshotsTaken func()

// state is what every check may consult: the Redis snapshot taken first and
// the report being written.
type state struct {
	snaps []*snapshot
	sales [][]saleRow
	fl    *inflight
	rep   *Report
}

// inflight is what the streams still hold unsettled: wins Redis decided that
// MySQL cannot have yet.
type inflight struct {
	orders map[string]flashgrab.Order
	grabs  map[string]bool // packet/user
	sales  map[string]bool // sales whose creation is not settled yet
	n      int
}

func newInflight() *inflight {
	return &inflight{orders: map[string]flashgrab.Order{}, grabs: map[string]bool{}, sales: map[string]bool{}}
}

func (fl *inflight) add(s *snapshot) {
	for _, m := range s.unsettled {
		fl.n++
		evs, err := engine.ParseEntry(s.p, m)
		if err != nil {
			continue
		}
		for _, ev := range evs {
			switch ev.Kind {
			case flashgrab.EventOrder:
				fl.orders[ev.Order.ID] = ev.Order
			case flashgrab.EventGrab:
				fl.grabs[ev.Grab.PacketID+"/"+ev.Grab.UserID] = true
			case flashgrab.EventSale:
				fl.sales[ev.Sale.ID] = true
			}
		}
	}
}

// balancesMatchLedger: invariant 5, every balance is the sum of its ledger
// and equals the balance_after of its last ledger row.
func (r *Reconciler) balancesMatchLedger(ctx context.Context, _ *state) (Check, error) {
	c := Check{Name: "balance = sum of ledger (invariant 5)"}
	rows, err := r.DB.QueryContext(ctx, `SELECT a.id, a.balance_cents, COALESCE(SUM(l.delta_cents), 0),
		COALESCE((SELECT balance_after FROM ledger WHERE account_id = a.id ORDER BY seq DESC LIMIT 1), 0)
		FROM accounts a LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id`)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var bal, sum, last int64
		if err := rows.Scan(&id, &bal, &sum, &last); err != nil {
			return c, err
		}
		c.Checked++
		if bal != sum || bal != last {
			c.Diffs = append(c.Diffs, fmt.Sprintf("account %s: balance %d, ledger sum %d, last balance_after %d", id, bal, sum, last))
		}
	}
	return c, rows.Err()
}

// moneyConserved: invariant 6, what came in equals all balances plus what
// open packets still hold. Money in is read from outside the ledger: the
// payments the providers confirmed (paid) and the admin credits, so that a
// credit nobody paid for shows as money out of nowhere.
func (r *Reconciler) moneyConserved(ctx context.Context, _ *state) (Check, error) {
	c := Check{Name: "money in = balances + held in packets (inv. 6)", Checked: 1}
	var paid, credits, balances, packets, shares, refunds int64
	err := r.DB.QueryRowContext(ctx, `SELECT
		(SELECT COALESCE(SUM(amount_cents), 0) FROM payments WHERE status = ?),
		(SELECT COALESCE(SUM(delta_cents), 0) FROM ledger WHERE kind = 'credit'),
		(SELECT COALESCE(SUM(balance_cents), 0) FROM accounts),
		(SELECT COALESCE(SUM(total_cents), 0) FROM packets),
		(SELECT COALESCE(SUM(amount_cents), 0) FROM packet_grabs),
		(SELECT COALESCE(SUM(refunded_cents), 0) FROM packets)`, PaymentPaid).
		Scan(&paid, &credits, &balances, &packets, &shares, &refunds)
	if err != nil {
		return c, err
	}
	held := packets - shares - refunds
	if in := paid + credits; in != balances+held {
		c.Diffs = append(c.Diffs, fmt.Sprintf("money in %d fen (paid %d + admin credits %d), balances %d + held in packets %d = %d",
			in, paid, credits, balances, held, balances+held))
	}
	return c, nil
}

// packetsAddUp: invariant 3, a packet's settled shares plus its refund never
// exceed its total and equal it once the packet is finished; Redis agrees.
func (r *Reconciler) packetsAddUp(ctx context.Context, st *state) (Check, error) {
	fl := st.fl
	c := Check{Name: "packet shares + refund = total (invariant 3)"}
	rows, err := r.DB.QueryContext(ctx, `SELECT p.id, p.total_cents, p.count, p.status, p.refunded_cents,
		COALESCE(SUM(g.amount_cents), 0), COUNT(g.user_id), COALESCE(MIN(g.amount_cents), 1)
		FROM packets p LEFT JOIN packet_grabs g ON g.packet_id = p.id GROUP BY p.id`)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, status string
		var total, count, refunded, shares, n, minShare int64
		if err := rows.Scan(&id, &total, &count, &status, &refunded, &shares, &n, &minShare); err != nil {
			return c, err
		}
		c.Checked++
		switch {
		case n > count:
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: %d winners for %d shares", id, n, count))
		case minShare < 1:
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: a share of %d fen", id, minShare))
		case status == PacketRefunded && shares+refunded != total:
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: shares %d + refund %d != total %d", id, shares, refunded, total))
		case n == count && shares != total:
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: all %d shares taken but they sum to %d of %d", id, n, shares, total))
		case shares+refunded > total:
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: shares %d + refund %d exceed total %d", id, shares, refunded, total))
		}
		if status == PacketFunded {
			continue
		}
		p := r.Keys.Partition(id)
		v, err := r.Redis.HMGet(ctx, r.Keys.Packet(p, id), "total", "rem", "left").Result()
		if err != nil {
			return c, err
		}
		if v[0] == nil {
			// Redis drops a packet's keys a retention period after it is
			// emptied or closed; a finished packet is then MySQL's alone.
			if status != PacketRefunded && n != count {
				c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: live in MySQL, missing in Redis", id))
			}
			continue
		}
		rtotal, rrem, rleft := atoi(v[0]), atoi(v[1]), atoi(v[2])
		if rtotal != total {
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: total %d in MySQL, %d in Redis", id, total, rtotal))
		}
		inFlight := 0
		for k := range fl.grabs {
			if strings.HasPrefix(k, id+"/") {
				inFlight++
			}
		}
		if count-rleft != n+int64(inFlight) {
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: %d grabs in Redis, %d settled + %d in flight", id, count-rleft, n, inFlight))
		} else if inFlight == 0 && rtotal-rrem != shares {
			c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: Redis handed out %d fen, MySQL settled %d", id, rtotal-rrem, shares))
		}
	}
	return c, rows.Err()
}

// ordersHaveSale: every settled order's sale is in MySQL. A sale's creation
// is recorded on its own partition's stream (shard 0's, for a sharded
// sale), and its orders on their shards' streams, which settle on their
// own: a sale whose creation is still in that stream is in flight. A sale
// found in neither is looked for again, its partition's stream first and
// then MySQL: a creation recorded after the snapshot came before the
// order's, so it is in one or the other by then. This needs no clock (the
// orders' times and another master's snapshot time would be two). One
// still in neither was lost with its partition's stream before it settled
// (the one case a rebuild cannot restore a shard of a sharded sale: see
// design.md): MySQL knows it only by the orders its other shards settled.
func (r *Reconciler) ordersHaveSale(ctx context.Context, st *state) (Check, error) {
	c := Check{Name: "every settled order's sale is in MySQL"}
	rows, err := r.DB.QueryContext(ctx, `SELECT o.sale_id, s.id IS NOT NULL, COUNT(*), SUM(o.qty)
		FROM orders o LEFT JOIN sales s ON s.id = o.sale_id GROUP BY o.sale_id ORDER BY o.sale_id`)
	if err != nil {
		return c, fmt.Errorf("read the sales of orders: %w", err)
	}
	type orphan struct {
		id       string
		n, units int64
	}
	var suspects []orphan
	for rows.Next() {
		var o orphan
		var known bool
		if err := rows.Scan(&o.id, &known, &o.n, &o.units); err != nil {
			rows.Close()
			return c, fmt.Errorf("read the sales of orders: %w", err)
		}
		c.Checked++
		if !known && !st.fl.sales[o.id] {
			suspects = append(suspects, o)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(suspects) == 0 {
		return c, err
	}
	ids := make([]string, len(suspects))
	parts := map[int]bool{}
	for i, o := range suspects {
		ids[i] = o.id
		parts[r.Keys.Partition(o.id)] = true
	}
	again, err := r.inFlightNow(ctx, parts)
	if err != nil {
		return c, err
	}
	known := map[string]bool{}
	rows, err = r.DB.QueryContext(ctx, `SELECT id FROM sales WHERE id IN (`+placeholders(len(ids), "?")+`)`, anys(ids)...)
	if err != nil {
		return c, fmt.Errorf("read the sales of orders again: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return c, fmt.Errorf("read the sales of orders again: %w", err)
		}
		known[id] = true
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("read the sales of orders again: %w", err)
	}
	for _, o := range suspects {
		if known[o.id] || again.sales[o.id] {
			continue
		}
		p := r.Keys.Partition(o.id)
		c.Diffs = append(c.Diffs, fmt.Sprintf("sale %s: %d orders (%d units) in MySQL, but not the sale: its creation was lost "+
			"with partition %d's stream before it settled; what its shards still hold in Redis is not sold by an instance that does not know it",
			o.id, o.n, o.units, p))
	}
	return c, nil
}

// ordersSettled: invariant 4 for sales, every order Redis decided is in MySQL
// (or still in its stream). An order the scan finds missing may have been
// won after the snapshot: its partition's stream is read again, then MySQL,
// and only an order in neither is a difference.
func (r *Reconciler) ordersSettled(ctx context.Context, st *state) (Check, error) {
	fl := st.fl
	c := Check{Name: "every order in Redis is in MySQL (inv. 4)"}
	var batch, missing []string
	inMySQL := func(ids []string) (map[string]bool, error) {
		have := map[string]bool{}
		rows, err := r.DB.QueryContext(ctx, "SELECT id FROM orders WHERE id IN ("+placeholders(len(ids), "?")+")", anys(ids)...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			rows.Scan(&id)
			have[id] = true
		}
		return have, rows.Err()
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		have, err := inMySQL(batch)
		if err != nil {
			return err
		}
		for _, id := range batch {
			c.Checked++
			if _, flying := fl.orders[id]; !have[id] && !flying {
				missing = append(missing, id)
			}
		}
		batch = batch[:0]
		return nil
	}
	// One pass over the keyspace for every partition's order buckets (the
	// pattern's "{p*}" matches any partition tag), and over each bucket's
	// orders.
	pattern := r.Keys.Prefix + ":{p*}:orders:*"
	err := scanKeys(ctx, r.Redis, pattern, func(key string) error {
		iter := r.Redis.HScan(ctx, key, 0, "", 1000).Iterator()
		for i := 0; iter.Next(ctx); i++ {
			if i%2 == 1 {
				continue // the record; the field before it is the order id
			}
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("scan order bucket %s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	if err := flush(); err != nil {
		return c, err
	}
	if len(missing) == 0 {
		return c, nil
	}
	parts := map[int]bool{}
	for _, id := range missing {
		if p, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:]); err == nil && p >= 0 && p < r.Keys.Partitions {
			parts[p] = true
		}
	}
	again, err := r.inFlightNow(ctx, parts)
	if err != nil {
		return c, err
	}
	for len(missing) > 0 {
		n := min(len(missing), 500)
		have, err := inMySQL(missing[:n])
		if err != nil {
			return c, err
		}
		for _, id := range missing[:n] {
			if _, flying := again.orders[id]; !have[id] && !flying {
				c.Diffs = append(c.Diffs, fmt.Sprintf("order %s: in Redis, not in MySQL nor in flight", id))
			}
		}
		missing = missing[n:]
	}
	return c, nil
}

// inFlightNow reads the streams of parts again: what a check that found
// something missing after the first snapshot looks for before it reports it.
func (r *Reconciler) inFlightNow(ctx context.Context, parts map[int]bool) (*inflight, error) {
	fl := newInflight()
	for p := range parts {
		s, err := r.snapshot(ctx, p, nil)
		if err != nil {
			return nil, err
		}
		fl.add(s)
	}
	return fl, nil
}

// stateNotLost: a partition without its epoch marker lost its Redis state
// (engine/rebuild.go) and is fenced until rebuilt; while MySQL holds sales or
// live packets of it, that is a difference (a partition MySQL knows nothing
// of is only waiting for its first marker).
func (r *Reconciler) stateNotLost(ctx context.Context, st *state) (Check, error) {
	c := Check{Name: "Redis state present in every partition (epoch)"}
	live := make([]int, r.Keys.Partitions)
	rows, err := r.DB.QueryContext(ctx, `SELECT id FROM packets WHERE status = ?`, PacketLive)
	if err != nil {
		return c, err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return c, err
		}
		live[r.Keys.Partition(id)]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, err
	}
	for _, s := range st.snaps {
		c.Checked++
		if !s.epoch && (len(st.sales[s.p]) > 0 || live[s.p] > 0) {
			c.Diffs = append(c.Diffs, fmt.Sprintf("partition %d: no epoch marker while MySQL holds %d sales and %d live packets of it: "+
				"Redis lost its state; `flashgrab rebuild` restores it", s.p, len(st.sales[s.p]), live[s.p]))
		}
	}
	return c, nil
}

// grabsSettled: invariant 4 for packets, every share Redis handed out is in
// MySQL with the same amount (or still in its stream).
func (r *Reconciler) grabsSettled(ctx context.Context, st *state) (Check, error) {
	fl := st.fl
	c := Check{Name: "every packet share in Redis is in MySQL (inv. 4)"}
	rows, err := r.DB.QueryContext(ctx, `SELECT id FROM packets WHERE status <> ?`, PacketFunded)
	if err != nil {
		return c, err
	}
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		p := r.Keys.Partition(id)
		grabs, err := r.Redis.HGetAll(ctx, r.Keys.PacketGrabs(p, id)).Result()
		if err != nil {
			return c, err
		}
		settled := map[string]int64{}
		rows, err := r.DB.QueryContext(ctx, `SELECT user_id, amount_cents FROM packet_grabs WHERE packet_id = ?`, id)
		if err != nil {
			return c, err
		}
		for rows.Next() {
			var u string
			var a int64
			rows.Scan(&u, &a)
			settled[u] = a
		}
		rows.Close()
		for user, rec := range grabs {
			c.Checked++
			amt := atoi(rec[:strings.IndexByte(rec+"|", '|')])
			got, ok := settled[user]
			switch {
			case !ok && !fl.grabs[id+"/"+user]:
				c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: share of %s in Redis, not in MySQL nor in flight", id, user))
			case ok && got != amt:
				c.Diffs = append(c.Diffs, fmt.Sprintf("packet %s: share of %s is %d in Redis, %d in MySQL", id, user, amt, got))
			}
		}
	}
	return c, nil
}

// scanKeys calls fn with every key matching pattern, one call at a time. A
// SCAN on a cluster client walks only the node it happens to reach, so on a
// cluster every master is scanned (replicas hold copies only).
func scanKeys(ctx context.Context, rdb redis.UniversalClient, pattern string, fn func(key string) error) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return scanNode(ctx, rdb, pattern, fn)
	}
	// ForEachMaster scans the masters concurrently; fn is not safe for that,
	// so the scans take turns calling it.
	var mu sync.Mutex
	return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		err := scanNode(ctx, c, pattern, func(key string) error {
			mu.Lock()
			defer mu.Unlock()
			return fn(key)
		})
		if err != nil {
			return fmt.Errorf("scan %s on %s: %w", pattern, c.Options().Addr, err)
		}
		return nil
	})
}

// scanNode calls fn with every key of one node (or one client's view) that
// matches pattern.
func scanNode(ctx context.Context, c redis.Cmdable, pattern string, fn func(key string) error) error {
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		if err := fn(iter.Val()); err != nil {
			return err
		}
	}
	return iter.Err()
}

func atoi(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
