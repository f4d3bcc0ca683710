package commands

import (
	"time"

	"github.com/relock/relock/locktable"
	"github.com/tidwall/redcon"
)

// pendingWait is a command whose reply waits for something outside its
// connection: a LOCK queued in the lock table, waiting for its grant; an
// AUTH waiting for its password check (check set); or a long command
// that lets the loop serve others between its steps (resume set: it runs
// the next step and returns what to wait for next, nil when done).
type pendingWait struct {
	name    string
	timeout time.Duration // 0: no limit
	since   time.Time     // when it was queued
	check   *passwordCheck
	resume  func() *pendingWait
}

// maxQueued bounds the commands a client may pipeline behind a blocked
// LOCK that are read (and so buffered) before it is answered. Past it the
// loop stops reading until the LOCK resolves.
const maxQueued = 4096

// serveDetached serves a detached connection until it closes or the server
// stops, starting with the pending wait. A reader goroutine keeps reading
// commands so that a disconnect is noticed while a LOCK waits; commands
// that arrive meanwhile are answered after the LOCK, in order.
func (s *Server) serveDetached(sess *session, dc redcon.DetachedConn, wait *pendingWait) {
	done := make(chan struct{})
	cmds := make(chan redcon.Command, 64)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			cmd, err := dc.ReadCommand()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case cmds <- cmd:
			case <-done:
				return
			}
		}
	}()
	defer func() {
		close(done)
		dc.Close() // unblocks the reader
		<-readerDone
		s.endSession(sess)
	}()

	if dc.Flush() != nil {
		return
	}
	var queue []redcon.Command
	for {
		if wait != nil {
			if !s.awaitGrant(sess, wait, cmds, readErr, &queue) {
				return
			}
			wait = nil
		}
		var cmd redcon.Command
		if len(queue) > 0 {
			cmd = queue[0]
			queue = queue[1:]
		} else {
			select {
			case cmd = <-cmds:
			case <-readErr:
				return
			case <-s.shutdown:
				return
			}
		}
		wait = sess.exec(cmd.Args)
		dc.WriteRaw(sess.w.B)
		sess.w.Reset()
		if sess.quit {
			dc.Flush()
			return
		}
		if wait != nil || (len(queue) == 0 && len(cmds) == 0) {
			if dc.Flush() != nil {
				return
			}
		}
	}
}

// awaitGrant waits for the grant of the queued LOCK and writes its reply:
// the key, or a null when the WAIT ran out. It returns false when the
// connection went away or the server stops; the caller then ends the
// session, which takes the waiter out of the queue (or releases the hold if
// the grant came at the same moment).
func (s *Server) awaitGrant(sess *session, pw *pendingWait, cmds <-chan redcon.Command, readErr <-chan error, queue *[]redcon.Command) bool {
	sess.setWaiting(pw.name)
	defer sess.setWaiting("")
	var timeout <-chan time.Time
	if pw.timeout > 0 {
		t := time.NewTimer(pw.timeout)
		defer t.Stop()
		timeout = t.C
	}
	in := cmds
	for {
		select {
		case g := <-sess.grant:
			return s.replyGrant(sess, pw, g)
		case <-timeout:
			if s.timeOut(sess) {
				return s.flushReply(sess)
			}
			// Granted in the meantime: the grant is on its way.
			return s.replyGrant(sess, pw, <-sess.grant)
		case cmd := <-in:
			*queue = append(*queue, cmd)
			if len(*queue) >= maxQueued {
				in = nil
			}
		case <-readErr:
			return false
		case <-s.shutdown:
			return false
		}
	}
}

// timeOut ends a LOCK whose WAIT ran out: it leaves the queue and its
// reply is a null. False: it was granted meanwhile, and the grant is on
// its way.
func (s *Server) timeOut(sess *session) bool {
	if !s.cancelWait(sess) {
		return false
	}
	s.stats.waitTimeouts.Add(1)
	sess.w.Null()
	return true
}

func (s *Server) replyGrant(sess *session, pw *pendingWait, g locktable.Grant) bool {
	s.grantReply(sess, pw, g)
	return s.flushReply(sess)
}

// grantReply writes the reply to a LOCK granted after waiting and counts
// it.
func (s *Server) grantReply(sess *session, pw *pendingWait, g locktable.Grant) {
	s.metrics.waitTime.Observe(time.Since(pw.since).Seconds())
	if s.debug {
		s.log.Debug("granted after wait", "lock", g.Name, "fence", g.Key.Fence, "client", sess.id, "waited_ms", time.Since(pw.since).Milliseconds())
	}
	s.stats.grants.Add(1)
	s.stats.waitGrants.Add(1)
	sess.writeKey(g.Key)
}

func (s *Server) flushReply(sess *session) bool {
	sess.conn.WriteRaw(sess.w.B)
	sess.w.Reset()
	return sess.conn.(redcon.DetachedConn).Flush() == nil
}

func (sess *session) setWaiting(name string) {
	sess.mu.Lock()
	sess.waiting = name
	sess.mu.Unlock()
}
