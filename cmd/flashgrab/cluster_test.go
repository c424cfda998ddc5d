package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/engine"
	"github.com/flashgrab/flashgrab/internal/testenv"
)

// TestOneSeedGivesClusterClient: one address of a cluster node gives a
// cluster client (the node is asked), several addresses too, and one
// address of a plain Redis a plain client; the cluster client keeps serve's
// fail-fast settings.
func TestOneSeedGivesClusterClient(t *testing.T) {
	masters, _ := testenv.SharedCluster(t)
	ctx := context.Background()
	for _, addrs := range []string{masters[len(masters)-1], masters[0] + "," + masters[1]} {
		rdb, err := openRedis(ctx, addrs, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, ok := rdb.(*redis.ClusterClient)
		if !ok {
			rdb.Close()
			t.Fatalf("openRedis(%q) on a cluster node: %T, want *redis.ClusterClient", addrs, rdb)
		}
		o := c.Options()
		rdb.Close()
		if o.DialerRetries != 1 || o.DialTimeout > 200*time.Millisecond || o.MaxRetries > 1 || o.PoolTimeout > 500*time.Millisecond {
			t.Fatalf("cluster client: dial attempts %d, dial timeout %v, retries %d, pool timeout %v: want 1, at most 200 ms, at most 1, at most 500 ms",
				o.DialerRetries, o.DialTimeout, o.MaxRetries, o.PoolTimeout)
		}
	}
	rdb, err := openRedis(ctx, testenv.RedisAddr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, ok := rdb.(*redis.Client); !ok {
		t.Fatalf("openRedis(%q) on a plain Redis: %T, want *redis.Client", testenv.RedisAddr(), rdb)
	}
}

// startServe runs `flashgrab serve` in this process with one Redis seed
// address and returns its base URL once /readyz answers 200; it is stopped,
// and must stop cleanly, when the test ends.
func startServe(t *testing.T, seed, dsn, prefix, secret string, partitions int) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- rootCommand().Run(ctx, []string{"flashgrab", "serve", "--addr", addr, "--redis-addrs", seed,
			"--mysql-dsn", dsn, "--key-prefix", prefix, "--partitions", strconv.Itoa(partitions), "--jwt-secret", secret,
			"--sandbox=false", "--durability", "none", "--grab-rate", "0"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve on %s returned %v on shutdown", addr, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve on %s did not stop within 30s", addr)
		}
	})
	base := "http://" + addr
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("serve on %s stopped early: %v", addr, err)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, fmt.Sprintf("GET %s/readyz: %v", base, err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("GET %s/readyz: %d, want 200", base, resp.StatusCode)
	})
	return base
}

// TestTwoServesOnOneCluster is issue 11 on a real 3-master cluster (its
// own, or $FLASHGRAB_TEST_CLUSTER's): two
// `serve` instances, each given one seed address (a different node), on the
// same database. Sales on every master; every user grabs each sale on both
// instances at once. Each sale sells exactly its stock, no user holds two
// orders of a sale, every order reaches MySQL once, and `reconcile` with
// one seed address finds the books clean; then an orphan order planted on
// each master is reported, every one.
func TestTwoServesOnOneCluster(t *testing.T) {
	masters, prefix := testenv.SharedCluster(t)
	db, dsn := testenv.MySQL(t)
	ctx := context.Background()
	const (
		partitions = 12
		secret     = "two-serves"
		stock      = 30
		users      = 60
	)
	bases := []string{
		startServe(t, masters[0], dsn, prefix, secret, partitions),
		startServe(t, masters[1], dsn, prefix, secret, partitions),
	}
	third := masters[len(masters)-1]
	ks := engine.Keyspace{Prefix: prefix, Partitions: partitions}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{third}})
	t.Cleanup(func() { rdb.Close() })

	// One sale on each master: the first sale ids whose partitions' slots
	// the three masters hold.
	sales := map[string]string{} // master -> sale
	for i := 0; len(sales) < len(masters) && i < 1000; i++ {
		id := "s" + strconv.Itoa(i)
		m, err := rdb.MasterForKey(ctx, ks.Sale(ks.Partition(id), id))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := sales[m.Options().Addr]; !ok {
			sales[m.Options().Addr] = id
		}
	}
	if len(sales) != len(masters) {
		t.Fatalf("sales reach %d of %d masters", len(sales), len(masters))
	}

	auth := api.Auth{Secret: []byte(secret)}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	post := func(base, path, user string, admin bool, body string) (int, []byte, error) {
		tok, err := auth.Mint(user, admin, time.Hour)
		if err != nil {
			return 0, nil, err
		}
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	for _, id := range sales {
		body := fmt.Sprintf(`{"id":%q,"merchant_id":"m","price_cents":5,"stock":%d,"per_user_limit":1,
			"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z"}`, id, stock)
		if code, b, err := post(bases[0], "/v1/sales", "root", true, body); err != nil || code != 201 {
			t.Fatalf("create sale %s: %d %s %v", id, code, b, err)
		}
	}

	// Every user grabs every sale on both instances at once.
	type won struct{ sale, user, order string }
	var (
		mu    sync.Mutex
		wins  []won
		wg    sync.WaitGroup
		limit = make(chan struct{}, 48)
	)
	for _, id := range sales {
		for u := range users {
			for _, base := range bases {
				wg.Add(1)
				go func() {
					defer wg.Done()
					limit <- struct{}{}
					defer func() { <-limit }()
					user := "u" + strconv.Itoa(u)
					code, b, err := post(base, "/v1/sales/"+id+"/grab", user, false, "")
					switch {
					case err != nil:
						t.Errorf("grab of %s by %s on %s: %v", id, user, base, err)
					case code == 200:
						var r struct {
							OrderID string `json:"order_id"`
						}
						if err := json.Unmarshal(b, &r); err != nil || r.OrderID == "" {
							t.Errorf("grab of %s by %s on %s: 200 %s", id, user, base, b)
							return
						}
						mu.Lock()
						wins = append(wins, won{id, user, r.OrderID})
						mu.Unlock()
					case code == 409 && bytes.Contains(b, []byte(`"sold_out"`)):
					default:
						t.Errorf("grab of %s by %s on %s: %d %s, want 200 or 409 sold_out", id, user, base, code, b)
					}
				}()
			}
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	orders := map[string]won{} // order id -> its win (a user's two 200s name one order)
	byUser := map[string]string{}
	perSale := map[string]int{}
	for _, w := range wins {
		if prev, ok := byUser[w.sale+"/"+w.user]; ok && prev != w.order {
			t.Fatalf("user %s holds orders %s and %s of sale %s", w.user, prev, w.order, w.sale)
		}
		byUser[w.sale+"/"+w.user] = w.order
		if _, ok := orders[w.order]; !ok {
			orders[w.order] = w
			perSale[w.sale]++
		}
	}
	for _, id := range sales {
		if perSale[id] != stock {
			t.Fatalf("sale %s: %d orders, want exactly its stock %d (all sales: %v)", id, perSale[id], stock, perSale)
		}
	}

	// Every order in MySQL once, as Redis decided it.
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&n); err != nil {
			return false, fmt.Sprintf("count orders: %v", err)
		}
		return n == len(orders), fmt.Sprintf("MySQL holds %d orders, want %d", n, len(orders))
	})
	rows, err := db.Query("SELECT id, sale_id, user_id FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var id, sale, user string
		if err := rows.Scan(&id, &sale, &user); err != nil {
			t.Fatal(err)
		}
		if w, ok := orders[id]; !ok || w.sale != sale || w.user != user {
			t.Fatalf("MySQL order %s of %s by %s: Redis decided %+v", id, sale, user, w)
		}
		seen++
	}
	rows.Close()
	if seen != len(orders) {
		t.Fatalf("MySQL holds %d orders, want %d", seen, len(orders))
	}

	// reconcile, given one seed address, checks every master: clean now,
	// and each of three planted orphans (one per master) reported.
	reconcile := func() (string, error) {
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.Writer = &out
		err := cmd.Run(ctx, []string{"flashgrab", "reconcile", "--redis-addrs", third, "--mysql-dsn", dsn,
			"--key-prefix", prefix, "--partitions", strconv.Itoa(partitions)})
		return out.String(), err
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		out, err := reconcile()
		return err == nil, fmt.Sprintf("reconcile after the sales settled: %v\n%s", err, out)
	})
	var orphans []string
	for _, id := range sales {
		p := ks.Partition(id)
		order := fmt.Sprintf("%d-%d", 900000+p, p)
		if err := rdb.HSet(ctx, ks.Orders(p, order), order, id+"|orphan|m|1|5|1700000000000|").Err(); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, order)
	}
	out, err := reconcile()
	if err == nil {
		t.Fatalf("reconcile passed with an orphan order on each master:\n%s", out)
	}
	for _, o := range orphans {
		if !strings.Contains(out, "order "+o+": in Redis, not in MySQL nor in flight") {
			t.Errorf("reconcile did not report the orphan order %s:\n%s", o, out)
		}
	}
}
