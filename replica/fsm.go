package replica

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// ErrNoSession is the result of an op naming a session the FSM does not
// have (never opened, or closed).
var ErrNoSession = errors.New("replica: no such session")

// FSM is the lock table as a raft.FSM.
type FSM struct {
	cfg locktable.Config

	// mu guards table and sessions against Snapshot/Restore, which raft
	// may run concurrently with Apply.
	mu       sync.Mutex
	table    *locktable.Table
	sessions map[uint64]*locktable.Session
	// conn gives a session's Conn (the proposing node's connection
	// handle); nil on nodes that serve no clients.
	conn func(id uint64) any
	// leader and leaderAddr are the last failover entry's, leaderTerm the
	// Raft term it was appended in; applied is the last log index applied.
	leader, leaderAddr string
	leaderTerm         uint64
	applied            uint64
	// halted is why this FSM stopped applying (nil: it applies); halt is
	// told once (NodeConfig.Halt).
	halted error
	halt   func(error)
}

// LeaderTerm returns the Raft term of the last takeover entry applied: a
// node leads for lock commands only once its own takeover entry of its
// current term is applied.
func (f *FSM) LeaderTerm() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaderTerm
}

// Applied returns the index of the last log entry this FSM applied.
func (f *FSM) Applied() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// Leader returns the Raft ID and client address of the leader that last
// took over (its failover entry), as this node has applied it.
func (f *FSM) Leader() (id, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.leaderAddr
}

// NewFSM returns an FSM over an empty table with cfg. conn, if set, gives
// each new session its Conn (opaque to the table).
func NewFSM(cfg locktable.Config, conn func(id uint64) any) *FSM {
	return &FSM{cfg: cfg, table: locktable.New(cfg), sessions: map[uint64]*locktable.Session{}, conn: conn}
}

// Table returns the table, for reads (LOCKS, INFO) on this node.
func (f *FSM) Table() *locktable.Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.table
}

// Apply applies one log entry: a batch of ops (the result is a []*Result,
// one per op, in order) or, as written before batching, one op's JSON (a
// *Result).
//
// An entry that cannot be decoded (a newer relock's, in a cluster
// upgraded one node at a time, or a corrupt one) halts the FSM: skipping
// it would leave this replica's table different from the others' for
// good, so it applies nothing more, refuses to snapshot (a snapshot
// would claim the skipped entry), and tells NodeConfig.Halt, which stops
// the node. Restarted on a relock that reads the entry, the node replays
// its log and catches up. Until then every result is the error.
func (f *FSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	halted := f.halted
	f.mu.Unlock()
	if halted != nil {
		return &Result{Err: halted}
	}
	ops, batch, err := decodeEntry(l.Data)
	if err != nil {
		err = fmt.Errorf("replica: cannot apply log entry %d (term %d): %w; this node stops applying: run a relock that reads it", l.Index, l.Term, err)
		f.mu.Lock()
		f.halted = err
		f.mu.Unlock()
		if f.halt != nil {
			f.halt(err)
		}
		return &Result{Err: err}
	}
	rs := make([]*Result, len(ops))
	failover := false
	for i := range ops {
		rs[i] = f.ApplyOp(ops[i])
		failover = failover || ops[i].Kind == OpFailover
	}
	f.mu.Lock()
	f.applied = l.Index
	if failover {
		f.leaderTerm = l.Term
	}
	f.mu.Unlock()
	if !batch {
		return rs[0]
	}
	return rs
}

// ApplyOp applies a decoded op. It is Apply without the log (tests, and
// a single-node engine).
func (f *FSM) ApplyOp(op Op) *Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &Result{}
	t := f.table
	sess := func() *locktable.Session {
		s := f.sessions[op.Session]
		if s == nil {
			r.Err = ErrNoSession
		}
		return s
	}
	switch op.Kind {
	case OpOpen:
		if op.Session == 0 || f.sessions[op.Session] != nil {
			r.Err = fmt.Errorf("replica: session %d exists or is invalid", op.Session)
			break
		}
		var c any
		if f.conn != nil {
			c = f.conn(op.Session)
		}
		f.sessions[op.Session] = t.NewSession(op.Session, c)
	case OpClose:
		if s := sess(); s != nil {
			why := op.Reason
			if why == 0 {
				why = locktable.ReasonDisconnect
			}
			t.CloseSessionFor(&r.Events, s, why, op.Now)
			delete(f.sessions, op.Session)
		}
	case OpAcquire:
		if s := sess(); s != nil {
			r.Key, r.Outcome, r.Err = t.Acquire(&r.Events, s, op.Request, op.Now, op.Wait)
		}
	case OpAcquireMulti:
		if s := sess(); s != nil {
			r.Keys, r.Outcome, r.Err = t.AcquireMulti(&r.Events, s, op.Requests, op.Now, op.Wait)
		}
	case OpUnlock:
		r.Err = t.Unlock(&r.Events, op.Name, op.Key, op.Now)
	case OpRenew:
		s := f.sessions[op.Session] // may be nil: no adoption then
		r.Int, r.Err = t.Renew(&r.Events, s, op.Name, op.Key, op.TTL, op.Now)
	case OpCheck:
		r.Int, r.Err = t.Check(&r.Events, op.Name, op.Key, op.Now)
	case OpForce:
		r.Int = int64(t.ForceUnlock(&r.Events, op.Name, op.Now))
	case OpCancel:
		if s := sess(); s != nil {
			// The requests it kept waiting (readers behind a writer or an
			// upgrade) are granted now, in the result's events.
			r.Bool = t.CancelWaitAt(&r.Events, s, op.Now)
		}
	case OpUpgrade:
		if s := sess(); s != nil {
			r.Key, r.Outcome, r.Err = t.Upgrade(&r.Events, s, op.Name, op.Key, op.Rand, op.Now)
		}
	case OpDowngrade:
		r.Err = t.Downgrade(&r.Events, op.Name, op.Key, op.Now)
	case OpExpire:
		r.Int, r.Bool = t.ExpireBatch(&r.Events, op.Now, op.Max)
	case OpFailover:
		f.leader, f.leaderAddr = op.Leader, op.LeaderAddr
		t.SetLimits(op.MaxWaiters, op.MaxHolds)
		// Fences keep increasing across leaders anyway (the counter is
		// replicated); moving them to the leader's clock in µs also keeps
		// them above fences of the time before the cluster.
		if op.Now > 0 {
			t.AdvanceFence(uint64(op.Now / 1000))
		}
		// Sessions in ID order, so that every node orphans in one order.
		ids := make([]uint64, 0, len(f.sessions))
		for id := range f.sessions {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			t.OrphanSession(&r.Events, f.sessions[id], op.Now, op.Grace)
			delete(f.sessions, id)
		}
	default:
		r.Err = fmt.Errorf("replica: unknown op %q", op.Kind)
	}
	return r
}

// Snapshot captures the whole table: a copy of its state (sessions,
// holds, waiters, fence) taken while Apply waits, which Persist encodes
// later, concurrently with Apply (see snapshot.go).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.halted != nil {
		return nil, f.halted
	}
	extra := make([]*locktable.Session, 0, len(f.sessions))
	for _, s := range f.sessions {
		extra = append(extra, s)
	}
	maxWaiters, maxHolds := f.table.Limits()
	return &fsmSnapshot{st: fsmState{State: f.table.State(extra), Leader: f.leader, LeaderAddr: f.leaderAddr, LeaderTerm: f.leaderTerm,
		MaxWaiters: maxWaiters, MaxHolds: maxHolds}}, nil
}

// Restore replaces the table with a snapshot's, in any binary encoding
// version or the JSON one of snapshots taken before them.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := decodeSnapshot(rc)
	if err != nil {
		return err
	}
	t := locktable.New(f.cfg)
	t.SetLimits(st.MaxWaiters, st.MaxHolds)
	sessions, err := t.LoadState(st.State, f.conn)
	if err != nil {
		return fmt.Errorf("%w: %w", errBadSnapshot, err)
	}
	f.mu.Lock()
	f.table, f.sessions = t, sessions
	f.leader, f.leaderAddr, f.leaderTerm = st.Leader, st.LeaderAddr, st.LeaderTerm
	f.mu.Unlock()
	return nil
}
