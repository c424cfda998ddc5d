package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNode is a redis-server in cluster mode that the test started, and
// may kill and start again: empty, unless Cluster was given persistence
// arguments (--appendonly yes), in which case it reloads its own AOF.
type ClusterNode struct {
	Addr string
	dir  string
	args []string // added to the node's set-up (Cluster's args)
	cmd  *exec.Cmd
}

// Start starts the node's redis-server and waits until it answers PING.
func (n *ClusterNode) Start(t testing.TB) {
	t.Helper()
	_, port, _ := net.SplitHostPort(n.Addr)
	n.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", n.dir,
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+port+".conf",
		"--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(n.dir, "redis-"+port+".log"))
	n.cmd.Args = append(n.cmd.Args, n.args...)
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("testenv: start redis-server on %s: %v", n.Addr, err)
	}
	c := redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	Eventually(t, 10*time.Second, func() (bool, string) {
		err := c.Ping(context.Background()).Err()
		return err == nil, fmt.Sprintf("redis-server on %s: ping: %v", n.Addr, err)
	})
}

// Kill stops the node's redis-server, if it runs; only this process is
// touched, never a server the test did not start.
func (n *ClusterNode) Kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Kill()
		n.cmd.Wait()
		n.cmd = nil
	}
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Cluster starts a Redis Cluster of three masters of the test's own (no
// replicas, cluster-require-full-coverage no), each with a third of the
// slots, and stops them when the test ends. args are added to each node's
// set-up, after the defaults, so they override them (e.g. "--appendonly",
// "yes"). It skips the test when redis-server is not installed: the shared
// Redis is not a cluster.
func Cluster(t testing.TB, args ...string) []*ClusterNode {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not in PATH: no real cluster to test against")
	}
	ctx := context.Background()
	nodes := make([]*ClusterNode, 3)
	for i := range nodes {
		nodes[i] = &ClusterNode{Addr: freeAddr(t), dir: t.TempDir(), args: args}
		nodes[i].Start(t)
		t.Cleanup(nodes[i].Kill)
	}
	slots := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		if err := c.ClusterAddSlotsRange(ctx, slots[i][0], slots[i][1]).Err(); err != nil {
			t.Fatalf("testenv: %s: add slots: %v", n.Addr, err)
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(nodes[0].Addr)
			p, _ := strconv.Atoi(port)
			if err := c.ClusterMeet(ctx, host, strconv.Itoa(p)).Err(); err != nil {
				t.Fatalf("testenv: %s: meet: %v", n.Addr, err)
			}
		}
		c.Close()
	}
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		Eventually(t, 20*time.Second, func() (bool, string) {
			// With cluster-require-full-coverage no a node says ok before
			// gossip has told it who holds the other masters' slots; a client
			// that loads that half map sends a key to the wrong master, and the
			// MOVED inside a MULTI aborts the whole transaction (EXECABORT,
			// seen in CI). So every node must see all the slots assigned.
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") &&
					strings.Contains(info, "cluster_slots_assigned:16384"),
				fmt.Sprintf("%s: cluster info %q %v", n.Addr, info, err)
		})
		c.Close()
	}
	return nodes
}

// SharedCluster gives a test the masters of a Redis Cluster and a key prefix
// of its own, for tests that neither kill nor reconfigure nodes: the cluster
// named by $FLASHGRAB_TEST_CLUSTER (one seed address, as `.ci/services.sh
// cluster` prints it), every key under the prefix deleted from every master
// when the test ends; without it, a cluster of the test's own (Cluster).
func SharedCluster(t testing.TB) (masters []string, prefix string) {
	t.Helper()
	prefix = Name("fgt")
	seed := os.Getenv("FLASHGRAB_TEST_CLUSTER")
	if seed == "" {
		for _, n := range Cluster(t) {
			masters = append(masters, n.Addr)
		}
		return masters, prefix
	}
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{seed}})
	var mu sync.Mutex
	err := rdb.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		masters = append(masters, c.Options().Addr)
		return nil
	})
	if err != nil {
		rdb.Close()
		t.Fatalf("testenv: the cluster of FLASHGRAB_TEST_CLUSTER=%s does not answer (bash .ci/services.sh cluster starts one): %v", seed, err)
	}
	slices.Sort(masters)
	t.Cleanup(func() {
		defer rdb.Close()
		_ = rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
			return iter.Err()
		})
	})
	return masters, prefix
}
