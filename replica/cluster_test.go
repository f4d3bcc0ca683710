package replica

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// testCluster is n in-process Raft nodes, all connected to each other:
// on in-memory transports (newTestClusterTiming) or on real ones over loopback
// (startTestCluster, used by the TLS tests).
type testCluster struct {
	t     *testing.T
	nodes []*Node
	addrs []raft.ServerAddress
	down  map[int]bool
}

// newTestClusterTiming starts n nodes on in-memory transports, with timeout as the heartbeat,
// election and lease timeout (a longer one for tests that must not see a
// leader change on a loaded machine).
func newTestClusterTiming(t *testing.T, n int, timeout time.Duration) *testCluster {
	t.Helper()
	var trans []raft.Transport
	var mem []*raft.InmemTransport
	for i := 0; i < n; i++ {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("node%d", i)))
		mem = append(mem, tr)
		trans = append(trans, tr)
	}
	for i := range mem {
		for j := range mem {
			if i != j {
				mem[i].Connect(mem[j].LocalAddr(), mem[j])
			}
		}
	}
	return startTestCluster(t, trans, timeout)
}

// startTestCluster bootstraps a cluster of one node per transport (node i
// with 2^i shards, its ID its transport's address; timeout is the
// heartbeat, election and lease timeout) and shuts the live ones down when
// the test ends (which closes their transports).
func startTestCluster(t *testing.T, trans []raft.Transport, timeout time.Duration) *testCluster {
	t.Helper()
	c := &testCluster{t: t, down: map[int]bool{}}
	var servers []raft.Server
	for _, tr := range trans {
		addr := tr.LocalAddr()
		c.addrs = append(c.addrs, addr)
		servers = append(servers, raft.Server{ID: raft.ServerID(addr), Address: addr})
	}
	t.Cleanup(func() {
		for i, n := range c.nodes {
			if !c.down[i] {
				n.Shutdown()
			}
		}
	})
	for i := range trans {
		node, err := NewNode(NodeConfig{
			ID: servers[i].ID, Transport: trans[i],
			Logs: raft.NewInmemStore(), Stable: raft.NewInmemStore(), Snapshots: raft.NewInmemSnapshotStore(),
			Table:            locktable.Config{Shards: 1 << i, FenceStart: 1000},
			Bootstrap:        servers,
			HeartbeatTimeout: timeout, ElectionTimeout: timeout, LeaderLeaseTimeout: timeout,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, node)
	}
	return c
}

// leader waits (bounded) for a leader among the live nodes.
func (c *testCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, n := range c.nodes {
			if !c.down[i] && n.Raft.State() == raft.Leader {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no leader within 10s")
	return -1
}

// converge waits until every live node has applied the leader's last
// index and their snapshots agree (bounded), then returns the snapshots.
func (c *testCluster) converge(leader int) [][]byte {
	c.t.Helper()
	want := c.nodes[leader].Raft.LastIndex()
	deadline := time.Now().Add(10 * time.Second)
	for i, n := range c.nodes {
		for !c.down[i] && n.Raft.AppliedIndex() < want {
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d applied %d of %d within 10s", i, n.Raft.AppliedIndex(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// raft's applied index moves when an entry is handed to the FSM, a
	// moment before the FSM has applied it: take the snapshots until they
	// agree, or until the deadline (then the caller sees them differ).
	for {
		var snaps [][]byte
		for i, n := range c.nodes {
			if !c.down[i] {
				snaps = append(snaps, snapshotBytes(c.t, n.FSM))
			}
		}
		agree := true
		for _, s := range snaps[1:] {
			agree = agree && bytes.Equal(s, snaps[0])
		}
		if agree || time.Now().After(deadline) {
			return snaps
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *testCluster) propose(leader int, op Op) *Result {
	c.t.Helper()
	r, err := c.nodes[leader].Propose(op, 5*time.Second)
	if err != nil {
		c.t.Fatalf("propose %+v: %v", op, err)
	}
	return r
}

// TestCluster_ReplicasAgreeAndFailoverKeepsHolds runs a random workload
// through the leader of a 3-node cluster (each node with a different shard
// count), checks that every replica reaches byte-identical state, then
// stops the leader: a new one is elected, the holds are all still there
// (bound ones orphaned, to be adopted by RENEW), and new fences are larger
// than every fence before.
func TestCluster_ReplicasAgreeAndFailoverKeepsHolds(t *testing.T) {
	c := newTestClusterTiming(t, 3, 300*time.Millisecond) // no leader change mid-workload under -race on a busy machine
	l := c.leader()
	g := newOpGen(42)
	var maxFence uint64
	for i := 0; i < 300; i++ {
		op := g.next()
		r := c.propose(l, op)
		g.learn(op, r)
		if r.Outcome == locktable.Granted {
			maxFence = max(maxFence, r.Key.Fence)
		}
		for _, gr := range r.Events.Grants {
			maxFence = max(maxFence, gr.Key.Fence)
		}
	}
	// Make sure some holds exist to survive the failover.
	g.now += 1_000_000
	c.propose(l, Op{Kind: OpOpen, Now: g.now, Session: 10_000})
	held := c.propose(l, Op{Kind: OpAcquire, Now: g.now, Session: 10_000, Request: locktable.Request{Name: "survivor", Rand: 5}})
	if held.Err != nil || held.Outcome != locktable.Granted {
		t.Fatalf("acquire survivor: %+v", held)
	}
	maxFence = max(maxFence, held.Key.Fence)
	snaps := c.converge(l)
	for i := 1; i < len(snaps); i++ {
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("replica %d differs from replica 0:\n%s\n%s", i, snaps[i], snaps[0])
		}
	}

	// The leader goes away.
	c.nodes[l].Shutdown()
	c.down[l] = true
	nl := c.leader()
	if nl == l {
		t.Fatal("the stopped node is still leader")
	}
	g.now += 1_000_000
	c.propose(nl, Op{Kind: OpFailover, Now: g.now, Grace: 30_000_000_000})
	li, ok := c.nodes[nl].FSM.Table().Lock("survivor", g.now)
	if !ok || len(li.Holds) != 1 || !li.Holds[0].Orphan || li.Holds[0].Fence != held.Key.Fence {
		t.Fatalf("survivor after failover: %+v, want its hold orphaned", li)
	}
	c.propose(nl, Op{Kind: OpOpen, Now: g.now, Session: 20_000})
	if r := c.propose(nl, Op{Kind: OpRenew, Now: g.now, Session: 20_000, Name: "survivor", Key: held.Key}); r.Err != nil {
		t.Fatalf("RENEW on the new leader: %v", r.Err)
	}
	fresh := c.propose(nl, Op{Kind: OpAcquire, Now: g.now, Session: 20_000, Request: locktable.Request{Name: "after", Rand: 6}})
	if fresh.Err != nil || fresh.Key.Fence <= maxFence {
		t.Fatalf("fence after failover %d, want > %d (err %v)", fresh.Key.Fence, maxFence, fresh.Err)
	}
	snaps = c.converge(nl)
	if !bytes.Equal(snaps[0], snaps[1]) {
		t.Fatal("the two surviving replicas differ after failover")
	}
	// A follower refuses to propose.
	for i := range c.nodes {
		if !c.down[i] && i != nl {
			if _, err := c.nodes[i].Propose(Op{Kind: OpExpire, Now: g.now}, time.Second); err != ErrNotLeader {
				t.Fatalf("follower Propose = %v, want ErrNotLeader", err)
			}
		}
	}
}

// TestNode_AnEntryItCannotApplyHaltsIt: an entry of a newer encoding (a
// newer relock's leader, in a cluster upgraded one node at a time) is
// not skipped — that would leave this replica's table different from
// the others' for good: the FSM stops applying, refuses to snapshot (a
// snapshot would claim the entry), and the node is told to halt.
func TestNode_AnEntryItCannotApplyHaltsIt(t *testing.T) {
	halted := make(chan error, 2)
	_, tr := raft.NewInmemTransport("solo")
	n, err := NewNode(NodeConfig{
		ID: "solo", Transport: tr, Logs: raft.NewInmemStore(), Stable: raft.NewInmemStore(), Snapshots: raft.NewInmemSnapshotStore(),
		Table: locktable.Config{Shards: 1}, Bootstrap: []raft.Server{{ID: "solo", Address: "solo"}},
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Halt: func(err error) { halted <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	c := &testCluster{t: t, nodes: []*Node{n}, down: map[int]bool{}}
	c.propose(c.leader(), Op{Kind: OpOpen, Now: 1, Session: 7})
	applied := n.FSM.Applied()

	newer := append([]byte(entryMagic), entryVersion+1, 0)
	if err := n.Raft.Apply(newer, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-halted:
		if !errors.Is(err, errBadEntry) || !strings.Contains(err.Error(), "stops applying") {
			t.Errorf("halt: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the node was not told to halt")
	}
	// Nothing after it is applied; nothing is snapshotted.
	if r, err := n.Propose(Op{Kind: OpAcquire, Now: 1, Session: 7, Request: locktable.Request{Name: "a", Rand: 1}}, 5*time.Second); err == nil && r.Err == nil {
		t.Errorf("an acquire after the entry: %+v, applied", r)
	}
	if _, ok := n.FSM.Table().Lock("a", 1); ok || n.FSM.Applied() != applied {
		t.Errorf("the table moved on: lock a %v, applied %d (was %d)", ok, n.FSM.Applied(), applied)
	}
	if err := n.Raft.Snapshot().Error(); err == nil {
		t.Error("a halted FSM was snapshotted")
	}
	if len(halted) != 0 {
		t.Error("halt was told twice")
	}
}
