package clientlib_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// testCluster is an in-process relock cluster: n Raft nodes on in-memory
// transports, each with a relock server listening on a loopback port.
type testCluster struct {
	t     *testing.T
	nodes []*clusterNode
}

type clusterNode struct {
	trans *raft.InmemTransport
	node  *replica.Node
	srv   *testServer
	down  bool
}

// startCluster starts n nodes and waits (bounded) until they agree on a
// leader. Every node is stopped when the test ends.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	t.Cleanup(c.stopAll)
	var servers []raft.Server
	for i := 0; i < n; i++ {
		addr, tr := raft.NewInmemTransport("")
		c.nodes = append(c.nodes, &clusterNode{trans: tr})
		servers = append(servers, raft.Server{ID: raft.ServerID(addr), Address: addr})
	}
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	for i, cn := range c.nodes {
		// Lock events come from each member's FSM table, as relock
		// server wires them (cmd/relock/cluster.go).
		hub := commands.NewHub()
		node, err := replica.NewNode(replica.NodeConfig{
			ID: servers[i].ID, Transport: cn.trans,
			Logs: raft.NewInmemStore(), Stable: raft.NewInmemStore(), Snapshots: raft.NewInmemSnapshotStore(),
			Table:            locktable.Config{Shards: 4, FenceStart: 1, Notify: hub.Notify, Watched: hub.Watched},
			HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		cn.node = node
		// The server must listen before its address can be advertised, and
		// the address must be set before the node can lead: the cluster is
		// bootstrapped only once every server listens.
		cl := &commands.Cluster{Node: node, Hub: hub}
		srv, err := runServer(commands.Config{Cluster: cl, Shards: 4, RestoreGrace: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		cn.srv = srv
		cl.Advertise = srv.Addr
	}
	for _, cn := range c.nodes {
		if err := cn.node.Raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatal(err)
		}
	}
	c.leader()
	return c
}

// leader waits until a live node leads and every live node knows its
// client address (so that followers answer MOVED, not CLUSTERDOWN), and
// returns its index.
func (c *testCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if l := c.agreedLeader(); l >= 0 {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("the cluster agreed on no leader within 10s")
	return -1
}

func (c *testCluster) agreedLeader() int {
	for i, cn := range c.nodes {
		if cn.down || cn.node.Raft.State() != raft.Leader {
			continue
		}
		for _, o := range c.nodes {
			if o.down {
				continue
			}
			if id, addr := o.node.FSM.Leader(); id != string(cn.node.ID) || addr != cn.srv.Addr {
				return -1
			}
		}
		return i
	}
	return -1
}

// addrs returns the client addresses of the nodes, those of the followers
// of leader first.
func (c *testCluster) addrs(leader int) []string {
	var out []string
	for i, cn := range c.nodes {
		if i != leader {
			out = append(out, cn.srv.Addr)
		}
	}
	return append(out, c.nodes[leader].srv.Addr)
}

// crashAt crashes the node whose client address is addr.
func (c *testCluster) crashAt(addr string) {
	c.t.Helper()
	for i, cn := range c.nodes {
		if cn.srv.Addr == addr {
			c.crash(i)
			return
		}
	}
	c.t.Fatalf("no node at %s", addr)
}

// crash stops node i as a crash would: it drops out of the Raft group
// first (no goodbye to its peers), then its server closes the client
// connections.
func (c *testCluster) crash(i int) {
	c.t.Helper()
	cn := c.nodes[i]
	cn.down = true
	for _, o := range c.nodes {
		if o != cn {
			o.trans.Disconnect(cn.trans.LocalAddr())
		}
	}
	if err := cn.node.Shutdown(); err != nil {
		c.t.Fatal(err)
	}
	if err := cn.srv.stop(); err != nil {
		c.t.Fatal(err)
	}
}

// stop stops node i as `relock server` does on SIGTERM: its server first
// (which closes the client connections, not a disconnect in the cluster's
// eyes), then its Raft node.
func (c *testCluster) stop(i int) {
	c.t.Helper()
	cn := c.nodes[i]
	cn.down = true
	if err := cn.srv.stop(); err != nil {
		c.t.Fatal(err)
	}
	for _, o := range c.nodes {
		if o != cn {
			o.trans.Disconnect(cn.trans.LocalAddr())
		}
	}
	if err := cn.node.Shutdown(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testCluster) stopAll() {
	for _, cn := range c.nodes {
		if cn.node != nil && !cn.down {
			cn.node.Shutdown()
		}
		if cn.srv != nil {
			if err := cn.srv.stop(); err != nil {
				c.t.Error(err)
			}
		}
	}
}

// newClusterClient returns a Client of addrs, closed when the test ends.
func newClusterClient(t *testing.T, addrs []string, mods ...func(*clientlib.Options)) *clientlib.Client {
	t.Helper()
	opt := clientlib.Options{Addrs: addrs, DialTimeout: time.Second, ReadTimeout: time.Second}
	for _, m := range mods {
		m(&opt)
	}
	c, err := clientlib.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// boundHolder waits until name has one hold, with fence, bound to a
// connection (not orphaned), as the leader sees it through c.
func boundHolder(t *testing.T, c *clientlib.Client, name string, fence uint64) {
	t.Helper()
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, err := c.Inspect(testCtx(t, 5*time.Second), name)
		switch {
		case err != nil:
			last = err.Error()
		case info == nil || len(info.Holders) != 1:
			last = fmt.Sprintf("%+v", info)
		default:
			h := info.Holders[0]
			if h.Fence == fence && h.ClientID > 0 {
				return
			}
			last = fmt.Sprintf("%+v", h)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s not bound to a connection with fence %d within 10s (last: %s)", name, fence, last)
}

func TestCluster_LockFollowsMovedFromFollower(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	addrs := cl.addrs(leader)
	c := newClusterClient(t, addrs)
	ctx := testCtx(t, 20*time.Second)

	// The premise: the first address is a follower, which sends lock
	// commands to the leader.
	err := c.Redis().Do(ctx, "LOCK", "moved").Err()
	if err == nil || !strings.HasPrefix(err.Error(), "MOVED 0 ") || !slices.Contains(addrs, strings.TrimPrefix(err.Error(), "MOVED 0 ")) {
		t.Fatalf("LOCK on the first address = %v, want MOVED 0 %s", err, cl.nodes[leader].srv.Addr)
	}
	l, err := c.Lock(ctx, "moved", clientlib.TTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryLock(ctx, "moved"); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("TryLock of a held lock = %v, want ErrWaitTimeout", err)
	}
	// Key-based calls and LOCKS go to the leader too.
	if left, err := c.Check(ctx, "moved", l.Key()); err != nil || left <= 0 {
		t.Fatalf("Check = %v, %v", left, err)
	}
	boundHolder(t, c, "moved", l.Fence())
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := c.Inspect(ctx, "moved"); err != nil || info != nil {
		t.Fatalf("after Unlock: %+v, %v", info, err)
	}
}

func TestCluster_HeldLockSurvivesLeaderFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(cl *testCluster, i int)
		// watch: observe the locks for longer than their TTL afterwards.
		watch bool
	}{
		{"crash", (*testCluster).crash, true},
		{"graceful stop", (*testCluster).stop, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := startCluster(t, 3)
			old := cl.leader()
			addrs := cl.addrs(old)
			c := newClusterClient(t, addrs)
			ctx := testCtx(t, 30*time.Second)

			const ttl = 2 * time.Second
			withTTL, err := c.Lock(ctx, "failover-ttl", clientlib.TTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			noTTL, err := c.Lock(ctx, "failover-nottl")
			if err != nil {
				t.Fatal(err)
			}
			downAt := time.Now()
			tc.down(cl, old)

			// A Lock call during the election finds the new leader by itself.
			other := newClusterClient(t, addrs)
			fresh, err := other.Lock(ctx, "during-election", clientlib.TTL(ttl))
			if err != nil {
				t.Fatalf("Lock during the election: %v", err)
			}
			if fresh.Fence() <= withTTL.Fence() {
				t.Fatalf("fence after failover %d, want > %d", fresh.Fence(), withTTL.Fence())
			}
			if nl := cl.leader(); nl == old {
				t.Fatal("the stopped node still leads")
			}
			// The keeper re-attached both holds to connections of the new
			// leader.
			boundHolder(t, c, "failover-ttl", withTTL.Fence())
			boundHolder(t, c, "failover-nottl", noTTL.Fence())
			t.Logf("re-attached within %v", time.Since(downAt))
			if _, err := other.TryLock(ctx, "failover-ttl"); !errors.Is(err, clientlib.ErrWaitTimeout) {
				t.Fatalf("TryLock of the held lock on the new leader = %v, want ErrWaitTimeout", err)
			}
			if tc.watch {
				// Longer than the TTL: the keeper renews on the new leader.
				select {
				case <-withTTL.Lost():
				case <-noTTL.Lost():
				case <-time.After(ttl + ttl/2):
				}
			}
			for _, l := range []*clientlib.Lock{withTTL, noTTL} {
				if err := l.Err(); err != nil {
					t.Fatalf("lost after failover: %v", err)
				}
			}
			if left, err := withTTL.Check(ctx); err != nil || left < ttl/3 {
				t.Fatalf("Check = %v, %v; want the TTL renewed", left, err)
			}
			for _, l := range []*clientlib.Lock{withTTL, noTTL, fresh} {
				if err := l.Unlock(ctx); err != nil {
					t.Fatalf("Unlock %s: %v", l.Name(), err)
				}
			}
			if info, err := c.Inspect(ctx, "failover-ttl"); err != nil || info != nil {
				t.Fatalf("after Unlock: %+v, %v", info, err)
			}
		})
	}
}

func TestCluster_LockLostWhenNoLeaderBeforeDeadline(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	c := newClusterClient(t, cl.addrs(leader), func(o *clientlib.Options) {
		o.FailoverTimeout = 500 * time.Millisecond
	})
	ctx := testCtx(t, 20*time.Second)
	const ttl = time.Second
	withTTL, err := c.Lock(ctx, "outage-ttl", clientlib.TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	noTTL, err := c.Lock(ctx, "outage-nottl")
	if err != nil {
		t.Fatal(err)
	}
	// The leader and a follower go: one node of three elects nobody.
	cl.crash(leader)
	cl.crash((leader + 1) % 3)
	for _, l := range []*clientlib.Lock{withTTL, noTTL} {
		took := lostWithin(t, l, 5*time.Second)
		t.Logf("%s: loss reported %v after the outage began: %v", l.Name(), took, l.Err())
		if !errors.Is(l.Err(), clientlib.ErrLost) || !errors.Is(l.Err(), clientlib.ErrConnClosed) {
			t.Fatalf("%s: Err = %v, want ErrLost and ErrConnClosed", l.Name(), l.Err())
		}
	}
	// Lock waits for a leader no longer than FailoverTimeout.
	start := time.Now()
	l, err := c.Lock(ctx, "no-leader")
	if l != nil || err == nil {
		t.Fatalf("Lock without a leader = %v, %v; want an error", l, err)
	}
	t.Logf("Lock without a leader: %v", err)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Lock without a leader failed after %v", d)
	}
}

func TestCluster_DroppedConnectionOnSameLeaderIsStillALoss(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	c := newClusterClient(t, cl.addrs(leader))
	admin := newClusterClient(t, []string{cl.nodes[leader].srv.Addr})
	ctx := testCtx(t, 20*time.Second)
	l, err := c.Lock(ctx, "killed")
	if err != nil {
		t.Fatal(err)
	}
	info, err := admin.Inspect(ctx, "killed")
	if err != nil || info == nil || len(info.Holders) != 1 {
		t.Fatalf("inspect = %+v, %v", info, err)
	}
	// The leader stays: the server releases the hold of the killed
	// connection, and the keeper's RENEW must not bring it back.
	if err := admin.Redis().Do(ctx, "CLIENT", "KILL", "ID", info.Holders[0].ClientID).Err(); err != nil {
		t.Fatal(err)
	}
	lostWithin(t, l, 5*time.Second)
	if !errors.Is(l.Err(), clientlib.ErrNotHeld) {
		t.Fatalf("Err = %v, want ErrNotHeld", l.Err())
	}
	if info, err := admin.Inspect(ctx, "killed"); err != nil || info != nil {
		t.Fatalf("after the loss: %+v, %v; want no lock", info, err)
	}
}

// TestCluster_LossNoticedFromAFollowersEvent: the Client's loss watch
// subscribes on the first address, a follower, which publishes the
// leader's changes as its log applies them: a FORCEUNLOCK is noticed at
// once, not at the renewal 20 s away.
func TestCluster_LossNoticedFromAFollowersEvent(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	c := newClusterClient(t, cl.addrs(leader))
	admin := newClusterClient(t, []string{cl.nodes[leader].srv.Addr})
	ctx := testCtx(t, 20*time.Second)
	l, err := c.Lock(ctx, "followed", clientlib.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := admin.ForceUnlock(ctx, "followed"); err != nil || n != 1 {
		t.Fatalf("ForceUnlock = %d, %v", n, err)
	}
	took := lostWithin(t, l, 2*time.Second)
	t.Logf("loss reported %v after FORCEUNLOCK", took)
	var lost *clientlib.LostError
	if !errors.As(l.Err(), &lost) || lost.Reason != clientlib.ReasonForced {
		t.Fatalf("Err = %v; want a loss learnt from the forced event", l.Err())
	}
}

// In cluster mode a Watcher is a pub/sub connection to one member (the
// leader the Client knew of, else the first address). When that member
// goes away, the Watcher reconnects to another member (every member
// publishes the events) and goes on delivering the cluster's events.
func TestCluster_WatcherSurvivesTheLossOfItsMember(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	addrs := cl.addrs(leader) // followers first
	c := newClusterClient(t, addrs)
	ctx := testCtx(t, 30*time.Second)
	w, err := c.Watch(ctx, "inflight:*")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The Watcher is on addrs[0], a follower: it goes away (the cluster
	// keeps its leader and majority).
	cl.crashAt(addrs[0])
	l, err := c.Lock(ctx, "inflight:watched")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("Events closed (Err %v)", w.Err())
			}
			if ev.Kind == clientlib.Acquired && ev.Lock == "inflight:watched" {
				return
			}
		case <-timeout:
			t.Fatalf("no event for inflight:watched within 10s after the Watcher's member went away (Err %v): the Watcher is deaf", w.Err())
		}
	}
}

// The same for a held lock: the Client's loss watch is a pub/sub
// connection to one member too. Once that member is gone, the loss watch
// reconnects to another and checks its holds; a hold without a TTL (never
// renewed) that the leader then releases — here FORCEUNLOCK — is
// reported lost, as the package documentation promises.
func TestCluster_LossWatchSurvivesTheLossOfItsMember(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	addrs := cl.addrs(leader) // followers first
	c := newClusterClient(t, addrs)
	admin := newClusterClient(t, []string{cl.nodes[leader].srv.Addr})
	ctx := testCtx(t, 30*time.Second)
	// Without auto-renewal and without a TTL the hold's keeper never
	// talks to the server: only the loss watch can see the loss.
	l, err := c.Lock(ctx, "inflight:nottl", clientlib.NoAutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	left := []*clientlib.Client{admin, newClusterClient(t, []string{addrs[1]})}
	first := newClusterClient(t, []string{addrs[0]})
	eventually(t, 10*time.Second, func() bool { return len(subscribers(t, first)) > 0 },
		"the loss watch is not on the first member listed")
	if len(subscribers(t, left[0]))+len(subscribers(t, left[1])) > 0 {
		t.Fatal("a subscriber on a member other than the first listed")
	}
	cl.crashAt(addrs[0]) // the loss watch's member, a follower
	// The loss watch is subscribed again, on one of the members left.
	eventually(t, 10*time.Second, func() bool {
		return len(subscribers(t, left[0])) > 0 || len(subscribers(t, left[1])) > 0
	}, "the loss watch did not subscribe again on a member left")
	if n, err := admin.ForceUnlock(ctx, "inflight:nottl"); err != nil || n != 1 {
		t.Fatalf("ForceUnlock = %d, %v", n, err)
	}
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatalf("FORCEUNLOCK of a no-TTL hold not reported within 10s after the loss watch's member went away (Err %v)", l.Err())
	}
}
