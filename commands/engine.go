package commands

import (
	"errors"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// engine is where every change of lock state goes. Handlers call it and
// do not know which one they talk to: the local engine applies a change
// to the server's own table (persisted by the store's group commit); the
// Raft engine proposes it to the cluster and returns the result once the
// entry is applied on this node (package replica). A Raft proposal blocks
// its caller, so the lifecycle runs the commands that may propose off the
// connection's owner (engine.blocking; see conn.go's pendingWait.run).
type engine interface {
	// table is the table to read (LOCKS, INFO): the FSM's in a cluster (a
	// snapshot restore replaces it).
	table() *locktable.Table
	// leader reports whether this server may change lock state; moved is
	// the reply that sends a client elsewhere when it may not.
	leader() bool
	moved() string
	// confirmLeader makes sure, before a read of the table, that this
	// server still leads now (it may block: a Raft barrier entry).
	confirmLeader() error
	// blocking reports whether changes block their caller (Raft).
	blocking() bool
	// newSession opens the engine's side of a connection's session (nil
	// where the engine opens it itself, lazily); bound counts its bound
	// holds (CLIENT LIST).
	newSession(sess *session) *locktable.Session
	bound(sess *session) int

	acquire(ev *locktable.Events, sess *session, req locktable.Request, now int64, wait bool) (locktable.Key, locktable.Outcome, error)
	// acquireMulti takes every name of reqs at once, or queues on all of
	// them at one instant (MLOCK).
	acquireMulti(ev *locktable.Events, sess *session, reqs []locktable.Request, now int64, wait bool) ([]locktable.Key, locktable.Outcome, error)
	unlock(ev *locktable.Events, name string, key locktable.Key, now int64) error
	renew(ev *locktable.Events, sess *session, name string, key locktable.Key, ttl, now int64) (int64, error)
	check(ev *locktable.Events, name string, key locktable.Key, now int64) (int64, error)
	forceUnlock(ev *locktable.Events, name string, now int64) (int, error)
	// closeSession ends a connection's session; why is
	// locktable.ReasonDisconnect, ReasonKilled or ReasonReset. An error
	// (a cluster member that is not, or stopped being, the leader): the
	// session's holds were not released here (a new leader's takeover
	// orphans them).
	closeSession(ev *locktable.Events, sess *session, why locktable.Reason, now int64) error
	// cancelWait takes the session's queued LOCK (or UPGRADE) out of the
	// queue, granting in ev the requests behind it that then fit; false:
	// it was granted meanwhile (the grant is on its way).
	cancelWait(ev *locktable.Events, sess *session, now int64) bool
	// upgrade makes the shared hold of name with key exclusive (a new
	// key), at once or after waiting (Queued: a Grant follows);
	// downgrade makes an exclusive hold shared.
	upgrade(ev *locktable.Events, sess *session, name string, key locktable.Key, rnd uint64, now int64) (locktable.Key, locktable.Outcome, error)
	downgrade(ev *locktable.Events, name string, key locktable.Key, now int64) error
	// expire releases at most expireBatch due holds; more: some are left.
	expire(ev *locktable.Events, now int64) (next int64, more bool)
}

// expireBatch bounds the holds one expiry step releases, so that a mass
// expiry never holds the table (or a Raft entry) for long.
const expireBatch = 256

// localEngine is a single server's engine: its own table.
type localEngine struct{ t *locktable.Table }

func (e localEngine) table() *locktable.Table { return e.t }
func (e localEngine) leader() bool            { return true }
func (e localEngine) moved() string           { return "" }
func (e localEngine) blocking() bool          { return false }
func (e localEngine) confirmLeader() error    { return nil }
func (e localEngine) newSession(sess *session) *locktable.Session {
	return e.t.NewSession(sess.id, sess)
}
func (e localEngine) bound(sess *session) int {
	sess.mu.Lock()
	lt := sess.lt
	sess.mu.Unlock()
	if lt == nil {
		return 0
	}
	return lt.Bound()
}
func (e localEngine) acquire(ev *locktable.Events, sess *session, req locktable.Request, now int64, wait bool) (locktable.Key, locktable.Outcome, error) {
	return e.t.Acquire(ev, sess.lt, req, now, wait)
}
func (e localEngine) acquireMulti(ev *locktable.Events, sess *session, reqs []locktable.Request, now int64, wait bool) ([]locktable.Key, locktable.Outcome, error) {
	return e.t.AcquireMulti(ev, sess.lt, reqs, now, wait)
}
func (e localEngine) unlock(ev *locktable.Events, name string, key locktable.Key, now int64) error {
	return e.t.Unlock(ev, name, key, now)
}
func (e localEngine) renew(ev *locktable.Events, sess *session, name string, key locktable.Key, ttl, now int64) (int64, error) {
	return e.t.Renew(ev, sess.lt, name, key, ttl, now)
}
func (e localEngine) check(ev *locktable.Events, name string, key locktable.Key, now int64) (int64, error) {
	return e.t.Check(ev, name, key, now)
}
func (e localEngine) forceUnlock(ev *locktable.Events, name string, now int64) (int, error) {
	return e.t.ForceUnlock(ev, name, now), nil
}
func (e localEngine) closeSession(ev *locktable.Events, sess *session, why locktable.Reason, now int64) error {
	sess.mu.Lock()
	lt := sess.lt
	sess.mu.Unlock()
	e.t.CloseSessionFor(ev, lt, why, now)
	return nil
}
func (e localEngine) cancelWait(ev *locktable.Events, sess *session, now int64) bool {
	return e.t.CancelWaitAt(ev, sess.lt, now)
}
func (e localEngine) upgrade(ev *locktable.Events, sess *session, name string, key locktable.Key, rnd uint64, now int64) (locktable.Key, locktable.Outcome, error) {
	return e.t.Upgrade(ev, sess.lt, name, key, rnd, now)
}
func (e localEngine) downgrade(ev *locktable.Events, name string, key locktable.Key, now int64) error {
	return e.t.Downgrade(ev, name, key, now)
}
func (e localEngine) expire(ev *locktable.Events, now int64) (int64, bool) {
	return e.t.ExpireBatch(ev, now, expireBatch)
}

// Cluster makes a server a member of a Raft cluster.
type Cluster struct {
	Node *replica.Node
	// Advertise is the address clients use to reach this node (what
	// followers name in -MOVED).
	Advertise string
	// ProposeTimeout bounds one proposal (default 5s).
	ProposeTimeout time.Duration
	// Hub routes lock events to this node's subscribers: the FSM's table
	// must notify it (its locktable.Config's Notify and Watched are the
	// Hub's), so it is made before the node. Nil: no events.
	Hub *Hub
}

// proposeTimeout is ProposeTimeout, or its default.
func (c *Cluster) proposeTimeout() time.Duration {
	if c.ProposeTimeout <= 0 {
		return 5 * time.Second
	}
	return c.ProposeTimeout
}

// raftEngine is a cluster member's engine: every change is a Raft entry.
type raftEngine struct {
	s *Server
	c *Cluster
}

// errMoved: this node is not the leader.
var errMoved = errors.New("not the leader")

func (e raftEngine) table() *locktable.Table { return e.c.Node.FSM.Table() }
func (e raftEngine) blocking() bool          { return true }
func (e raftEngine) newSession(*session) *locktable.Session {
	return nil // opened in the FSM by the session's first proposal
}
func (e raftEngine) bound(sess *session) int { return e.c.Node.FSM.Bound(sess.id) }

// leader reports whether this node may change lock state: Raft leader,
// and its own takeover entry of the current term applied (before that,
// the old leader's sessions are not yet orphaned, and serving would mix
// them with new ones).
func (e raftEngine) leader() bool {
	n := e.c.Node
	if !n.IsLeader() {
		return false
	}
	id, _ := n.FSM.Leader()
	return id == n.LeaderID() && id != "" && n.FSM.LeaderTerm() == n.Term()
}

// confirmLeader makes sure this node still leads now, by committing a
// barrier entry (a deposed leader cannot): a leader paused past an
// election (a GC pause, a stalled VM) still believes it leads until its
// lease check runs, and would answer a read from a table the new leader
// has moved on from.
func (e raftEngine) confirmLeader() error {
	if err := e.c.Node.ConfirmLeader(e.c.proposeTimeout()); err != nil || !e.leader() {
		return errMoved
	}
	return nil
}

// moved is the reply that sends a client to the leader.
func (e raftEngine) moved() string {
	n := e.c.Node
	id, addr := n.LeaderAddr()
	if addr == "" || id == string(n.ID) {
		return "CLUSTERDOWN no leader is known yet; try again"
	}
	return "MOVED 0 " + addr
}

// propose runs op through Raft, stamping the leader's clock, opening the
// session first if the op needs one, and copies the result's events to ev.
func (e raftEngine) propose(ev *locktable.Events, sess *session, op replica.Op) (*replica.Result, error) {
	s, c := e.s, e.c
	timeout := c.proposeTimeout()
	if sess != nil && !sess.clusterOpen.Load() {
		if err := e.openSession(sess, timeout); err != nil {
			return nil, err
		}
	}
	if op.Now == 0 {
		op.Now = s.now()
	}
	r, err := c.Node.Propose(op, timeout)
	if err != nil {
		return nil, clusterErr(err)
	}
	// Appended, as the table appends: a caller may release several
	// holds into one ev (Server.release of a multi-lock's grant).
	ev.Grants = append(ev.Grants, r.Events.Grants...)
	ev.Releases = append(ev.Releases, r.Events.Releases...)
	if errors.Is(r.Err, replica.ErrNoSession) {
		// A failover orphaned this connection's session: it belongs to a
		// leader that no longer is.
		return r, locktable.ErrSessionClosed
	}
	return r, r.Err
}

// openSession opens sess in the log. It runs under closeMu, as
// closeSession does, and not for a session that has ended: a connection
// that closes while its first command runs off the owner must not have
// its session opened after closeSession found nothing to close.
func (e raftEngine) openSession(sess *session, timeout time.Duration) error {
	sess.closeMu.Lock()
	defer sess.closeMu.Unlock()
	if sess.clusterOpen.Load() {
		return nil
	}
	sess.mu.Lock()
	ended := sess.ended
	sess.mu.Unlock()
	if ended {
		return locktable.ErrSessionClosed
	}
	open := replica.Op{Kind: replica.OpOpen, Now: e.s.now(), Session: sess.id}
	r, err := e.c.Node.Propose(open, timeout)
	if err != nil {
		return clusterErr(err)
	}
	if r.Err != nil {
		return r.Err
	}
	sess.clusterOpen.Store(true)
	return nil
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

func (e raftEngine) acquire(ev *locktable.Events, sess *session, req locktable.Request, now int64, wait bool) (locktable.Key, locktable.Outcome, error) {
	r, err := e.propose(ev, sess, replica.Op{Kind: replica.OpAcquire, Now: now, Session: sess.id, Request: req, Wait: wait})
	if err != nil {
		return locktable.Key{}, 0, err
	}
	return r.Key, r.Outcome, nil
}

func (e raftEngine) acquireMulti(ev *locktable.Events, sess *session, reqs []locktable.Request, now int64, wait bool) ([]locktable.Key, locktable.Outcome, error) {
	r, err := e.propose(ev, sess, replica.Op{Kind: replica.OpAcquireMulti, Now: now, Session: sess.id, Requests: reqs, Wait: wait})
	if err != nil {
		return nil, 0, err
	}
	return r.Keys, r.Outcome, nil
}

func (e raftEngine) unlock(ev *locktable.Events, name string, key locktable.Key, now int64) error {
	_, err := e.propose(ev, nil, replica.Op{Kind: replica.OpUnlock, Now: now, Name: name, Key: key})
	return err
}

func (e raftEngine) renew(ev *locktable.Events, sess *session, name string, key locktable.Key, ttl, now int64) (int64, error) {
	r, err := e.propose(ev, sess, replica.Op{Kind: replica.OpRenew, Now: now, Session: sess.id, Name: name, Key: key, TTL: ttl})
	if err != nil {
		return 0, err
	}
	return r.Int, nil
}

func (e raftEngine) check(ev *locktable.Events, name string, key locktable.Key, now int64) (int64, error) {
	r, err := e.propose(ev, nil, replica.Op{Kind: replica.OpCheck, Now: now, Name: name, Key: key})
	if err != nil {
		return 0, err
	}
	return r.Int, nil
}

func (e raftEngine) forceUnlock(ev *locktable.Events, name string, now int64) (int, error) {
	r, err := e.propose(ev, nil, replica.Op{Kind: replica.OpForce, Now: now, Name: name})
	if err != nil {
		return 0, err
	}
	return int(r.Int), nil
}

// closeSession: a connection that ends because this server stops is not
// a disconnect (as with --data-dir on a single server): its session stays
// in the log with its bound holds, only its waiter leaves the queue, and
// the next leader's failover entry orphans the holds for RENEW to adopt —
// as after a crash, so that a rolling restart of the leader does not
// release every lock its clients hold.
func (e raftEngine) closeSession(ev *locktable.Events, sess *session, why locktable.Reason, now int64) error {
	stop := e.s.endedByStop(sess) // decided once: a retry after the stop began is still a close
	err := e.closeOnce(ev, sess, why, now, stop)
	if e.retryClose(err, sess, why) {
		e.retryCloseLater(sess, why, stop)
	}
	return err
}

// closeRetries bounds how many times a connection's close is tried again.
const closeRetries = 20

// retryClose reports whether a close that failed with err is to be tried
// again: it was not appended (a proposal that timed out in the queue of
// an overloaded leader), this node still leads and is not stopping, and
// the connection is gone (a RESET answers at once; its client may retry).
func (e raftEngine) retryClose(err error, sess *session, why locktable.Reason) bool {
	return err != nil && why != locktable.ReasonReset && !errors.Is(err, errMoved) &&
		!errors.Is(err, errOutcomeUnknown) && sess.clusterOpen.Load() && e.c.Node.IsLeader() && !e.s.isClosing()
}

// retryCloseLater tries a gone connection's close again in the background
// (it cannot send it again; without it, its holds would stay bound to
// nothing until the next leader change), after 10 ms doubling to 1 s, at
// most closeRetries times, while retryClose holds. The session is
// forgotten meanwhile (it no longer counts against --max-clients); Run
// waits for the retries (srv.ending), which end when the server stops.
func (e raftEngine) retryCloseLater(sess *session, why locktable.Reason, stop bool) {
	s := e.s
	s.goEnding(func() {
		var b backoff
		for range closeRetries {
			if !b.wait(s.shutdown) || s.isClosing() {
				return
			}
			var ev locktable.Events
			err := e.closeOnce(&ev, sess, why, s.now(), stop)
			s.commitQuietly(&ev)
			if !e.retryClose(err, sess, why) {
				return
			}
		}
		s.log.Warn("giving up closing a session in the cluster; the next leader's takeover orphans it", "client", sess.id)
	})
}

// closeOnce is one attempt of closeSession; stop: the session ends
// because the server stops (its waits are cancelled, its holds kept for
// the next leader).
func (e raftEngine) closeOnce(ev *locktable.Events, sess *session, why locktable.Reason, now int64, stop bool) error {
	s := e.s
	// A kill ends a session twice at once (the killer, then the victim's
	// owner): the second waits for the first's proposal, so that neither
	// returns before the holds are released.
	sess.closeMu.Lock()
	defer sess.closeMu.Unlock()
	if !sess.clusterOpen.Load() {
		return nil // nothing to close
	}
	if !e.leader() {
		return errMoved // a new leader orphans it
	}
	sess.clusterOpen.Store(false)
	op := replica.Op{Kind: replica.OpClose, Now: now, Session: sess.id, Reason: why}
	if stop {
		op.Kind = replica.OpCancel
	}
	_, err := e.propose(ev, nil, op)
	switch {
	case err == nil, errors.Is(err, locktable.ErrSessionClosed):
		return nil // closed now, or already (a takeover on this node orphaned it)
	case errors.Is(err, errOutcomeUnknown):
		// Appended: it may be applied yet. The session counts as closed
		// here; a new leader orphans whatever it still has.
		s.log.Warn("closing a session in the cluster", "client", sess.id, "err", err)
	default:
		// Not appended (not the leader, raft's enqueue timeout or
		// shutdown): the session is still open in the log.
		sess.clusterOpen.Store(true)
		if !errors.Is(err, errMoved) {
			s.log.Warn("closing a session in the cluster", "client", sess.id, "err", err)
		}
	}
	return err
}

func (e raftEngine) upgrade(ev *locktable.Events, sess *session, name string, key locktable.Key, rnd uint64, now int64) (locktable.Key, locktable.Outcome, error) {
	r, err := e.propose(ev, sess, replica.Op{Kind: replica.OpUpgrade, Now: now, Session: sess.id, Name: name, Key: key, Rand: rnd})
	if err != nil {
		return locktable.Key{}, 0, err
	}
	return r.Key, r.Outcome, nil
}

func (e raftEngine) downgrade(ev *locktable.Events, name string, key locktable.Key, now int64) error {
	_, err := e.propose(ev, nil, replica.Op{Kind: replica.OpDowngrade, Now: now, Name: name, Key: key})
	return err
}

func (e raftEngine) cancelWait(ev *locktable.Events, sess *session, now int64) bool {
	r, err := e.propose(ev, nil, replica.Op{Kind: replica.OpCancel, Now: now, Session: sess.id})
	if err != nil {
		// The waiter may still be queued: not cancelled (a proposal that
		// timed out in the queue of a leader that goes on leading), or
		// cancelled or not (leadership lost meanwhile). Its grant must
		// not come to a connection that took the LOCK as answered, so
		// the connection is closed (an unknown outcome, as for any
		// request in flight at a close): its end, or the next leader's
		// takeover, drops the waiter. The nil written meanwhile is never
		// sent.
		sess.kill()
		return true
	}
	return r.Bool
}

// expire: only the leader expires, and not while it stops (a stopping
// leader grants nothing more; the next one expires). A proposal that
// fails while the node goes on leading (it waited in an overloaded
// queue past its timeout) is tried again expireRetry later: the deadlines
// it was for are still due, and nothing else would wake the expirer.
func (e raftEngine) expire(ev *locktable.Events, now int64) (int64, bool) {
	if !e.leader() || e.s.isClosing() {
		return 0, false
	}
	r, err := e.propose(ev, nil, replica.Op{Kind: replica.OpExpire, Now: now, Max: expireBatch})
	if err != nil {
		if e.leader() && !e.s.isClosing() {
			return now + int64(expireRetry), false
		}
		return 0, false
	}
	return r.Int, r.Bool
}

// expireRetry is how long the leader waits to propose an expiry again
// after one failed.
const expireRetry = 20 * time.Millisecond

// watchLeadership runs in a cluster until done: on becoming leader it
// appends the failover entry (the old leader's connections are gone: their
// bound holds become orphans that RENEW adopts, their waiters leave); on
// losing leadership it closes every client connection, so that clients
// reconnect and are sent to the new leader.
func (e raftEngine) watchLeadership(done <-chan struct{}, grace time.Duration) {
	s, n := e.s, e.c.Node
	for {
		select {
		case <-done:
			return
		case leader := <-n.LeaderChanges():
			if leader {
				e.becameLeader(done, grace)
				continue
			}
			s.log.Info("lost leadership; closing client connections")
			for _, sess := range s.sessionsSorted() {
				sess.kill()
			}
		}
	}
}

// becameLeader is what a node does on becoming leader: it closes the
// connections whose sessions were opened in the log under an earlier
// term of its own (only a leader opens sessions, and it serves no lock
// command before its takeover entry, which orphans them), then takes
// over. raft's leadership channel keeps only the latest signal, so a
// node that lost leadership and won it back before this goroutine looked
// sees one "true" and never the "false" that closes them.
func (e raftEngine) becameLeader(done <-chan struct{}, grace time.Duration) {
	if e.leader() {
		// This term's takeover is applied already (a signal left over
		// from a flap that takeOver's retry covered): the sessions open
		// now were opened under it.
		return
	}
	for _, sess := range e.s.sessionsSorted() {
		if sess.clusterOpen.Load() {
			sess.kill()
		}
	}
	e.takeOver(done, grace)
}

// takeOver appends the takeover entry of a node that became leader, and
// tries again (after 10 ms, doubling to 1 s) while the proposal fails and
// the node still leads: until it is applied, the node answers lock
// commands -CLUSTERDOWN. It gives up when the node no longer leads (the
// next leadership change takes over) or done closes.
func (e raftEngine) takeOver(done <-chan struct{}, grace time.Duration) {
	s, n := e.s, e.c.Node
	became := func(id string) {
		s.log.Info("became leader", "node", id)
		s.expiry.schedule(s.now())
	}
	var b backoff
	for {
		id := n.LeaderID()
		var ev locktable.Events
		// The limits travel with the entry: every replica then refuses
		// what this leader's flags refuse (docs/raft.md).
		_, err := e.propose(&ev, nil, replica.Op{Kind: replica.OpFailover, Grace: int64(grace),
			Leader: id, LeaderAddr: e.c.Advertise, MaxWaiters: s.cfg.MaxWaiters, MaxHolds: s.cfg.MaxHolds})
		if err == nil {
			became(id)
			return
		}
		if !n.IsLeader() {
			s.log.Error("taking over as leader", "err", err)
			return
		}
		s.log.Error("taking over as leader; trying again", "err", err)
		if !b.wait(done) {
			return
		}
		if e.leader() { // applied after all: a second one would orphan the sessions opened since
			became(id)
			return
		}
	}
}

// backoff paces a retry: 10 ms, then twice as long each time, at most
// 1 s.
type backoff struct{ d time.Duration }

// wait sleeps for the next pause; false if done closed first.
func (b *backoff) wait(done <-chan struct{}) bool {
	b.d = min(max(2*b.d, 10*time.Millisecond), time.Second)
	select {
	case <-done:
		return false
	case <-time.After(b.d):
		return true
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
