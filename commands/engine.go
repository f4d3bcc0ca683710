package commands

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// The engine: every change of lock state goes through these methods. A
// single server applies it to its table; a clustered one proposes it to
// Raft (package replica) and gets the same result back once the entry is
// applied, on every node. Handlers do not know which.

// Cluster makes a server a member of a Raft cluster.
type Cluster struct {
	Node *replica.Node
	// Advertise is the address clients use to reach this node (what
	// followers name in -MOVED).
	Advertise string
	// ProposeTimeout bounds one proposal (default 5s).
	ProposeTimeout time.Duration
}

// errMoved: this node is not the leader.
var errMoved = errors.New("not the leader")

// tbl returns the table to read: the FSM's in a cluster (a snapshot
// restore replaces it), the server's own otherwise.
func (s *Server) tbl() *locktable.Table {
	if c := s.cfg.Cluster; c != nil {
		return c.Node.FSM.Table()
	}
	return s.table
}

// isLeader reports whether this server may change lock state.
//
// In a cluster that takes being Raft leader and having applied its own
// takeover entry of the current term: before that, the old leader's
// sessions are not yet orphaned, and serving would mix them with new ones.
func (s *Server) isLeader() bool {
	c := s.cfg.Cluster
	if c == nil {
		return true
	}
	r := c.Node.Raft
	if r.State() != raft.Leader {
		return false
	}
	id, _ := c.Node.FSM.Leader()
	return id == string(c.Node.ID) && c.Node.FSM.LeaderTerm() == r.CurrentTerm()
}

// movedError is the reply that sends a client to the leader.
func (s *Server) movedError() string {
	c := s.cfg.Cluster
	_, id := c.Node.Raft.LeaderWithID()
	leader, addr := c.Node.FSM.Leader()
	if id == "" || string(id) != leader || addr == "" || id == c.Node.ID {
		return "CLUSTERDOWN no leader is known yet; try again"
	}
	return "MOVED 0 " + addr
}

// propose runs op through Raft, stamping the leader's clock, opening the
// session first if the op needs one, and copies the result's events to ev.
func (s *Server) propose(ev *locktable.Events, sess *session, op replica.Op) (*replica.Result, error) {
	c := s.cfg.Cluster
	timeout := c.ProposeTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if sess != nil && !sess.clusterOpen.Load() {
		open := replica.Op{Kind: replica.OpOpen, Now: s.now(), Session: sess.id}
		r, err := c.Node.Propose(open, timeout)
		if err != nil {
			return nil, clusterErr(err)
		}
		if r.Err != nil {
			return nil, r.Err
		}
		sess.clusterOpen.Store(true)
	}
	if op.Now == 0 {
		op.Now = s.now()
	}
	r, err := c.Node.Propose(op, timeout)
	if err != nil {
		return nil, clusterErr(err)
	}
	ev.Grants = append(ev.Grants[:0], r.Events.Grants...)
	ev.Releases = append(ev.Releases[:0], r.Events.Releases...)
	if errors.Is(r.Err, replica.ErrNoSession) {
		// A failover orphaned this connection's session: it belongs to a
		// leader that no longer is.
		return r, locktable.ErrSessionClosed
	}
	return r, r.Err
}

func clusterErr(err error) error {
	if errors.Is(err, replica.ErrNotLeader) {
		return errMoved
	}
	if errors.Is(err, replica.ErrOutcomeUnknown) {
		return errOutcomeUnknown
	}
	return err
}

// errOutcomeUnknown: the leader lost leadership after appending the
// change; a later leader may still apply it.
var errOutcomeUnknown = errors.New("leadership changed while applying the request; its outcome is unknown (a granted lock would be an orphan: give locks a TTL)")

func (s *Server) acquire(ev *locktable.Events, sess *session, req locktable.Request, now int64, wait bool) (locktable.Key, locktable.Outcome, error) {
	if s.cfg.Cluster == nil {
		return s.table.Acquire(ev, sess.lt, req, now, wait)
	}
	r, err := s.propose(ev, sess, replica.Op{Kind: replica.OpAcquire, Now: now, Session: sess.id, Request: req, Wait: wait})
	if err != nil {
		return locktable.Key{}, 0, err
	}
	return r.Key, r.Outcome, nil
}

func (s *Server) unlock(ev *locktable.Events, name string, key locktable.Key, now int64) error {
	if s.cfg.Cluster == nil {
		return s.table.Unlock(ev, name, key, now)
	}
	_, err := s.propose(ev, nil, replica.Op{Kind: replica.OpUnlock, Now: now, Name: name, Key: key})
	return err
}

func (s *Server) renew(ev *locktable.Events, sess *session, name string, key locktable.Key, ttl, now int64) (int64, error) {
	if s.cfg.Cluster == nil {
		return s.table.Renew(ev, sess.lt, name, key, ttl, now)
	}
	r, err := s.propose(ev, sess, replica.Op{Kind: replica.OpRenew, Now: now, Session: sess.id, Name: name, Key: key, TTL: ttl})
	if err != nil {
		return 0, err
	}
	return r.Int, nil
}

func (s *Server) check(ev *locktable.Events, name string, key locktable.Key, now int64) (int64, error) {
	if s.cfg.Cluster == nil {
		return s.table.Check(ev, name, key, now)
	}
	r, err := s.propose(ev, nil, replica.Op{Kind: replica.OpCheck, Now: now, Name: name, Key: key})
	if err != nil {
		return 0, err
	}
	return r.Int, nil
}

func (s *Server) forceUnlock(ev *locktable.Events, name string, now int64) (int, error) {
	if s.cfg.Cluster == nil {
		return s.table.ForceUnlock(ev, name, now), nil
	}
	r, err := s.propose(ev, nil, replica.Op{Kind: replica.OpForce, Now: now, Name: name})
	if err != nil {
		return 0, err
	}
	return int(r.Int), nil
}

// closeSession ends a connection's session (disconnect, RESET, kill).
//
// In a cluster, a connection that ends because this server stops is not a
// disconnect (as with --data-dir on a single server): its session stays
// in the log with its bound holds, only its waiter leaves the queue, and
// the next leader's failover entry orphans the holds for RENEW to adopt —
// as after a crash, so that a rolling restart of the leader does not
// release every lock its clients hold.
func (s *Server) closeSession(ev *locktable.Events, sess *session, lt *locktable.Session, now int64) {
	if s.cfg.Cluster == nil {
		s.table.CloseSession(ev, lt, now)
		return
	}
	if !sess.clusterOpen.Load() || !s.isLeader() {
		return // nothing to close here; a new leader orphans it
	}
	sess.clusterOpen.Store(false)
	op := replica.Op{Kind: replica.OpClose, Now: now, Session: sess.id}
	if s.endedByStop(sess) {
		op.Kind = replica.OpCancel
	}
	if _, err := s.propose(ev, nil, op); err != nil && !errors.Is(err, errMoved) {
		s.log.Warn("closing a session in the cluster", "client", sess.id, "err", err)
	}
}

// endedByStop reports whether sess ends because the server is stopping:
// its connection is gone (not a RESET) and shutdown has begun.
func (s *Server) endedByStop(sess *session) bool {
	sess.mu.Lock()
	ended := sess.ended
	sess.mu.Unlock()
	return ended && s.isClosing()
}

// isClosing reports whether shutdown has begun.
func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// cancelWait takes the session's queued LOCK out of the queue; false: it
// was granted meanwhile (the grant is on its way).
func (s *Server) cancelWait(sess *session) bool {
	if s.cfg.Cluster == nil {
		return s.table.CancelWait(sess.lt)
	}
	var ev locktable.Events
	r, err := s.propose(&ev, nil, replica.Op{Kind: replica.OpCancel, Session: sess.id})
	if err != nil {
		// Not the leader any more: the connection is being closed, and
		// its waiter was dropped by the failover.
		return true
	}
	return r.Bool
}

// expireBatch bounds the holds one expiry pass releases, so that a mass
// expiry (a restart's orphans at the end of --restore-grace) is committed
// and delivered in parts, and, in a cluster, no one log entry holds the
// FSM for long.
const expireBatch = 1024

// expire releases due holds, at most expireBatch of them; only the leader
// does it in a cluster. It returns the earliest deadline left and whether
// due holds remain (then the caller comes back at once).
func (s *Server) expire(ev *locktable.Events, now int64) (next int64, more bool) {
	if s.cfg.Cluster == nil {
		return s.table.ExpireBatch(ev, now, expireBatch)
	}
	if !s.isLeader() || s.isClosing() {
		return 0, false // a stopping leader grants nothing more; the next one expires
	}
	r, err := s.propose(ev, nil, replica.Op{Kind: replica.OpExpire, Now: now, Max: expireBatch})
	if err != nil {
		return 0, false
	}
	return r.Int, r.Bool
}

// watchLeadership runs in a cluster until ctx ends: on becoming leader it
// appends the failover entry (the old leader's connections are gone: their
// bound holds become orphans that RENEW adopts, their waiters leave); on
// losing leadership it closes every client connection, so that clients
// reconnect and are sent to the new leader.
func (s *Server) watchLeadership(done <-chan struct{}, grace time.Duration) {
	c := s.cfg.Cluster
	for {
		select {
		case <-done:
			return
		case leader := <-c.Node.Raft.LeaderCh():
			if leader {
				_, id := c.Node.Raft.LeaderWithID()
				var ev locktable.Events
				_, err := s.propose(&ev, nil, replica.Op{Kind: replica.OpFailover, Grace: int64(grace),
					Leader: string(id), LeaderAddr: c.Advertise})
				if err != nil {
					s.log.Error("taking over as leader", "err", err)
					continue
				}
				s.log.Info("became leader", "node", string(id))
				s.expiry.schedule(s.now())
				continue
			}
			s.log.Info("lost leadership; closing client connections")
			for _, sess := range s.sessionsSorted() {
				sess.kill()
			}
		}
	}
}
