package replica

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// ErrNotLeader is returned by Propose on a node that is not the leader;
// nothing was appended, and the caller redirects its client to the leader.
var ErrNotLeader = errors.New("replica: not the leader")

// ErrOutcomeUnknown: leadership was lost after the op was appended; a
// later leader may still commit it (Raft's unknown outcome).
var ErrOutcomeUnknown = errors.New("replica: leadership lost while applying; the outcome is unknown")

// NodeConfig assembles one Raft node. The stores and transport are the
// caller's: raft-boltdb and a TCP transport in production, in-memory ones
// in tests.
type NodeConfig struct {
	ID        raft.ServerID
	Transport raft.Transport
	Logs      raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	Table     locktable.Config
	// Conn gives a session its Conn on this node (see FSM).
	Conn func(id uint64) any
	// Bootstrap, if set, forms a new cluster of these servers (once, on
	// empty stores).
	Bootstrap []raft.Server
	// Timing; zero values take the Default* timeouts above.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// MaxInflight bounds the entries the leader has appended and not yet
	// applied (0: DefaultMaxInflight); proposals queue meanwhile and go
	// into one entry (batch.go).
	MaxInflight int
	// LogOutput receives raft's own log (nil: discarded), unless Logger
	// is set: then raft logs through it.
	LogOutput io.Writer
	Logger    *slog.Logger
	// Halt, if set, is told (once, from raft's apply goroutine: it must
	// not block) that this node met a log entry it cannot apply — written
	// by a newer relock, or corrupt — and stopped applying: the node must
	// stop serving (see FSM.Apply). nil: the error is only in the results.
	Halt func(error)
	// Fault, if set (tests only), is asked before each proposal: an
	// error fails it unappended, as a proposal that waited in the queue
	// past its timeout does (raft.ErrEnqueueTimeout), while the node
	// goes on leading.
	Fault func(op Op) error
}

// Default Raft timeouts, tuned for a LAN (raft's own are 1 s, 1 s and
// 500 ms): a follower that hears nothing from the leader for a heartbeat
// timeout (a random 1–2× of it) stands for election, so a dead leader is
// replaced in about 1–2 heartbeat timeouts plus a round trip; the leader
// steps down when it has not reached a quorum for a lease timeout. Shorter
// ones fail over faster but call elections on pauses (GC, a loaded host,
// network jitter) that long. See docs/raft.md for the measurements.
const (
	DefaultHeartbeatTimeout   = 300 * time.Millisecond
	DefaultElectionTimeout    = 300 * time.Millisecond
	DefaultLeaderLeaseTimeout = 150 * time.Millisecond
)

// Node is one member of a replicated lock table.
type Node struct {
	ID   raft.ServerID
	Raft *raft.Raft
	FSM  *FSM
	// batch turns proposals into entries.
	batch *batcher
	fault func(op Op) error // NodeConfig.Fault
	// closers are what Open assembled around the node, closed by Close
	// after the node shut down.
	closers []io.Closer
}

// NewNode starts a node.
func NewNode(c NodeConfig) (*Node, error) {
	rc := raft.DefaultConfig()
	rc.LocalID = c.ID
	rc.HeartbeatTimeout = DefaultHeartbeatTimeout
	rc.ElectionTimeout = DefaultElectionTimeout
	rc.LeaderLeaseTimeout = DefaultLeaderLeaseTimeout
	// Pre-vote (raft ≥ 1.7, on transports that support it, as the network
	// transport does): a node that was cut off asks before it bumps its
	// term, so its return does not depose a healthy leader.
	rc.PreVoteDisabled = false
	// A leader removed from the configuration must not shut raft down by
	// itself: entries it committed and had not applied would be dropped
	// with their futures (hashicorp/raft#498), and the batcher waits on
	// them. It steps down to a follower instead; Shutdown stops it.
	rc.ShutdownOnRemove = false
	if c.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = c.HeartbeatTimeout
	}
	if c.ElectionTimeout > 0 {
		rc.ElectionTimeout = c.ElectionTimeout
	}
	if c.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	}
	rc.LogOutput = c.LogOutput
	if rc.LogOutput == nil {
		rc.LogOutput = io.Discard
	}
	if c.Logger != nil {
		rc.Logger = raftLogger(c.Logger)
	}
	fsm := NewFSM(c.Table, c.Conn)
	fsm.halt = c.Halt
	if len(c.Bootstrap) > 0 {
		err := raft.BootstrapCluster(rc, c.Logs, c.Stable, c.Snapshots, c.Transport, raft.Configuration{Servers: c.Bootstrap})
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("replica: bootstrap: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, fsm, c.Logs, c.Stable, c.Snapshots, c.Transport)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	return &Node{ID: c.ID, Raft: r, FSM: fsm, batch: newBatcher(r, c.MaxInflight), fault: c.Fault}, nil
}

// Propose appends op to the log, in an entry with the ops proposed
// meanwhile (batch.go), and returns its result once applied on this node.
// Only the leader may propose; the op's Now and any Request.Rand must
// already be set by the caller (the leader), so that every node applies
// the same thing. timeout bounds the wait for raft to take the entry.
func (n *Node) Propose(op Op, timeout time.Duration) (*Result, error) {
	if n.Raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	if n.fault != nil {
		if err := n.fault(op); err != nil {
			return nil, err
		}
	}
	return n.batch.propose(op, timeout)
}

// Shutdown stops the node and waits for it: first its proposals (the
// queued ones fail, the entries in flight are waited for, which raft
// answers while it runs), then raft.
func (n *Node) Shutdown() error {
	n.batch.close()
	return n.Raft.Shutdown().Error()
}
