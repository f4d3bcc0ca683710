package commands

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// inmemCluster starts three Raft nodes on in-memory transports and
// returns them once one leads; they shut down when the test ends. The
// timeouts (300 ms) keep leadership still on a loaded machine; the test
// moves it itself.
func inmemCluster(t *testing.T) (nodes []*replica.Node, leader int) {
	t.Helper()
	return inmemClusterWith(t, nil)
}

// inmemClusterWith is inmemCluster with a fault hook on every node
// (replica.NodeConfig.Fault; nil: none).
func inmemClusterWith(t *testing.T, fault func(replica.Op) error) (nodes []*replica.Node, leader int) {
	t.Helper()
	var trans []*raft.InmemTransport
	var servers []raft.Server
	for i := 0; i < 3; i++ {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("n%d", i)))
		trans = append(trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(addr), Address: addr})
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	for i, tr := range trans {
		n, err := replica.NewNode(replica.NodeConfig{
			ID: servers[i].ID, Transport: tr,
			Logs: raft.NewInmemStore(), Stable: raft.NewInmemStore(), Snapshots: raft.NewInmemSnapshotStore(),
			Table: locktable.Config{Shards: 1, FenceStart: 1}, Bootstrap: servers,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLeaseTimeout: 300 * time.Millisecond,
			Fault: fault,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Shutdown() })
		nodes = append(nodes, n)
	}
	return nodes, slices.Index(nodes, waitLeaderAmong(t, nodes))
}

// waitLeaderAmong waits (bounded) until one of nodes leads, and returns it.
func waitLeaderAmong(t *testing.T, nodes []*replica.Node) *replica.Node {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, n := range nodes {
			if n.IsLeader() {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clusterServer is a server on leader, with leader's takeover entry
// appended (as watchLeadership appends it on becoming leader).
func clusterServer(t *testing.T, leader *replica.Node) *Server {
	t.Helper()
	srv, err := New(Config{Listen: "127.0.0.1:0", MaxTTL: 60_000_000_000, MaxWaiters: 4, MaxHolds: 8,
		Cluster: &Cluster{Node: leader, Advertise: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	takeover(t, leader)
	return srv
}

// takeover appends leader's takeover entry: it orphans every session
// the log has.
func takeover(t *testing.T, leader *replica.Node) {
	t.Helper()
	if _, err := leader.Propose(replica.Op{Kind: replica.OpFailover, Now: time.Now().UnixNano(),
		Leader: leader.LeaderID(), LeaderAddr: "127.0.0.1:1"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// lockJob has c (a connection of h) take lock "job", and waits until
// everything the command started has ended.
func lockJob(t *testing.T, h *testOwner, c *conn) {
	t.Helper()
	h.send(c, "LOCK job")
	if got := h.await(c); len(got) != 1 || got[0] != "KEY" {
		t.Fatalf("LOCK job: %v", got)
	}
	h.waitGoroutines()
}

// reset sends RESET on c and returns its raw reply.
func reset(t *testing.T, h *testOwner, c *conn) []string {
	t.Helper()
	h.send(c, "RESET")
	h.roundsUntil("a reply to RESET", func() bool { return len(h.drv.out[c]) > 0 })
	raw := h.rawReplies(c)
	h.waitGoroutines()
	return raw
}

// forceUnlockJob frees "job" through node (the leader): the harness finds
// no hold bound to a connection when the test ends.
func forceUnlockJob(t *testing.T, node *replica.Node) {
	t.Helper()
	if _, err := node.Propose(replica.Op{Kind: replica.OpForce, Now: time.Now().UnixNano(), Name: "job"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestReset_AfterATakeoverOrphanedTheSession: when a takeover on this
// very node (leadership lost and won again) has already ended the
// connection's session in the log, RESET has nothing left to release
// and answers +RESET.
func TestReset_AfterATakeoverOrphanedTheSession(t *testing.T) {
	nodes, l := inmemCluster(t)
	leader := nodes[l]
	h := newTestOwner(t, clusterServer(t, leader), false)
	c := h.connect()
	lockJob(t, h, c)
	takeover(t, leader)
	if got := reset(t, h, c); len(got) != 1 || got[0] != "+RESET\r\n" {
		t.Fatalf("RESET of a session the takeover ended: %q, want +RESET", got)
	}
	// The orphan is the takeover's to release (after the grace).
	forceUnlockJob(t, leader)
}

// TestReset_OnAMemberThatStoppedLeadingIsRefused: a connection holds a
// lock on the leader; leadership moves; RESET on that connection cannot
// release the hold (only the leader changes lock state), so it must not
// answer +RESET, and it changes nothing. It used to answer +RESET with
// the hold still in place.
func TestReset_OnAMemberThatStoppedLeadingIsRefused(t *testing.T) {
	nodes, l := inmemCluster(t)
	leader := nodes[l]
	h := newTestOwner(t, clusterServer(t, leader), false)
	c := h.connect()
	h.send(c, "CLIENT SETNAME worker")
	if got := h.await(c); len(got) != 1 || got[0] != "+OK" {
		t.Fatalf("SETNAME: %v", got)
	}
	lockJob(t, h, c)

	if err := leader.Raft.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for leader.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("still the leader 10s after the transfer")
		}
		time.Sleep(5 * time.Millisecond)
	}

	if raw := reset(t, h, c); len(raw) != 1 || !strings.HasPrefix(raw[0], "-TRYAGAIN") {
		t.Fatalf("RESET on a member that no longer leads: %q, want -TRYAGAIN", raw)
	}
	// Nothing changed: the connection keeps its name, and the hold is
	// still in the log (the table every member applies).
	h.send(c, "CLIENT GETNAME")
	if got := h.await(c); len(got) != 1 || got[0] != "$worker" {
		t.Fatalf("CLIENT GETNAME after the refused RESET: %v", got)
	}
	if n := leader.FSM.Bound(c.sess.id); n != 1 {
		t.Fatalf("the connection's session has %d holds after the refused RESET, want 1 (job)", n)
	}

	// The new leader frees it (its takeover would orphan it; an operator's
	// FORCEUNLOCK is quicker), so that the harness finds no hold left.
	var now *replica.Node
	for now == nil {
		for _, n := range nodes {
			if n.IsLeader() {
				now = n
			}
		}
		if now == nil && time.Now().After(deadline.Add(10*time.Second)) {
			t.Fatal("no leader after the transfer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	forceUnlockJob(t, now)
	for leader.FSM.Bound(c.sess.id) != 0 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the old leader did not apply the FORCEUNLOCK in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
