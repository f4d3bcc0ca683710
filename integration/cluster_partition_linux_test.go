//go:build linux

package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/relock/relock/clientlib"
)

// A real network partition: each node in a network namespace of its own,
// with two links — one to the clients' network, one to the Raft network —
// so that a test can cut a node off from its peers while its clients still
// reach it (what SIGSTOP of the followers, in TestCluster_MinorityGrantsNothing,
// cannot show: there the followers are frozen, not cut off, and the leader's
// connections to them stay open).
//
// The test process itself runs in a namespace of its own too (`unshare
// --net`), where the two networks are bridges: nothing is added to the
// machine's own network, and everything goes when the child exits. It
// needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), ip(8), and unshare(1),
// nsenter(1) and setpriv(1) of util-linux, and skips without them.

// netnsEnv is set in the child test process that runs in a network
// namespace of its own, to its parent's namespace (/proc/self/ns/net).
const netnsEnv = "RELOCK_IT_NETNS"

// TestCluster_PartitionedLeaderGrantsNothingAndTheMajorityGoesOn runs the
// partition tests in a child process in a network namespace of its own.
func TestCluster_PartitionedLeaderGrantsNothingAndTheMajorityGoesOn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	unshare := needTool(t, "unshare")
	setpriv := needTool(t, "setpriv")
	needTool(t, "nsenter")
	needTool(t, "ip")
	if out, err := exec.Command(unshare, "--net", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace here: %v %s", err, out)
	}
	t.Parallel()
	names := []string{"TestNetns_LeaderCutOffFromItsPeers", "TestNetns_ClientlibFollowsTheMajority",
		"TestNetns_ChaosPartitionsKeepHistoryLinearizable"}
	parentNet, err := netnsOf("self")
	if err != nil {
		t.Skipf("cannot tell this process's network namespace: %v", err)
	}
	// The child, the namespaces' holders and the nodes die with their
	// parent (a timeout's SIGKILL included): nothing outlives the test.
	out := runChildTestsIn(t, []string{setpriv, "--pdeathsig", "KILL", "--", unshare, "--net", "--"}, netnsEnv+"="+parentNet, 15*time.Minute, names)
	for _, name := range names {
		if !strings.Contains(out, "--- PASS: "+name+" ") {
			t.Fatalf("%s did not pass in its network namespace:\n%s", name, out)
		}
	}
	if testing.Verbose() {
		t.Logf("child:\n%s", out)
	}
}

// netnsOf names the network namespace of process pid ("self": this one).
func netnsOf(pid string) (string, error) { return os.Readlink("/proc/" + pid + "/ns/net") }

// testNet is the test's network, in the child's own namespace: a bridge
// for the clients' network (10.99.1.0/24, the test process at .254) and
// one for the Raft network (10.99.2.0/24); node i is 10.99.1.i and
// 10.99.2.i in a namespace of its own.
type testNet struct {
	t *testing.T
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if os.Getenv(netnsEnv) == "" {
		t.Skip("runs in a network namespace of its own (TestCluster_PartitionedLeaderGrantsNothingAndTheMajorityGoesOn)")
	}
	// Never build bridges and addresses in the parent's network (the
	// machine's): only in the namespace it made for this process (its
	// parent, the test process that set netnsEnv, is in the other).
	self, err := netnsOf("self")
	parent, perr := netnsOf(strconv.Itoa(os.Getppid()))
	if err != nil || perr != nil || self == parent || self == os.Getenv(netnsEnv) {
		t.Fatalf("%s=%s, and this process is in %s, its parent in %s (%v, %v): not in a network namespace of its own",
			netnsEnv, os.Getenv(netnsEnv), self, parent, err, perr)
	}
	n := &testNet{t: t}
	n.ip("", "link set lo up",
		"link add rl-cli type bridge", "link set rl-cli up", "addr add 10.99.1.254/24 dev rl-cli",
		"link add rl-raft type bridge", "link set rl-raft up")
	t.Cleanup(func() { n.ip("", "link del rl-cli", "link del rl-raft") })
	return n
}

// ip runs ip(8) commands in one batch, in the namespace of process pid
// (the test's own if pid is "").
func (n *testNet) ip(pid string, cmds ...string) {
	n.t.Helper()
	args := []string{"ip", "-batch", "-"}
	if pid != "" {
		args = append([]string{"nsenter", "-t", pid, "-n"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("%v %q: %v\n%s", args, cmds, err, out)
	}
}

// host makes node i's namespace, held by a process that lives until the
// test ends, links it to both networks, and returns the command that runs
// a program in it.
func (n *testNet) host(i int) []string {
	n.t.Helper()
	holder := exec.Command("unshare", "--net", "sleep", "600")
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	// Deleting one end of a veth pair deletes both; gone at once, not when
	// the kernel gets round to the holder's dead namespace.
	n.t.Cleanup(func() { n.ip("", fmt.Sprintf("link del rc%d", i), fmt.Sprintf("link del rr%d", i)) })
	pid := fmt.Sprint(holder.Process.Pid)
	// The holder is in its own namespace once unshare has exec'd sleep.
	self, err := netnsOf("self")
	if err != nil {
		n.t.Fatal(err)
	}
	eventually(n.t, 5*time.Second, func() bool {
		ns, err := netnsOf(pid)
		return err == nil && ns != self
	}, "the namespace holder of node %d did not unshare", i)
	n.ip("",
		fmt.Sprintf("link add rc%d type veth peer name c0", i), fmt.Sprintf("link set c0 netns %s", pid),
		fmt.Sprintf("link set rc%d master rl-cli up", i),
		fmt.Sprintf("link add rr%d type veth peer name r0", i), fmt.Sprintf("link set r0 netns %s", pid),
		fmt.Sprintf("link set rr%d master rl-raft up", i))
	n.ip(pid, "link set lo up",
		fmt.Sprintf("addr add 10.99.1.%d/24 dev c0", i), "link set c0 up",
		fmt.Sprintf("addr add 10.99.2.%d/24 dev r0", i), "link set r0 up")
	return []string{"nsenter", "-t", pid, "-n", "--", "setpriv", "--pdeathsig", "KILL", "--"}
}

// raftLink sets node i's link to the Raft network up or down.
func (n *testNet) raftLink(i int, up bool) {
	n.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	n.ip("", fmt.Sprintf("link set rr%d %s", i, state))
}

// startNetnsCluster starts a 3-node cluster, node i in a namespace of its
// own at 10.99.1.i:6380 (clients) and 10.99.2.i:7380 (Raft), with extra
// server flags.
func startNetnsCluster(t *testing.T, extra ...string) (*testNet, *testCluster) {
	t.Helper()
	net := newTestNet(t)
	c := &testCluster{t: t}
	for i := 1; i <= 3; i++ {
		c.nodes = append(c.nodes, &clusterNode{id: fmt.Sprintf("n%d", i),
			addr: fmt.Sprintf("10.99.1.%d:6380", i), raftAddr: fmt.Sprintf("10.99.2.%d:7380", i), wrap: net.host(i)})
	}
	// Both networks exist only in this test's namespaces.
	if err := c.launch(func(*clusterNode) []string {
		return append([]string{"--insecure-no-auth", "--raft-insecure"}, extra...)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll) // before the namespaces go (cleanups run last first)
	return net, c
}

// nodeIndex is i of node "ni".
func nodeIndex(nd *clusterNode) int {
	i := 0
	fmt.Sscanf(nd.id, "n%d", &i)
	return i
}

// TestNetns_LeaderCutOffFromItsPeers: the leader loses its Raft link but
// not its clients. It grants nothing (a LOCK sent to it gets an error) and
// steps down; the two others elect a leader, which keeps the hold the old
// leader had acknowledged (an orphan nobody else can take, with its fence)
// and grants new locks with higher fences. When the link comes back, the
// old leader follows the new one (pre-vote: it does not depose it), and
// the hold is adopted by its key and released.
func TestNetns_LeaderCutOffFromItsPeers(t *testing.T) {
	net, c := startNetnsCluster(t)
	leader, _ := c.waitLeader(c.nodes, 20*time.Second)
	li := nodeIndex(leader)

	held := leader.srv.client(t)
	key := mustKey(t, held, "LOCK", "held", "TTL", "60000")
	l, ok := lockOf(t, held, "held")
	if !ok || len(l.Holders) != 1 {
		t.Fatalf("LOCKS after the grant: %+v", l)
	}
	fence := l.Holders[0].Fence
	probe := leader.srv.client(t)
	if err := doBounded(probe, "PING").Err(); err != nil {
		t.Fatal(err)
	}

	net.raftLink(li, false)
	cut := time.Now()
	t.Logf("cut %s (the leader) off from the Raft network", leader.id)

	// The cut-off leader grants nothing: an error (it cannot commit, then
	// it is no longer the leader), never a key, within the bound.
	reply, err := doBounded(probe, "LOCK", "cut-off", "TTL", "3000").Result()
	switch {
	case err == nil:
		t.Errorf("LOCK on the cut-off leader granted %v after %v", reply, time.Since(cut))
	case errors.Is(err, redis.Nil):
		t.Errorf("LOCK on the cut-off leader answered nil after %v", time.Since(cut))
	default:
		t.Logf("LOCK on the cut-off leader: %v after %v", err, time.Since(cut))
	}
	// It steps down (lease timeout) and redirects lock commands.
	eventually(t, 10*time.Second, func() bool {
		m, err := leader.info("replication")
		return err == nil && m["role"] != "master"
	}, "the cut-off leader %s still says it leads", leader.id)
	t.Logf("%s stepped down %v after the cut", leader.id, time.Since(cut))
	if err := doBounded(leader.srv.client(t), "TRYLOCK", "cut-off-2").Err(); err == nil || errors.Is(err, redis.Nil) {
		t.Errorf("TRYLOCK on the cut-off node after it stepped down: %v; want an error (-MOVED or -CLUSTERDOWN)", err)
	}

	// The majority goes on.
	majority := c.others(leader)
	nl, took := c.waitLeader(majority, 20*time.Second)
	t.Logf("%s leads the majority %v after the cut (found within %v)", nl.id, time.Since(cut), took)
	nc := nl.srv.client(t)
	var got any
	eventually(t, 10*time.Second, func() bool {
		got, err = doBounded(nc, "TRYLOCK", "held").Result()
		return !isRedirect(err)
	}, "the majority's leader %s does not serve lock commands", nl.id)
	if !errors.Is(err, redis.Nil) {
		t.Errorf("TRYLOCK of the hold the old leader acknowledged, on the majority: %v, %v; want nil (it is held)", got, err)
	}
	l, ok = lockOf(t, nc, "held")
	if !ok || len(l.Holders) != 1 || l.Holders[0].Fence != fence || l.Holders[0].ClientID != -1 {
		t.Errorf("the acknowledged hold on the majority: %+v; want the orphan with fence %d", l, fence)
	}
	mkey := mustKey(t, nc, "LOCK", "majority", "TTL", "60000")
	ml, _ := lockOf(t, nc, "majority")
	if len(ml.Holders) != 1 || ml.Holders[0].Fence <= fence {
		t.Errorf("a grant on the majority has fence %+v; want one above %d", ml.Holders, fence)
	}

	// Cut off, the old leader did not raise its term (pre-vote: it asks
	// before it stands), so it cannot depose the majority's leader when it
	// comes back; then it follows.
	cutTerm, majTerm := leader.mustInfo(t, "replication")["raft_term"], nl.mustInfo(t, "replication")["raft_term"]
	ct, err1 := strconv.ParseUint(cutTerm, 10, 64)
	mt, err2 := strconv.ParseUint(majTerm, 10, 64)
	if err1 != nil || err2 != nil || ct > mt {
		t.Errorf("the cut-off node's term is %s, the majority leader's %s: it stood for election while cut off", cutTerm, majTerm)
	}
	net.raftLink(li, true)
	back, _ := c.waitLeader(c.nodes, 20*time.Second)
	if back != nl {
		// Not the returning node's doing (its term was not above the
		// majority's): a loaded machine may call an election by itself.
		t.Logf("after the link came back %s leads (before: %s)", back.id, nl.id)
	}
	nc = back.srv.client(t)
	// The refused LOCK left nothing, or an orphan that ends at its TTL (an
	// entry the old leader appended may still have reached the majority).
	if l, ok := lockOf(t, nc, "cut-off"); ok {
		if len(l.Holders) != 1 || l.Holders[0].ClientID != -1 || l.Holders[0].TTL > 3000 {
			t.Errorf("the refused LOCK left %+v; want nothing, or an orphan ending at its TTL", l)
		}
	}
	// The acknowledged hold is adopted by its key from a new connection, and
	// released; the next grant's fence is above every earlier one.
	if err := doBounded(nc, "RENEW", "held", key).Err(); err != nil {
		t.Fatalf("RENEW (adopt) of the hold the old leader acknowledged: %v", err)
	}
	if err := doBounded(nc, "UNLOCK", "held", key).Err(); err != nil {
		t.Fatalf("UNLOCK of the adopted hold: %v", err)
	}
	mustKey(t, nc, "TRYLOCK", "held", "TTL", "60000")
	l, _ = lockOf(t, nc, "held")
	if len(l.Holders) != 1 || l.Holders[0].Fence <= ml.Holders[0].Fence {
		t.Errorf("the next grant of held has fence %+v; want one above %d", l.Holders, ml.Holders[0].Fence)
	}
	if err := doBounded(nc, "UNLOCK", "majority", mkey).Err(); err != nil {
		t.Errorf("UNLOCK majority: %v", err)
	}
}

// TestNetns_ClientlibFollowsTheMajority: clientlib clients that know all
// three members, one holding a lock and one waiting for it, both through
// the leader; the leader's Raft link is cut, while the clients still reach
// it (it answers -CLUSTERDOWN once it has stepped down: it knows no leader).
// The holder's lock is re-attached on the majority's leader, bound to a
// connection again with the same fence, and never reported lost; the
// waiter queues again there and is granted only after the holder's Unlock,
// with a higher fence.
func TestNetns_ClientlibFollowsTheMajority(t *testing.T) {
	net, c := startNetnsCluster(t)
	leader, _ := c.waitLeader(c.nodes, 20*time.Second)
	var addrs []string
	for _, nd := range c.nodes {
		addrs = append(addrs, nd.addr)
	}
	ctx := ctxFor(t, 90*time.Second)
	const name = "job"
	hc := newLibClient(t, addrs...)
	held, err := hc.Lock(ctx, name, clientlib.TTL(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	admin := newLibClient(t, addrs...)
	wc := newLibClient(t, addrs...)
	waited := libLockAsync(ctx, wc, name, clientlib.TTL(60*time.Second))
	libLockUntil(t, admin, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Waiters) == 1
	}, "the waiter queued")

	net.raftLink(nodeIndex(leader), false)
	cut := time.Now()
	t.Logf("cut %s (the leader) off from the Raft network", leader.id)
	nl, _ := c.waitLeader(c.others(leader), 20*time.Second)
	t.Logf("%s leads the majority %v after the cut", nl.id, time.Since(cut))

	info := libLockUntil(t, admin, name, 20*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Holders) == 1 && li.Holders[0].ClientID > 0 && len(li.Waiters) == 1
	}, "the hold re-attached and the waiter queued again on the majority's leader")
	t.Logf("re-attached and re-queued %v after the cut: %+v", time.Since(cut), info)
	if info.Holders[0].Fence != held.Fence() {
		t.Errorf("the re-attached hold has fence %d; want %d, the one granted", info.Holders[0].Fence, held.Fence())
	}
	select {
	case <-held.Lost():
		t.Fatalf("the held lock was reported lost: %v", held.Err())
	case r := <-waited:
		t.Fatalf("the waiter returned while the lock was held: %+v", r)
	default:
	}
	if _, err := hc.Check(ctx, name, held.Key()); err != nil {
		t.Fatalf("CHECK of the re-attached hold: %v", err)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of the re-attached hold: %v", err)
	}
	var r libLockResult
	select {
	case r = <-waited:
	case <-ctx.Done():
		t.Fatal("the waiter was not granted after the holder's Unlock")
	}
	if r.err != nil {
		t.Fatalf("the waiter's Lock: %v", r.err)
	}
	if r.l.Fence() <= held.Fence() {
		t.Errorf("the waiter's fence %d; want above the holder's %d", r.l.Fence(), held.Fence())
	}
	soleHolder(t, admin, r.l)
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	net.raftLink(nodeIndex(leader), true)
	c.waitLeader(c.nodes, 20*time.Second)
}

// clusterChaosCutsEnv sets the number of leader cuts of the partition
// campaign (default 3 in `make test`; `make chaos` runs 20).
const clusterChaosCutsEnv = "RELOCK_CLUSTER_CHAOS_CUTS"

// TestNetns_ChaosPartitionsKeepHistoryLinearizable: the leader-kill
// campaign of cluster_chaos_test.go, with the leader's Raft link cut
// instead of its process killed. The cut-off leader lives on, its clients
// still reach it, and it answers them (errors, -TRYAGAIN, -MOVED,
// -CLUSTERDOWN, or LOCKS from its table while its lease lasts) while the
// majority elects a leader and takes over; the link comes back before or
// after that. The history is linearizable for chaos_model_test.go's model,
// fences are unique and increase in real time, and nothing released comes
// back.
func TestNetns_ChaosPartitionsKeepHistoryLinearizable(t *testing.T) {
	cuts, seed := chaosSettings(t, clusterChaosCutsEnv, 3)
	net, c := startNetnsCluster(t, "--restore-grace", clusterChaosGrace.String())
	t.Logf("seed %d (%s to repeat), %d leader cuts", seed, chaosSeedEnv, cuts)
	runLeaderFaults(t, c, cuts, seed, leaderFault{
		what: "cut off",
		strike: func(cp *clusterCampaign, i int) {
			net.raftLink(i+1, false)
			cp.cut()
		},
		healable: func(cp *clusterCampaign, i int, rng *rand.Rand) {
			// Not before it stepped down: healed within its lease, it
			// would lead on, and there would be no takeover to wait for.
			nd := cp.c.nodes[i]
			eventually(t, 10*time.Second, func() bool {
				m, err := nd.info("replication")
				return err == nil && m["role"] != "master"
			}, "the cut-off leader %s still says it leads", nd.id)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		},
		heal: func(cp *clusterCampaign, i int) { net.raftLink(i+1, true) },
	})
}

// isRedirect reports whether err is a cluster redirect (-MOVED,
// -CLUSTERDOWN, -TRYAGAIN): the node does not serve lock commands now.
func isRedirect(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "MOVED") || strings.HasPrefix(msg, "CLUSTERDOWN") || strings.HasPrefix(msg, "TRYAGAIN")
}
