package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Multi-process Raft tests: three relock processes on loopback, killed,
// stopped and restarted by the tests. Every wait is a poll with a deadline.

// clusterNode is one member of a test cluster. Its client and Raft ports
// are fixed (so that --advertise names it and a restart with the same
// flags comes back at the same addresses).
type clusterNode struct {
	id       string
	addr     string // client address (--listen, --advertise)
	raftAddr string
	args     []string // the server flags, to restart it alike
	wrap     []string // the command it runs under (nsenter into its network namespace), or none
	srv      *server
}

// testCluster is n relock processes forming one Raft cluster.
type testCluster struct {
	t     *testing.T
	nodes []*clusterNode
}

// startCluster starts n nodes bootstrapped together on free loopback
// ports and stops them all (after SIGCONT, in
// case a test stopped one) when the test ends. A node that exits at start
// (a port taken between picking and binding) makes it start over with new
// ports and directories, at most 3 times.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with extra server flags for each node
// (extra may be nil).
func startClusterWith(t *testing.T, n int, extra func(nd *clusterNode) []string) *testCluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := tryStartCluster(t, n, extra)
		if err == nil {
			t.Cleanup(c.stopAll)
			return c
		}
		// Most likely a picked port was taken meanwhile ("address already
		// in use"; the log line may be lost with the exiting process).
		if attempt == 3 {
			t.Fatalf("starting a %d-node cluster: %v", n, err)
		}
		t.Logf("retrying with new ports: %.300s", err)
	}
}

func tryStartCluster(t *testing.T, n int, extra func(nd *clusterNode) []string) (*testCluster, error) {
	addrs := freeAddrs(t, 2*n)
	c := &testCluster{t: t}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, &clusterNode{id: fmt.Sprintf("n%d", i+1), addr: addrs[2*i], raftAddr: addrs[2*i+1]})
	}
	return c, c.launch(extra)
}

// launch starts the cluster's nodes (ids and addresses set), bootstrapped
// together, with extra server flags for each (extra may be nil). If one
// does not start, it kills those it started and returns the error.
func (c *testCluster) launch(extra func(nd *clusterNode) []string) error {
	var peers []string
	for _, nd := range c.nodes {
		peers = append(peers, nd.id+"="+nd.raftAddr)
	}
	dir := c.t.TempDir()
	for _, nd := range c.nodes {
		nd.args = []string{
			"--listen", nd.addr, "--advertise", nd.addr,
			"--node-id", nd.id, "--raft-listen", nd.raftAddr,
			"--raft-dir", filepath.Join(dir, nd.id),
			"--raft-peers", strings.Join(peers, ","), "--bootstrap",
		}
		if extra != nil {
			nd.args = append(nd.args, extra(nd)...)
		}
	}
	for i, nd := range c.nodes {
		srv, err := launchServerIn(c.t, nd.wrap, nil, nd.args...)
		if err != nil {
			for _, started := range c.nodes[:i] {
				started.srv.Kill()
			}
			return err
		}
		if srv.Addr != nd.addr {
			c.t.Fatalf("%s listens on %s, want %s", nd.id, srv.Addr, nd.addr)
		}
		nd.srv = srv
	}
	return nil
}

// freeAddrs returns n distinct loopback addresses that were free a moment
// ago (all listened on at once, then closed).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out
}

// stopAll resumes every node a test may have stopped and stops them all at
// once (SIGTERM, checking a clean exit within 10 s).
func (c *testCluster) stopAll() {
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		nd.signal(syscall.SIGCONT)
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.srv.Stop()
		}()
	}
	wg.Wait()
}

// signal sends sig to the node's process if it is still running.
func (nd *clusterNode) signal(sig syscall.Signal) {
	select {
	case <-nd.srv.done:
	default:
		nd.srv.cmd.Process.Signal(sig)
	}
}

// restart starts a killed node again with the same flags (same ports, same
// --raft-dir; --bootstrap is ignored once its log exists).
func (nd *clusterNode) restart(t *testing.T) {
	t.Helper()
	select {
	case <-nd.srv.done:
	default:
		t.Fatalf("restart of %s, which is still running", nd.id)
	}
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var srv *server
		if srv, err = launchServerIn(t, nd.wrap, nil, nd.args...); err == nil {
			nd.srv = srv
			return
		}
		// Its own old sockets are gone with the process; only another
		// process that took a port meanwhile makes this fail.
		t.Logf("restarting %s: %.200s", nd.id, err)
	}
	t.Fatalf("restarting %s: %v", nd.id, err)
}

// info returns the INFO fields of the sections (a new connection each
// time, bounded to 3 s).
func (nd *clusterNode) info(sections ...string) (map[string]string, error) {
	c := redis.NewClient(&redis.Options{Addr: nd.addr, PoolSize: 1, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	text, err := c.Info(ctx, sections...).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// mustInfo is info failing the test on error.
func (nd *clusterNode) mustInfo(t *testing.T, sections ...string) map[string]string {
	t.Helper()
	m, err := nd.info(sections...)
	if err != nil {
		t.Fatalf("INFO on %s: %v", nd.id, err)
	}
	return m
}

// waitLeader polls INFO replication on the given (running) nodes until one
// is leader with its failover entry applied (raft_leader_addr is its own
// address) and every other one is a follower naming it, so that they
// redirect to it. It returns the leader and how long that took.
func (c *testCluster) waitLeader(nodes []*clusterNode, within time.Duration) (*clusterNode, time.Duration) {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	var last []string
	for n := 0; ; n++ {
		var leader *clusterNode
		agree := true
		last = last[:0]
		for _, nd := range nodes {
			m, err := nd.info("replication")
			if err != nil {
				agree = false
				last = append(last, fmt.Sprintf("%s: %v", nd.id, err))
				continue
			}
			last = append(last, fmt.Sprintf("%s: role=%s state=%s leader=%s addr=%s term=%s",
				nd.id, m["role"], m["raft_state"], m["raft_leader"], m["raft_leader_addr"], m["raft_term"]))
			if m["role"] == "master" && m["raft_leader_addr"] == nd.addr {
				leader = nd
			}
		}
		if leader != nil && agree {
			for _, nd := range nodes {
				if nd == leader {
					continue
				}
				m, err := nd.info("replication")
				if err != nil || m["raft_state"] != "follower" || m["raft_leader"] != leader.id || m["raft_leader_addr"] != leader.addr {
					agree = false
				}
			}
			if agree {
				return leader, time.Since(start)
			}
		}
		if time.Now().After(deadline) || n > 10_000 {
			c.t.Fatalf("no leader that all of %d nodes follow within %v:\n%s", len(nodes), within, strings.Join(last, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// others returns the nodes other than these.
func (c *testCluster) others(not ...*clusterNode) []*clusterNode {
	var out []*clusterNode
next:
	for _, nd := range c.nodes {
		for _, x := range not {
			if nd == x {
				continue next
			}
		}
		out = append(out, nd)
	}
	return out
}

// doer is a *redis.Client or a *redis.ClusterClient.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// doBounded runs one command with a 10 s bound.
func doBounded(c doer, args ...any) *redis.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Do(ctx, args...)
}

// mustKey runs a LOCK or TRYLOCK that must grant and returns the key.
func mustKey(t *testing.T, c doer, args ...any) string {
	t.Helper()
	key, err := doBounded(c, args...).Text()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return key
}

// TestCluster_FollowersRedirectToTheLeader: three nodes elect a leader;
// every lock command on a follower gets -MOVED naming the leader's client
// address, other commands are served there; redis-cli -c and go-redis's
// ClusterClient follow the redirect (CLUSTER SLOTS) and take and release
// locks on the leader.
func TestCluster_FollowersRedirectToTheLeader(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	leader, took := c.waitLeader(c.nodes, 15*time.Second)
	t.Logf("leader %s elected and known to all within %v", leader.id, took)
	want := "MOVED 0 " + leader.addr
	for _, f := range c.others(leader) {
		fc := f.srv.client(t)
		for _, args := range [][]any{
			{"LOCK", "r", "TTL", "1000"}, {"TRYLOCK", "r"}, {"UNLOCK", "r", "1-0000000000000000"},
			{"RENEW", "r", "1-0000000000000000"}, {"CHECK", "r", "1-0000000000000000"},
			{"FORCEUNLOCK", "r"}, {"LOCKS"},
		} {
			if err := doBounded(fc, args...).Err(); err == nil || err.Error() != want {
				t.Errorf("%v on follower %s: %v, want %s", args, f.id, err, want)
			}
		}
		if got, err := doBounded(fc, "CLUSTER", "MYID").Text(); err != nil || got != f.id {
			t.Errorf("CLUSTER MYID on %s = %q, %v", f.id, got, err)
		}
		// HELLO says what the node is, as INFO replication does.
		if hello, err := doBounded(fc, "HELLO", "2").Slice(); err != nil || !slices.Contains(hello, any("replica")) {
			t.Errorf("HELLO on follower %s = %q, %v; want role replica", f.id, hello, err)
		}
		slots, err := fc.ClusterSlots(ctxFor(t, 5*time.Second)).Result()
		if err != nil || len(slots) != 1 || slots[0].Start != 0 || slots[0].End != 16383 ||
			len(slots[0].Nodes) != 1 || slots[0].Nodes[0].Addr != leader.addr {
			t.Errorf("CLUSTER SLOTS on %s = %+v, %v; want 0-16383 on %s", f.id, slots, err, leader.addr)
		}
	}
	lc := leader.srv.client(t)

	t.Run("redis-cli -c", func(t *testing.T) {
		cli := needTool(t, "redis-cli")
		f := c.others(leader)[0]
		out, err := runBounded(exec.Command(cli, "-c", "-e", "-h", "127.0.0.1", "-p", f.srv.Port(),
			"LOCK", "cli-job", "TTL", "30000", "DETACH"), 10*time.Second)
		if err != nil {
			t.Fatalf("redis-cli -c LOCK on a follower: %v\n%s", err, out)
		}
		lines := strings.Fields(out)
		key := lines[len(lines)-1]
		if ttl, err := doBounded(lc, "CHECK", "cli-job", key).Int64(); err != nil || ttl <= 0 || ttl > 30000 {
			t.Fatalf("CHECK on the leader of the key redis-cli -c got (%q): %d, %v", out, ttl, err)
		}
		if err := doBounded(lc, "UNLOCK", "cli-job", key).Err(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("go-redis ClusterClient", func(t *testing.T) {
		var addrs []string
		for _, nd := range c.nodes {
			addrs = append(addrs, nd.addr)
		}
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRedirects: 3,
			DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: time.Second})
		t.Cleanup(func() { cc.Close() })
		key := mustKey(t, cc, "LOCK", "cc-job", "TTL", "30000")
		l, ok := lockOf(t, lc, "cc-job")
		if !ok || len(l.Holders) != 1 || l.Holders[0].Fence != fenceOf(t, key) {
			t.Fatalf("LOCKS on the leader after a ClusterClient LOCK: %+v, %v", l, ok)
		}
		if ttl, err := doBounded(cc, "CHECK", "cc-job", key).Int64(); err != nil || ttl <= 0 {
			t.Errorf("ClusterClient CHECK: %d, %v", ttl, err)
		}
		if n, err := doBounded(cc, "UNLOCK", "cc-job", key).Int(); err != nil || n != 1 {
			t.Fatalf("ClusterClient UNLOCK: %d, %v", n, err)
		}
		if l, ok := lockOf(t, lc, "cc-job"); ok {
			t.Errorf("cc-job still held after UNLOCK: %+v", l)
		}
	})
}

// TestCluster_LeaderKillKeepsEveryHold: SIGKILL of the leader elects a new
// one within seconds, which has every hold: detached holds answer CHECK
// with their keys, connection-bound holds are orphans (client-id -1, their
// deadline the restore grace or their own TTL if sooner) that a RENEW with
// the key from a new connection adopts; the dead leader's waiters are
// gone; fences of new grants are larger than every fence before.
func TestCluster_LeaderKillKeepsEveryHold(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	old, _ := c.waitLeader(c.nodes, 15*time.Second)

	owner := old.srv.client(t)
	detached := mustKey(t, owner, "LOCK", "detached", "TTL", "60000", "DETACH")
	bound := mustKey(t, owner, "LOCK", "bound")
	boundTTL := mustKey(t, owner, "LOCK", "bound-ttl", "TTL", "10000")
	sem1 := mustKey(t, owner, "LOCK", "sem", "SIZE", "2")
	sem2 := mustKey(t, old.srv.client(t), "LOCK", "sem", "SIZE", "2", "TTL", "60000", "DETACH")
	var maxFence int64
	for _, k := range []string{detached, bound, boundTTL, sem1, sem2} {
		maxFence = max(maxFence, fenceOf(t, k))
	}
	// A waiter on the old leader: it must not be granted anywhere later.
	waiter := old.srv.client(t)
	waited := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		waited <- waiter.Do(ctx, "LOCK", "bound").Err()
	}()
	eventually(t, 5*time.Second, func() bool {
		l, _ := lockOf(t, owner, "bound")
		return len(l.Waiters) == 1
	}, "the waiter did not queue")

	old.srv.Kill()
	survivors := c.others(old)
	leader, took := c.waitLeader(survivors, 10*time.Second)
	t.Logf("leader %s killed; %s took over within %v", old.id, leader.id, took)
	select {
	case err := <-waited:
		if err == nil {
			t.Errorf("the dead leader's waiter was granted")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the dead leader's waiter did not end with its connection")
	}

	lc := leader.srv.client(t)
	for _, h := range []struct{ name, key string }{{"detached", detached}, {"sem", sem2}} {
		if ttl, err := doBounded(lc, "CHECK", h.name, h.key).Int64(); err != nil || ttl <= 0 || ttl > 60000 {
			t.Errorf("CHECK %s on the new leader: %d, %v", h.name, ttl, err)
		}
	}
	locks, err := readLocks(ctxFor(t, 5*time.Second), lc)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]lockView{}
	for _, l := range locks {
		got[l.Name] = l
	}
	if len(got) != 4 {
		t.Errorf("locks on the new leader: %+v; want detached, bound, bound-ttl, sem", locks)
	}
	for _, w := range []struct {
		name          string
		fence         int64
		maxTTL        int64
		detached      bool
		holders, size int
	}{
		{"detached", fenceOf(t, detached), 60000, true, 1, 1},
		{"bound", fenceOf(t, bound), 30000, false, 1, 1}, // the default --restore-grace
		{"bound-ttl", fenceOf(t, boundTTL), 10000, false, 1, 1},
		{"sem", 0, 60000, false, 2, 2},
	} {
		l := got[w.name]
		if len(l.Holders) != w.holders || int(l.Size) != w.size || len(l.Waiters) != 0 {
			t.Errorf("%s on the new leader: %+v; want %d holders of size %d and no waiters", w.name, l, w.holders, w.size)
			continue
		}
		for _, h := range l.Holders {
			if h.ClientID != -1 || h.TTL <= 0 || h.TTL > w.maxTTL {
				t.Errorf("%s holder %+v: want client-id -1 and a TTL in (0, %d]", w.name, h, w.maxTTL)
			}
		}
		if w.fence != 0 && (l.Holders[0].Fence != w.fence || l.Holders[0].Detached != w.detached) {
			t.Errorf("%s holder %+v: want fence %d, detached %v", w.name, l.Holders[0], w.fence, w.detached)
		}
	}
	if k, err := doBounded(lc, "TRYLOCK", "bound").Result(); err != redis.Nil {
		t.Errorf("TRYLOCK of the orphaned bound hold: %v, %v; want nil", k, err)
	}

	// A new connection adopts the orphans by RENEW with their keys.
	adopter := leader.srv.client(t)
	id := clientID(t, adopter)
	if ttl, err := doBounded(adopter, "RENEW", "bound", bound).Int64(); err != nil || ttl != -1 {
		t.Errorf("RENEW bound: %d, %v; want -1 (its own TTL: none)", ttl, err)
	}
	if ttl, err := doBounded(adopter, "RENEW", "bound-ttl", boundTTL).Int64(); err != nil || ttl != 10000 {
		t.Errorf("RENEW bound-ttl: %d, %v; want 10000 (its own TTL)", ttl, err)
	}
	for _, name := range []string{"bound", "bound-ttl"} {
		if l, _ := lockOf(t, lc, name); len(l.Holders) != 1 || l.Holders[0].ClientID != id || l.Holders[0].Detached {
			t.Errorf("%s after RENEW: %+v; want bound to client %d", name, l, id)
		}
	}
	adopter.Close() // the adopted holds go with their new connection
	eventually(t, 5*time.Second, func() bool {
		_, a := lockOf(t, lc, "bound")
		_, b := lockOf(t, lc, "bound-ttl")
		return !a && !b
	}, "adopted holds outlived the adopting connection")

	// New grants are fenced above everything before the failover.
	fresh := mustKey(t, lc, "LOCK", "bound", "TTL", "10000")
	if f := fenceOf(t, fresh); f <= maxFence {
		t.Errorf("fence after failover %d, want > %d", f, maxFence)
	}
	// The remaining follower redirects to the new leader.
	for _, f := range c.others(old, leader) {
		if err := doBounded(f.srv.client(t), "CHECK", "bound", fresh).Err(); err == nil || err.Error() != "MOVED 0 "+leader.addr {
			t.Errorf("CHECK on follower %s after failover: %v; want MOVED to %s", f.id, err, leader.addr)
		}
	}
}

// TestCluster_LeaderStopKeepsBoundHolds: stopping the leader (SIGTERM, a
// rolling restart) is not a disconnect of its clients, as with --data-dir
// on a single server: their bound holds come back on the new leader as
// orphans for RENEW to adopt, exactly as after a crash, and its waiters
// are dropped, never granted.
func TestCluster_LeaderStopKeepsBoundHolds(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	old, _ := c.waitLeader(c.nodes, 15*time.Second)
	owner := old.srv.client(t)
	bound := mustKey(t, owner, "LOCK", "bound")
	waiter := old.srv.client(t)
	waited := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		waited <- waiter.Do(ctx, "LOCK", "bound").Err()
	}()
	eventually(t, 5*time.Second, func() bool {
		l, _ := lockOf(t, owner, "bound")
		return len(l.Waiters) == 1
	}, "the waiter did not queue")

	old.srv.Stop()
	if err := <-waited; err == nil { // its connection closed with the server
		t.Errorf("the waiter was granted while its server stopped")
	}
	leader, took := c.waitLeader(c.others(old), 10*time.Second)
	t.Logf("leader %s stopped; %s took over within %v", old.id, leader.id, took)
	lc := leader.srv.client(t)
	l, ok := lockOf(t, lc, "bound")
	if !ok || len(l.Holders) != 1 || l.Holders[0].ClientID != -1 || l.Holders[0].Fence != fenceOf(t, bound) || len(l.Waiters) != 0 {
		t.Fatalf("bound after the leader stopped: %+v, %v; want its hold orphaned, no waiters", l, ok)
	}
	if ttl, err := doBounded(lc, "RENEW", "bound", bound).Int64(); err != nil || ttl != -1 {
		t.Errorf("RENEW of the orphan on the new leader: %d, %v; want -1", ttl, err)
	}
}

// TestCluster_FollowerRejoinsAndCatchesUp: a killed follower misses grants
// and releases; restarted with the same --raft-dir it catches up (its
// applied index reaches the leader's, its table matches), and after the
// leader is then killed the survivors — the rejoined node one of them —
// have every hold.
func TestCluster_FollowerRejoinsAndCatchesUp(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(c.nodes, 15*time.Second)
	f := c.others(leader)[0]
	lc := leader.srv.client(t)

	keys := map[string]string{}
	var maxFence int64
	lock := func(name string) {
		keys[name] = mustKey(t, lc, "TRYLOCK", name, "TTL", "60000", "DETACH")
		maxFence = max(maxFence, fenceOf(t, keys[name]))
	}
	for i := 0; i < 3; i++ {
		lock(fmt.Sprintf("before-%d", i))
	}
	f.srv.Kill()
	for i := 0; i < 20; i++ {
		lock(fmt.Sprintf("while-down-%02d", i))
	}
	for _, name := range []string{"before-0", "while-down-00"} {
		if err := doBounded(lc, "UNLOCK", name, keys[name]).Err(); err != nil {
			t.Fatalf("UNLOCK %s: %v", name, err)
		}
		delete(keys, name)
	}

	f.restart(t)
	// raft_applied_index is raft's: it moves when a batch is handed to the
	// FSM, a moment before the table has it. So wait for both the index
	// and the table.
	want := leader.mustInfo(t, "replication", "locks")
	wantApplied, _ := strconv.ParseUint(want["raft_applied_index"], 10, 64)
	caughtUp := func(m map[string]string) bool {
		applied, _ := strconv.ParseUint(m["raft_applied_index"], 10, 64)
		if applied < wantApplied || m["raft_leader_addr"] != leader.addr {
			return false
		}
		for _, k := range []string{"locks", "holds", "waiters", "last_fence"} {
			if m[k] != want[k] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; ; n++ {
		got, err := f.info("replication", "locks")
		if err == nil && caughtUp(got) {
			break
		}
		if time.Now().After(deadline) || n > 2000 {
			t.Fatalf("the restarted follower did not catch up within 10s:\n got %v (%v)\nwant %v", got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if want["locks"] != strconv.Itoa(len(keys)) {
		t.Errorf("the leader has %s locks, want %d", want["locks"], len(keys))
	}

	leader.srv.Kill()
	survivors := c.others(leader)
	nl, took := c.waitLeader(survivors, 10*time.Second)
	t.Logf("leader %s killed; %s (rejoined: %v) took over within %v", leader.id, nl.id, nl == f, took)
	nc := nl.srv.client(t)
	for name, key := range keys {
		if ttl, err := doBounded(nc, "CHECK", name, key).Int64(); err != nil || ttl <= 0 {
			t.Errorf("CHECK %s on the new leader: %d, %v", name, ttl, err)
		}
	}
	if n := dbsize(t, nc); n != int64(len(keys)) {
		t.Errorf("DBSIZE on the new leader %d, want %d", n, len(keys))
	}
	// The rejoined node has the same table whether it leads or follows.
	li := nl.mustInfo(t, "locks")
	eventually(t, 5*time.Second, func() bool {
		fi, err := f.info("locks")
		return err == nil && fi["locks"] == li["locks"] && fi["holds"] == li["holds"] && fi["last_fence"] == li["last_fence"]
	}, "the rejoined node's table differs from the new leader's %s locks/%s holds/fence %s", li["locks"], li["holds"], li["last_fence"])
	if fresh := mustKey(t, nc, "TRYLOCK", "after", "TTL", "10000"); fenceOf(t, fresh) <= maxFence {
		t.Errorf("fence after failover %d, want > %d", fenceOf(t, fresh), maxFence)
	}
}

// TestCluster_MinorityGrantsNothing: with both followers stopped (SIGSTOP)
// the leader is a minority of one. LOCKs sent to it then — one on a new
// connection, one on a connection whose session is already in the log —
// never return a key: they get an error (the entry cannot commit; the
// leader steps down) or their connection is closed. Once the followers
// resume, a leader is elected and grants again. The new connection's LOCK
// left nothing (its session never committed, so nothing was acquired). The
// other one's acquisition was appended to the minority leader's log and
// may have reached the stopped followers' sockets: a later leader may then
// commit it, as an orphan nobody has the key of (client-id -1) that ends
// at its own TTL — the outcome of any write whose reply was an error
// during a leader change is unknown, as in every Raft store.
func TestCluster_MinorityGrantsNothing(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(c.nodes, 15*time.Second)
	opened := leader.srv.client(t)
	warm := mustKey(t, opened, "TRYLOCK", "warm-up")
	if err := doBounded(opened, "UNLOCK", "warm-up", warm).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := leader.srv.client(t) // a PING only: no session in the log
	followers := c.others(leader)
	for _, f := range followers {
		f.signal(syscall.SIGSTOP)
	}
	t.Cleanup(func() { // runs before the cluster's stop, and on failure
		for _, f := range followers {
			f.signal(syscall.SIGCONT)
		}
	})

	type outcome struct {
		name  string
		reply any
		err   error
		took  time.Duration
	}
	results := make(chan outcome, 2)
	start := time.Now()
	for name, cl := range map[string]*redis.Client{"minority-opened": opened, "minority-fresh": fresh} {
		go func() {
			reply, err := doBounded(cl, "LOCK", name, "TTL", "3000").Result()
			results <- outcome{name, reply, err, time.Since(start)}
		}()
	}
	for range 2 {
		o := <-results // doBounded ends each within 10 s
		switch {
		case o.err == nil:
			t.Errorf("LOCK %s on a leader cut off from its followers granted %v after %v", o.name, o.reply, o.took)
		case errors.Is(o.err, context.DeadlineExceeded):
			t.Errorf("LOCK %s on a leader cut off from its followers did not answer within 10s", o.name)
		default:
			t.Logf("LOCK %s on the minority: %v after %v", o.name, o.err, o.took)
		}
	}

	for _, f := range followers {
		f.signal(syscall.SIGCONT)
	}
	// The resumed majority may elect again right after the old leader
	// is seen leading: read from a leader that serves lock commands.
	var nc *redis.Client
	eventually(t, 15*time.Second, func() bool {
		nl, took := c.waitLeader(c.nodes, 15*time.Second)
		nc = nl.srv.client(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := readLocks(ctx, nc, "MATCH", "minority-*"); err != nil {
			t.Logf("%s leads (within %v) but does not serve yet: %v", nl.id, took, err)
			return false
		}
		t.Logf("after the followers resumed, %s leads and serves (within %v)", nl.id, took)
		return true
	}, "no leader serves lock commands after the followers resumed")
	if l, ok := lockOf(t, nc, "minority-fresh"); ok {
		t.Errorf("the refused LOCK on a new connection left %+v", l)
	}
	if l, ok := lockOf(t, nc, "minority-opened"); ok {
		if len(l.Holders) != 1 || l.Holders[0].ClientID != -1 || l.Holders[0].TTL > 3000 || len(l.Waiters) != 0 {
			t.Errorf("the refused LOCK left %+v; want nothing, or an orphan ending at its TTL", l)
		}
		t.Logf("the refused LOCK was committed by a later leader, as an orphan: %+v", l.Holders)
		eventually(t, 6*time.Second, func() bool {
			_, ok := lockOf(t, nc, "minority-opened")
			return !ok
		}, "the orphan of the refused LOCK outlived its TTL")
	}
	key := mustKey(t, nc, "TRYLOCK", "minority-opened", "TTL", "10000")
	if err := doBounded(nc, "UNLOCK", "minority-opened", key).Err(); err != nil {
		t.Errorf("UNLOCK after recovery: %v", err)
	}
}

// A fourth node joins a running cluster with --join, catches up and serves
// as a follower; `relock cluster status` lists it; `relock cluster remove`
// takes it out again; the locks are untouched throughout.
func TestCluster_JoinAndRemoveMember(t *testing.T) {
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(c.nodes, 10*time.Second)
	lc := leader.srv.client(t)
	key := mustKey(t, lc, "LOCK", "membership", "TTL", 60000, "DETACH")

	addrs := freeAddrs(t, 2)
	n4 := &clusterNode{id: "n4", addr: addrs[0], raftAddr: addrs[1]}
	n4.args = []string{"--listen", n4.addr, "--advertise", n4.addr, "--node-id", "n4",
		"--raft-listen", n4.raftAddr, "--raft-dir", filepath.Join(t.TempDir(), "n4"), "--join", c.nodes[0].addr}
	srv, err := launchServer(t, nil, n4.args...)
	if err != nil {
		t.Fatal(err)
	}
	n4.srv = srv
	c.nodes = append(c.nodes, n4) // stopped with the others

	members := strings.Join([]string{c.nodes[0].addr, c.nodes[1].addr}, ",")
	var status string
	eventually(t, 15*time.Second, func() bool {
		out, _, code := relockTool(t, "cluster", "status", "--addr", members)
		status = out
		return code == 0 && strings.Contains(out, "n4") && strings.Contains(out, n4.raftAddr)
	}, "relock cluster status never listed n4: %q", status)
	// It catches up and redirects like any follower.
	eventually(t, 15*time.Second, func() bool {
		info, err := n4.info("locks", "replication")
		return err == nil && info["holds"] == "1" && info["raft_leader_addr"] == leader.addr
	}, "n4 did not catch up")
	if err := doBounded(n4.srv.client(t), "CHECK", "membership", key).Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED 0 "+leader.addr) {
		t.Fatalf("CHECK on the joined follower = %v, want MOVED to %s", err, leader.addr)
	}

	out, errOut, code := relockTool(t, "--addr", members, "cluster", "remove", "n4")
	if code != 0 || !strings.Contains(out, "removed n4") {
		t.Fatalf("relock cluster remove = %d, %q, %q", code, out, errOut)
	}
	out, _, _ = relockTool(t, "cluster", "status", "--addr", members)
	if strings.Contains(out, "n4") {
		t.Fatalf("n4 still a member after remove:\n%s", out)
	}
	if err := doBounded(lc, "CHECK", "membership", key).Err(); err != nil {
		t.Fatalf("CHECK after the membership changes: %v", err)
	}
}

// TestCluster_APausedLeaderAnswersNoStaleLocks: a leader is paused
// (SIGSTOP: a GC pause, a stalled VM) long enough for the others to elect
// a leader, which grants a lock. A LOCKS that reached the old leader while
// it was paused is answered when it resumes, before it has noticed that it
// no longer leads: it must not answer from its stale table (no such lock)
// but confirm its leadership first — an error or a closed connection.
func TestCluster_APausedLeaderAnswersNoStaleLocks(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(c.nodes, 15*time.Second)
	conn, err := net.DialTimeout("tcp", leader.addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING: %q, %v", line, err)
	}
	leader.signal(syscall.SIGSTOP)
	t.Cleanup(func() { leader.signal(syscall.SIGCONT) })
	nl, _ := c.waitLeader(c.others(leader), 15*time.Second)
	mustKey(t, nl.srv.client(t), "TRYLOCK", "fresh", "DETACH", "TTL", "60000")
	if _, err := conn.Write([]byte("LOCKS MATCH fresh\r\n")); err != nil {
		t.Fatal(err)
	}
	leader.signal(syscall.SIGCONT)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := r.ReadString('\n')
	switch {
	case err != nil:
		t.Logf("LOCKS on the resumed old leader: connection closed (%v)", err)
	case strings.HasPrefix(line, "-"):
		t.Logf("LOCKS on the resumed old leader: %q", line)
	default:
		t.Errorf("LOCKS on the resumed old leader answered from its table (%q...): a stale read, 'fresh' is held on the new leader", line)
	}
}

// TestCluster_ClientUnblockEndsAWaitOnTheLeader: in a cluster, ending a
// wait is a Raft proposal; CLIENT UNBLOCK makes it as a WAIT running out
// does, and the connection keeps what it holds.
func TestCluster_ClientUnblockEndsAWaitOnTheLeader(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(c.nodes, 20*time.Second)
	lc := leader.srv.client(t)
	ctx := ctxFor(t, 20*time.Second)
	mustLock(t, lc, "LOCK", "unblock:x")
	w := leader.srv.client(t) // a connection of its own
	ky, err := w.Do(ctx, "LOCK", "unblock:y").Text()
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.ClientID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- w.Do(ctx, "LOCK", "unblock:x").Err() }()
	eventually(t, 10*time.Second, func() bool { return infoField(t, lc, "waiters") == "1" }, "the LOCK queued")
	if n, err := lc.Do(ctx, "CLIENT", "UNBLOCK", id).Int(); err != nil || n != 1 {
		t.Fatalf("CLIENT UNBLOCK = %d, %v", n, err)
	}
	if err := <-got; err != redis.Nil {
		t.Fatalf("the unblocked LOCK: %v; want a null", err)
	}
	if infoField(t, lc, "waiters") != "0" {
		t.Fatal("the unblocked LOCK is still queued")
	}
	if err := w.Do(ctx, "CHECK", "unblock:y", ky).Err(); err != nil {
		t.Fatalf("CHECK of the connection's hold after the unblock: %v", err)
	}
}
