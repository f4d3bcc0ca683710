package commands

import (
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/resp"
)

// pendingWait is a command whose reply waits for something outside its
// connection. One of:
//   - a LOCK queued in the lock table, waiting for its grant (name,
//     timeout);
//   - an AUTH waiting for its password check (check);
//   - a long command that lets its owner serve others between its steps
//     (resume: it runs the next step on the owner and returns what to
//     wait for next, nil when done);
//   - a command that blocks (a Raft proposal), run on a goroutine of its
//     own while its owner serves others (run: it returns what to wait for
//     next, nil when done; it writes its reply, and the owner does not
//     touch the connection's output meanwhile).
type pendingWait struct {
	name    string
	timeout time.Duration // 0: no limit
	since   time.Time     // when it was queued
	check   *passwordCheck
	resume  func() *pendingWait
	run     func() *pendingWait
	started bool // run: its goroutine was started
	multi   bool // an MLOCK: its nil is a null array
}

// timeOut ends a LOCK whose WAIT ran out: it leaves the queue and its
// reply is a null, or the error unblock (CLIENT UNBLOCK ... ERROR). False:
// it was granted meanwhile, and the grant is on its way.
func (s *Server) timeOut(sess *session, multi bool, unblock string) bool {
	var ev locktable.Events
	if !s.eng.cancelWait(&ev, sess, s.now()) {
		sess.commit(&ev, false)
		return false
	}
	sess.commit(&ev, false) // the requests behind it that it let in
	s.stats.waitTimeouts.Add(1)
	switch {
	case unblock != "":
		sess.fail(unblock)
	case multi:
		sess.w.NullArray()
	default:
		sess.w.Null()
	}
	return true
}

// grantReply writes the reply to a LOCK granted after waiting and counts
// it.
func (s *Server) grantReply(sess *session, pw *pendingWait, g locktable.Grant) {
	s.metrics.waitTime.Observe(time.Since(pw.since).Seconds())
	if s.debug {
		s.log.Debug("granted after wait", "lock", g.Name, "fence", g.Key.Fence, "client", sess.id, "waited_ms", time.Since(pw.since).Milliseconds())
	}
	if g.Lost {
		// A waiting UPGRADE whose shared hold ended meanwhile.
		sess.fail(resp.ErrNotHeld)
		return
	}
	s.stats.grants.Add(1)
	s.stats.waitGrants.Add(1)
	if g.Names != nil {
		sess.w.Array(len(g.Keys))
		for _, k := range g.Keys {
			sess.writeKey(k)
		}
		return
	}
	sess.writeKey(g.Key)
}

// setWaiting records the lock a queued request waits for ("": none) and
// its wait's sequence number (CLIENT LIST, CLIENT UNBLOCK).
func (sess *session) setWaiting(name string, seq uint32) {
	sess.mu.Lock()
	sess.waiting, sess.waitSeq = name, seq
	sess.mu.Unlock()
}

// unblock ends sess's queued request as its WAIT running out would (reply
// "", a null) or with the error reply, and reports whether it was waiting.
// A request granted meanwhile keeps its grant.
func (sess *session) unblock(reply string) bool {
	sess.mu.Lock()
	name, seq, c := sess.waiting, sess.waitSeq, sess.c
	sess.mu.Unlock()
	if name == "" || c == nil {
		return false
	}
	c.own.post(msg{c: c, kind: msgTimeout, seq: seq, unblock: reply})
	return true
}
