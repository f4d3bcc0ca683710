package replica

import (
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// The node's small API: what the server needs to know about leadership
// and membership, so that nothing outside this package imports raft.

// Member is one server of the cluster's configuration.
type Member struct {
	ID       string
	RaftAddr string
	Voter    bool
	Leader   bool
}

// Status is a snapshot of the node's Raft state, for INFO and CLUSTER.
type Status struct {
	State        string // "leader", "follower", "candidate", "shutdown"
	Leader       string // the leader's ID ("": none known)
	Term         uint64
	LastLogIndex uint64
	Peers        int // other voters this node knows
}

// IsLeader reports whether this node is Raft leader now.
func (n *Node) IsLeader() bool { return n.Raft.State() == raft.Leader }

// ConfirmLeader makes sure that this node still leads now: it commits a
// barrier entry (raft's Barrier; no change to the FSM) and waits until
// everything before it is applied. A deposed leader cannot commit it.
// (raft's VerifyLeader, a round of heartbeats, can count replies to
// heartbeats sent before the question was asked, from before an
// election.) timeout bounds the wait for raft to take the entry.
func (n *Node) ConfirmLeader(timeout time.Duration) error {
	return n.Raft.Barrier(timeout).Error()
}

// LeaderID returns the leader's ID, "" when none is known.
func (n *Node) LeaderID() string {
	_, id := n.Raft.LeaderWithID()
	return string(id)
}

// LeaderAddr returns the ID of the leader raft knows and its client
// address, from that leader's takeover entry: addr is empty until this
// node has applied it (between an election and then, the last takeover
// entry names the former leader), and both are while no leader is known.
func (n *Node) LeaderAddr() (id, addr string) {
	id = n.LeaderID()
	if took, a := n.FSM.Leader(); id != "" && took == id {
		addr = a
	}
	return id, addr
}

// Term returns the node's current term.
func (n *Node) Term() uint64 { return n.Raft.CurrentTerm() }

// LeaderChanges delivers true when this node becomes leader and false
// when it stops being leader (raft's LeaderCh: a consumer that falls
// behind misses intermediate changes, never the last one).
func (n *Node) LeaderChanges() <-chan bool { return n.Raft.LeaderCh() }

// Status returns the node's Raft state.
func (n *Node) Status() Status {
	st := n.Raft.Stats()
	last, _ := strconv.ParseUint(st["last_log_index"], 10, 64)
	peers, _ := strconv.Atoi(st["num_peers"])
	return Status{
		State:        strings.ToLower(n.Raft.State().String()),
		Leader:       n.LeaderID(),
		Term:         n.Raft.CurrentTerm(),
		LastLogIndex: last,
		Peers:        peers,
	}
}

// Applied returns the index of the last log entry the lock table has
// applied: the FSM's count, or the index of the snapshot the table was
// restored from when no entry has been applied since (the FSM cannot
// know that index: raft's Restore does not pass it).
func (n *Node) Applied() uint64 {
	a := n.FSM.Applied()
	if s, _ := strconv.ParseUint(n.Raft.Stats()["last_snapshot_index"], 10, 64); s > a {
		return s
	}
	return a
}

// Members returns the cluster's configuration.
func (n *Node) Members() ([]Member, error) {
	cf := n.Raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, err
	}
	leader := n.LeaderID()
	var out []Member
	for _, sv := range cf.Configuration().Servers {
		out = append(out, Member{ID: string(sv.ID), RaftAddr: string(sv.Address),
			Voter: sv.Suffrage == raft.Voter, Leader: string(sv.ID) == leader})
	}
	return out, nil
}

// AddVoter adds a voting member (on the leader), waiting up to timeout.
func (n *Node) AddVoter(id, raftAddr string, timeout time.Duration) error {
	return n.Raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout).Error()
}

// RemoveMember removes a member (on the leader), waiting up to timeout.
func (n *Node) RemoveMember(id string, timeout time.Duration) error {
	return n.Raft.RemoveServer(raft.ServerID(id), 0, timeout).Error()
}

// Bound returns how many holds are bound to session id on this node's
// table (0 for a session it does not have).
func (f *FSM) Bound(id uint64) int {
	f.mu.Lock()
	s := f.sessions[id]
	f.mu.Unlock()
	if s == nil {
		return 0
	}
	return s.Bound()
}
