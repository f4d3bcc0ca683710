package replica

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// Failover time: three nodes on loopback TCP with raft-wal stores (fsync
// on, as in production); the leader is shut down again and again, and
// each time we measure until a new leader has applied its takeover entry
// (what a relock server does before it grants anything). The stopped
// node is restarted on the same address and stores before the next kill.

// Timing is a set of Raft timeouts.
type Timing struct{ Heartbeat, Election, Lease time.Duration }

var (
	raftDefaultTiming = Timing{time.Second, time.Second, 500 * time.Millisecond} // raft.DefaultConfig
	tunedTiming       = Timing{DefaultHeartbeatTimeout, DefaultElectionTimeout, DefaultLeaderLeaseTimeout}
)

// failoverNode is a node with what it takes to restart it alike.
type failoverNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	dir   string
	node  *Node
	store *Store
	trans *raft.NetworkTransport
}

func (n *failoverNode) start(t *testing.T, timing Timing, bootstrap []raft.Server) {
	t.Helper()
	var err error
	for try := 0; ; try++ { // the old listener's port may linger a moment
		n.trans, err = raft.NewTCPTransport(string(n.addr), nil, 3, 2*time.Second, io.Discard)
		if err == nil || try == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n.store, err = OpenStore(n.dir, discard); err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStore(n.dir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n.node, err = NewNode(NodeConfig{
		ID: n.id, Transport: n.trans, Logs: n.store, Stable: n.store, Snapshots: snaps,
		Table: locktable.Config{Shards: 4, FenceStart: 1}, Bootstrap: bootstrap,
		HeartbeatTimeout: timing.Heartbeat, ElectionTimeout: timing.Election, LeaderLeaseTimeout: timing.Lease,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (n *failoverNode) stop() {
	n.node.Shutdown()
	n.trans.Close()
	n.store.Close()
}

// measureFailover returns the time from each of kills leader stops to a
// new leader's takeover entry applied there.
func measureFailover(t *testing.T, timing Timing, kills int) []time.Duration {
	t.Helper()
	var nodes []*failoverNode
	var servers []raft.Server
	for i := 0; i < 3; i++ {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		addr := tr.LocalAddr()
		tr.Close()
		n := &failoverNode{id: raft.ServerID(fmt.Sprintf("n%d", i+1)), addr: addr, dir: filepath.Join(t.TempDir(), "raft")}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: addr})
	}
	for _, n := range nodes {
		n.start(t, timing, servers)
	}
	down := -1
	t.Cleanup(func() {
		for i, n := range nodes {
			if i != down {
				n.stop()
			}
		}
	})
	now := int64(1_750_000_000_000_000_000)
	// takeOver waits for a leader among the running nodes and appends its
	// takeover entry, as the server does on becoming leader.
	takeOver := func(within time.Duration) int {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			for i, n := range nodes {
				if i == down || n.node.Raft.State() != raft.Leader {
					continue
				}
				now += 1e6
				if _, err := n.node.Propose(Op{Kind: OpFailover, Now: now, Leader: string(n.id), Grace: 30e9}, within); err == nil {
					return i
				}
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("no takeover within %v", within)
		return -1
	}
	leader := takeOver(20 * time.Second)
	var took []time.Duration
	for k := 0; k < kills; k++ {
		// Some state for the takeover to orphan.
		now += 1e6
		sess := uint64(k + 1)
		for _, op := range []Op{{Kind: OpOpen, Now: now, Session: sess},
			{Kind: OpAcquire, Now: now, Session: sess, Request: locktable.Request{Name: fmt.Sprint("l", k), Rand: 1}}} {
			if _, err := nodes[leader].node.Propose(op, 5*time.Second); err != nil {
				t.Fatalf("kill %d: propose: %v", k, err)
			}
		}
		// Let every node catch up, as under steady load.
		want := nodes[leader].node.Raft.LastIndex()
		for i, n := range nodes {
			for i != down && n.node.Raft.AppliedIndex() < want {
				time.Sleep(time.Millisecond)
			}
		}
		start := time.Now()
		nodes[leader].stop()
		down = leader
		leader = takeOver(20 * time.Second)
		took = append(took, time.Since(start))
		nodes[down].start(t, timing, nil)
		down = -1
	}
	return took
}

func summarize(d []time.Duration) (median, worst time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// TestFailover_NewLeaderTakesOverWithinASecond: with the default
// timeouts, over 10 leader kills the median time to a new leader's
// takeover entry is under 1 s, and none over 2 s (the performance targets). Timing tests
// flake on a loaded machine, so the bound checked is looser (3 s each);
// the numbers are logged. RELOCK_FAILOVER_TIMING=hb,election,lease (ms)
// measures another setting, e.g. raft's defaults 1000,1000,500.
func TestFailover_NewLeaderTakesOverWithinASecond(t *testing.T) {
	timing, kills := tunedTiming, 10
	if testing.Short() {
		kills = 3
	}
	if v := os.Getenv("RELOCK_FAILOVER_TIMING"); v != "" {
		var ms [3]int
		if _, err := fmt.Sscanf(v, "%d,%d,%d", &ms[0], &ms[1], &ms[2]); err != nil {
			t.Fatalf("RELOCK_FAILOVER_TIMING=%q: %v", v, err)
		}
		timing = Timing{time.Duration(ms[0]) * time.Millisecond, time.Duration(ms[1]) * time.Millisecond, time.Duration(ms[2]) * time.Millisecond}
	}
	if v := os.Getenv("RELOCK_FAILOVER_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	took := measureFailover(t, timing, kills)
	median, worst := summarize(took)
	t.Logf("timing %+v: %d kills, median %v, max %v: %v", timing, kills, median, worst, took)
	if worst > 3*time.Second {
		t.Errorf("a failover took %v", worst)
	}
}
