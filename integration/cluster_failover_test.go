package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCluster_FailoverTimeAfterKill9: kill -9 of the leader, again and
// again (5 times; RELOCK_FAILOVER_KILLS=10 for the full measurement),
// timing until a survivor grants a TRYLOCK (what a client sees). The
// default timeouts aim at a median under 1 s and never over 2 s (the
// failover target); the test logs the numbers and fails only over 5 s, as timing on a
// shared machine varies.
func TestCluster_FailoverTimeAfterKill9(t *testing.T) {
	t.Parallel()
	kills := 5
	if v := os.Getenv("RELOCK_FAILOVER_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	var extra []string // RELOCK_FAILOVER_TIMING=hb,election,lease measures other timeouts
	if v := os.Getenv("RELOCK_FAILOVER_TIMING"); v != "" {
		d := strings.Split(v, ",")
		if len(d) != 3 {
			t.Fatalf("RELOCK_FAILOVER_TIMING=%q: want hb,election,lease", v)
		}
		extra = []string{"--raft-heartbeat-timeout", d[0], "--raft-election-timeout", d[1], "--raft-lease-timeout", d[2]}
	}
	c := startClusterWith(t, 3, func(*clusterNode) []string { return extra })
	var took []time.Duration
	for k := 0; k < kills; k++ {
		old, _ := c.waitLeader(c.nodes, 20*time.Second)
		mustKey(t, old.srv.client(t), "LOCK", "before-"+strconv.Itoa(k), "TTL", "60000", "DETACH")
		old.srv.Kill()
		start := time.Now()
		granted := grantWithin(t, c.others(old), "after-"+strconv.Itoa(k), 10*time.Second)
		took = append(took, time.Since(start))
		t.Logf("kill %d: %s killed, %s granted after %v", k, old.id, granted.id, took[k])
		old.restart(t)
	}
	s := slices.Clone(took)
	slices.Sort(s)
	t.Logf("failover after kill -9, %d kills: median %v, max %v", kills, s[len(s)/2], s[len(s)-1])
	if s[len(s)-1] > 5*time.Second {
		t.Errorf("a failover took %v", s[len(s)-1])
	}
}

// grantWithin polls TRYLOCK name on each node until one grants it, and
// returns that node.
func grantWithin(t *testing.T, nodes []*clusterNode, name string, within time.Duration) *clusterNode {
	t.Helper()
	clients := make([]*redis.Client, len(nodes))
	for i, nd := range nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: nd.addr, PoolSize: 1, MaxRetries: -1,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
		defer clients[i].Close()
	}
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		for i, cl := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			key, err := cl.Do(ctx, "TRYLOCK", name, "TTL", "60000", "DETACH").Text()
			cancel()
			if err == nil && key != "" {
				return nodes[i]
			}
			if err != nil && !errors.Is(err, redis.Nil) {
				last = err
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no node granted %s within %v (last: %v)", name, within, last)
	return nil
}

// TestRaft_TimeoutFlags: the failover timeouts are flags (and RELOCK_*
// variables, config keys); values raft would refuse are refused at start,
// naming the flag.
func TestRaft_TimeoutFlags(t *testing.T) {
	t.Parallel()
	code, stderr := runServerToExit(t, "--node-id", "n1", "--raft-listen", "127.0.0.1:0",
		"--raft-dir", filepath.Join(t.TempDir(), "r"), "--raft-heartbeat-timeout", "300ms", "--raft-lease-timeout", "1s")
	if code == 0 || !strings.Contains(stderr, "--raft-lease-timeout 1s is longer than --raft-heartbeat-timeout 300ms") {
		t.Errorf("lease over heartbeat: exit %d\n%s", code, stderr)
	}
	// Slow but consistent timeouts: a cluster forms and fails over with them.
	c := startClusterWith(t, 3, func(*clusterNode) []string {
		return []string{"--raft-heartbeat-timeout", "700ms", "--raft-election-timeout", "900ms", "--raft-lease-timeout", "350ms"}
	})
	old, _ := c.waitLeader(c.nodes, 20*time.Second)
	// slog's JSON has durations in ns.
	is := func(v any, d time.Duration) bool { return v == float64(d) || v == d.String() }
	started := false
	for _, l := range old.srv.Logs() {
		if l["msg"] == "raft node started" {
			started = true
			if !is(l["heartbeat_timeout"], 700*time.Millisecond) || !is(l["election_timeout"], 900*time.Millisecond) || !is(l["lease_timeout"], 350*time.Millisecond) {
				t.Errorf("started with %v/%v/%v", l["heartbeat_timeout"], l["election_timeout"], l["lease_timeout"])
			}
		}
	}
	if !started {
		t.Error(`no "raft node started" log line`)
	}
	old.srv.Kill()
	start := time.Now()
	grantWithin(t, c.others(old), "after", 15*time.Second)
	if took := time.Since(start); took < 700*time.Millisecond {
		t.Errorf("failover took %v, shorter than the 700ms heartbeat timeout: the flag was not applied", took)
	}
}
