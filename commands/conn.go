package commands

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/persist"
	"github.com/relock/relock/resp"
)

// The one connection lifecycle. A connection's bytes are read by its
// transport, framed and parsed here, its commands run (session.exec), and
// a command that cannot answer at once — a LOCK that queues, an AUTH whose
// password is being checked, a long LOCKS page — makes the connection wait
// for a completion: a grant, a WAIT running out, a finished check, the
// next step. Every completion is a message posted to the connection's
// owner and handled here, whatever the transport. Replies are written at
// the end of the owner's round, after the round's changes are committed.
//
// An owner is an event loop (many connections, epoll: netloop_linux.go) or
// a connection's own goroutine (goconn.go: TLS, other systems,
// --io goroutine). Both are thin drivers of what follows: they move bytes
// and sleep until something happens; everything else is written once.

const (
	readChunk   = 64 << 10 // bytes read per readable connection per round
	maxPending  = 1 << 20  // whole requests a connection may have buffered before reading stops
	maxReplyBuf = 1 << 20  // unsent output a connection may have before its requests stop being run
	// (unauthenticated connections: preAuthRequest and preAuthOutput)
	handoffWindow = time.Millisecond
	// A connection runs at most this many requests per round (an
	// unauthenticated one preAuthRound) before the others of its owner
	// get theirs: a client pipelining thousands of requests gets its
	// share of a loop, not all of it.
	roundRequests = 256
	preAuthRound  = 16
)

// driver is how an owner moves bytes; its methods run on the owner's
// goroutine.
type driver interface {
	// write sends as much of c's output (c.sess.w.B) as the transport
	// takes, removing what it sent; a loop leaves the rest for when the
	// socket is writable, a goroutine writes it all. An error closes c.
	write(c *conn) error
	// interest tells that c's wish to read or to write may have changed.
	interest(c *conn)
	// closeIO closes c's transport (once).
	closeIO(c *conn)
	// wake wakes the owner from its sleep (any goroutine).
	wake()
}

// connIO is the part of a connection's transport other goroutines may
// touch.
type connIO interface {
	// shutdown shuts the connection's socket down at once, so that its
	// client sees the close before kill returns.
	shutdown()
	// breakWrite makes a write blocked on the socket fail, closing it:
	// a goroutine-served connection's owner blocks in its writes, an
	// event loop never does (nothing to do).
	breakWrite()
}

// msg is a completion or an order posted to an owner.
type msg struct {
	c    *conn
	kind uint8
	seq  uint32 // msgTimeout, msgChecked, msgRan: the wait it is for
	// unblock: a msgTimeout from CLIENT UNBLOCK, not the WAIT; its reply
	// is this error instead of a null ("": a null, as a WAIT's).
	unblock string
	grant   locktable.Grant
	next    *pendingWait // msgRan: what the command waits for next
}

const (
	msgAdd     = iota + 1 // start serving c
	msgGrant              // c's queued LOCK was granted
	msgTimeout            // c's LOCK WAIT ran out, or CLIENT UNBLOCK ended it
	msgChecked            // c's password check is done
	msgRan                // c's command that ran off its owner is done
	msgPublish            // c has lock events queued (pubsub.go)
	msgKill               // close c
	msgStop               // close every connection and stop
)

// owner owns connections and drives their lifecycle. Everything but the
// inbox belongs to the owner's goroutine.
type owner struct {
	srv *Server
	drv driver

	dirty  []*conn // connections with output to write at the end of the round
	resume []*conn // connections whose output drained with input left to run
	later  []*conn // connections whose command goes on next round (pendingWait.resume)
	done   bool    // msgStop was handled

	// lastGrant is when the owner last granted a waiting LOCK (a
	// handoff chain may be running: see evloop.wait).
	lastGrant time.Time

	// With --fsync always, commands do not wait for their commit: the
	// round's changes are committed once, before any reply of the round
	// is written and before the round's grants reach their waiters (the
	// way Redis handles appendfsync always). sync is the commit: an event
	// loop commits on its own thread (Store.SyncHere), a connection's
	// goroutine joins the store's group commit (Store.Sync).
	deferCommits bool
	sync         func() error
	needSync     bool
	grants       []locktable.Grant // held back until the commit
	// inGate: the owner holds the server's gate (shared) for its round's
	// state-changing commands until the round's commit (enterRound).
	inGate bool

	// mu guards the inbox.
	mu       sync.Mutex
	inbox    []msg
	spare    []msg // the previous inbox, reused
	sleeping bool  // the owner is (about to be) asleep: post wakes it
	exited   bool  // the owner returned: messages are dropped
}

func (o *owner) init(s *Server, drv driver, syncHere bool) {
	o.srv, o.drv = s, drv
	if st := s.cfg.Store; st != nil && st.Mode() == persist.Always {
		o.deferCommits = true
		o.sync = st.Sync
		if syncHere {
			o.sync = st.SyncHere
		}
	}
}

// post hands m to the owner from any goroutine, waking it if it sleeps.
func (o *owner) post(m msg) bool {
	o.mu.Lock()
	if o.exited {
		o.mu.Unlock()
		return false
	}
	o.inbox = append(o.inbox, m)
	wake := o.sleeping
	o.sleeping = false
	o.mu.Unlock()
	if wake {
		o.drv.wake()
	}
	return true
}

// idle reports whether the owner has nothing to do but wait, and if so
// marks it asleep (post will wake it).
func (o *owner) idle() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.inbox) > 0 || len(o.resume) > 0 || len(o.later) > 0 {
		return false
	}
	o.sleeping = true
	return true
}

// awake marks the owner awake after a sleep.
func (o *owner) awake() {
	o.mu.Lock()
	o.sleeping = false
	o.mu.Unlock()
}

// exit drops every later message.
func (o *owner) exit() {
	o.mu.Lock()
	o.exited = true
	left := o.inbox
	o.inbox = nil
	o.mu.Unlock()
	// A grant posted after the last round is released, as one to a
	// closed connection is (post refuses later ones: conn.grant).
	for _, m := range left {
		if m.kind == msgGrant {
			o.srv.releaseUndelivered(m.grant, o.srv.commitQuietly)
		}
	}
}

// round finishes a round: runs what is pending, commits, writes replies.
func (o *owner) round() {
	o.resumeAll()
	o.runLater()
	o.drainInbox()
	o.commit()
	o.flush()
}

// drainInbox runs the posted messages, including those posted while it
// runs (a grant can post another).
func (o *owner) drainInbox() {
	for {
		o.mu.Lock()
		msgs := o.inbox
		o.inbox, o.spare = o.spare[:0], msgs
		o.mu.Unlock()
		if len(msgs) == 0 {
			return
		}
		for i := range msgs {
			o.handle(&msgs[i])
			msgs[i] = msg{}
		}
	}
}

// handle runs one message: every completion a connection can wait for is
// handled here.
func (o *owner) handle(m *msg) {
	c := m.c
	switch m.kind {
	case msgAdd:
		if !c.closed { // not killed before it was served
			o.drv.interest(c)
		}
	case msgGrant:
		if c.closed || c.killed.Load() {
			// Gone, or killed (its socket is shut down: a reply can
			// never reach the client; msgKill closes it next).
			o.srv.releaseUndelivered(m.grant, o.commitLater)
			return
		}
		if c.wait != nil && c.wait.run != nil {
			// The LOCK's proposal has not returned yet, or its WAIT is
			// being cancelled: the grant waits for it.
			g := m.grant
			c.early = &g
			return
		}
		if c.wait == nil || c.wait.check != nil || c.wait.resume != nil {
			o.srv.log.Error("grant without a waiting LOCK; releasing", "lock", m.grant.Name, "client", c.sess.id)
			o.srv.releaseUndelivered(m.grant, o.commitLater)
			return
		}
		o.srv.grantReply(c.sess, c.wait, m.grant)
		c.granted = true
		o.lastGrant = time.Now()
		c.endWait()
	case msgTimeout:
		if c.closed || c.wait == nil || m.seq != c.waitSeq {
			return
		}
		if o.srv.eng.blocking() {
			// Cancelling the wait is a proposal: off the owner.
			lock, sess, srv, unblock := c.wait, c.sess, o.srv, m.unblock
			lock.timeout = 0 // if it was granted meanwhile, wait for the grant only
			c.wait = nil
			sess.setWaiting("", 0) // set again if the LOCK waits on
			c.startWait(&pendingWait{since: lock.since, run: func() *pendingWait {
				if srv.timeOut(sess, lock.multi, unblock) {
					return nil
				}
				return lock
			}})
			return
		}
		if o.srv.timeOut(c.sess, c.wait.multi, m.unblock) {
			c.endWait()
		} // else granted meanwhile: the grant is in the inbox
	case msgChecked:
		if c.closed || c.wait == nil || m.seq != c.waitSeq {
			return
		}
		c.wait.check.done()
		c.endWait()
	case msgRan:
		// A closed c goes on: a grant kept for its command (early) must
		// be released below.
		if c.wait == nil || m.seq != c.waitSeq {
			return
		}
		c.wait = nil
		early := c.early
		c.early = nil
		if c.sess.sub != nil {
			o.publish(c) // what came while the command ran
		}
		if c.closed {
			if early != nil {
				o.srv.releaseUndelivered(*early, o.commitLater)
			}
			return
		}
		if m.next == nil {
			if early != nil {
				o.srv.releaseUndelivered(*early, o.commitLater)
			}
			c.serve()
			return
		}
		c.startWait(m.next)
		if early != nil {
			o.handle(&msg{c: c, kind: msgGrant, grant: *early})
		}
	case msgPublish:
		o.publish(c)
	case msgKill:
		o.close(c)
	case msgStop:
		o.done = true
	}
}

// resumeAll runs the input of connections whose output drained or whose
// share of the last round was spent; those that spend this round's share
// too wait for the next.
func (o *owner) resumeAll() {
	resume := o.resume
	o.resume = nil
	for i, c := range resume {
		resume[i] = nil
		c.resuming = false
		if !c.closed {
			c.serve()
		}
	}
	if o.resume == nil {
		o.resume = resume[:0]
	}
}

// runLater runs the next step of the commands that let others be served
// between their steps.
func (o *owner) runLater() {
	later := o.later
	o.later = nil
	for i, c := range later {
		later[i] = nil
		if c.closed || c.wait == nil || c.wait.resume == nil {
			continue
		}
		if next := c.wait.resume(); next != nil {
			c.wait = nil
			c.startWait(next)
			continue
		}
		c.endWait()
	}
	if o.later == nil {
		o.later = later[:0]
	}
}

// deferCommit takes the commit of a command of c (see session.commit), or
// of a change of no command (c nil: a session ending): releases are
// accounted now; grants, releases and c's reply if sync wait for the
// round's commit.
func (o *owner) deferCommit(c *conn, ev *locktable.Events, sync bool) {
	if !sync && len(ev.Grants) == 0 && len(ev.Releases) == 0 {
		return
	}
	if !o.deferCommits {
		o.srv.commit(ev, sync) // nothing to wait for: --fsync everysec or no, or no store
		return
	}
	o.needSync = true
	if sync && c != nil {
		c.syncDep = true
	}
	o.srv.accountReleases(ev.Releases)
	o.grants = append(o.grants, ev.Grants...)
}

// commitLater leaves the commit of ev to the round (see deferCommit).
func (o *owner) commitLater(ev *locktable.Events) { o.deferCommit(nil, ev, false) }

// commit makes the round's changes durable before any reply of the round
// is written, then delivers their grants. A reply may also reveal a change
// another goroutine made and has not yet committed (a release by
// disconnect or expiry that a CHECK shows): then the round commits too.
// Replies the grants produce here (waiters of this owner) may change more,
// hence the loop. If a commit fails, nothing it did not make durable is
// acknowledged: the connections whose replies depend on it are closed
// unanswered (their bound holds released with them, the holds granted to
// them this round undone: a detached one would outlive them), and the
// round's grants to waiters are undone (undoGrants).
func (o *owner) commit() {
	if !o.deferCommits {
		return
	}
	defer o.leaveRound()
	if !o.needSync && len(o.dirty) > 0 && o.srv.cfg.Store.Pending() {
		o.needSync = true
	}
	for o.needSync {
		o.needSync = false
		gs := o.grants
		o.grants = nil
		if err := o.sync(); err != nil {
			if err != persist.ErrClosed {
				o.srv.log.Error("commit failed; closing the connections it would have answered", "err", err)
			}
			for _, c := range o.dirty {
				if c.syncDep {
					// Closed in the round or not: its close released
					// its bound holds only.
					o.undoUncommitted(c)
					o.close(c)
				}
			}
			o.srv.undoGrants(gs, o.commitLater)
		} else {
			o.srv.deliverGrants(gs)
		}
		for _, c := range o.dirty {
			c.syncDep = false
			c.sess.uncommitted = c.sess.uncommitted[:0]
		}
		clear(gs)
		if o.grants == nil {
			o.grants = gs[:0]
		}
		o.drainInbox()
	}
}

// enterRound admits a state-changing command of one of o's connections
// when o defers commits: o holds the server's gate from the round's first
// such command until the round's commit. Leaving it when the command
// returned would let Run take the final state between the change and its
// commit: the change would be in the final state while its commit, then
// failing (the store closed), refused it to its client.
func (o *owner) enterRound() bool {
	if o.inGate {
		return true // once per round: a second shared hold of the gate could wait behind Run's
	}
	if !o.srv.enter() {
		return false
	}
	o.inGate = true
	return true
}

// leaveRound releases the gate enterRound took.
func (o *owner) leaveRound() {
	if o.inGate {
		o.inGate = false
		o.srv.leave()
	}
}

// undoUncommitted releases the holds granted at once to c's commands this
// round, whose commit failed.
func (o *owner) undoUncommitted(c *conn) {
	srv := o.srv
	var ev locktable.Events
	for _, h := range c.sess.uncommitted {
		srv.eng.unlock(&ev, h.name, h.key, srv.now())
	}
	c.sess.uncommitted = c.sess.uncommitted[:0]
	o.commitLater(&ev)
}

// flush writes the output of every connection that has some.
func (o *owner) flush() {
	// Grants first: the waiter's next request (its UNLOCK, in a handoff
	// chain) is what the other connections wait for.
	for _, c := range o.dirty {
		if c.granted && !c.closed {
			c.granted = false
			c.write()
		}
	}
	for i, c := range o.dirty {
		o.dirty[i] = nil
		c.dirty = false
		c.granted = false
		if !c.closed {
			c.write()
		}
	}
	o.dirty = o.dirty[:0]
}

// close closes c and ends its session (releasing its bound holds and its
// wait). Idempotent.
func (o *owner) close(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	o.drv.closeIO(c)
	if c.timer != nil {
		c.timer.Stop()
	}
	c.src, c.buf = nil, nil
	srv := o.srv
	srv.hub.unsubscribeAll(c.sess.sub)
	sess := c.sess
	srv.offOwner(o.commitLater, func(commit func(*locktable.Events)) {
		srv.endSessionBy(sess, locktable.ReasonDisconnect, commit)
	})
}

// conn is one client connection's lifecycle state. It belongs to its
// owner's goroutine; other goroutines reach it only through grant, kill
// and the session's mutex-guarded fields.
type conn struct {
	own  *owner
	io   connIO
	sess *session
	// killed is set (from any goroutine) when the connection is killed:
	// its socket is shut down before its owner closes it.
	killed atomic.Bool

	// src is the input read but not yet run: a tail of buf, or during
	// input a borrowed read buffer (most reads hold whole requests, which
	// then are never copied).
	src      []byte
	buf      []byte
	borrowed bool
	args     [][]byte // reused by ParseRequest
	scan     resp.FrameScanner

	wait    *pendingWait // the command waiting for a completion, if any
	waitSeq uint32
	timer   *time.Timer
	early   *locktable.Grant // a grant that came while its LOCK ran off the owner
	// protoErr is a protocol error read while an earlier command waited,
	// answered after that command's reply.
	protoErr string

	dirty    bool // in own.dirty
	resuming bool // in own.resume
	granted  bool // has a grant in its output: written first
	syncDep  bool // its output acknowledges changes not yet committed
	closing  bool // close once the output is written (QUIT, protocol error)
	closed   bool
	partial  bool // src ends in a request not yet whole: read on, whatever its size
}

func newConn(s *Server, io connIO) *conn {
	return &conn{io: io, scan: resp.NewFrameScanner(int64(s.cfg.MaxArgs), int64(s.cfg.MaxBulk))}
}

// input takes bytes the transport read (b may be borrowed: it is copied
// if anything of it is left) and runs the requests that are complete.
func (c *conn) input(b []byte) {
	if c.protoErr != "" {
		return // after a protocol error nothing more is run
	}
	if msg := feedAs(&c.scan, b, c.sess.authed.Load()); msg != "" {
		c.closing = true
		if c.wait != nil {
			// An earlier command waits (a queued LOCK, a password
			// check, a command running off the owner): its reply comes
			// first, then the error (serve, once the wait ends).
			c.protoErr = "ERR Protocol error: " + msg
			return
		}
		c.sess.w.Error("ERR Protocol error: " + msg)
		c.markDirty()
		return
	}
	if len(c.src) == 0 {
		c.src, c.borrowed = b, true
	} else {
		n := copy(c.buf, c.src) // src is a tail of buf
		c.buf = append(c.buf[:n], b...)
		c.src = c.buf
	}
	c.serve()
	if c.borrowed {
		c.borrowed = false
		if len(c.src) > 0 && !c.closed {
			c.buf = append(c.buf[:0], c.src...)
			c.src = c.buf
		} else {
			c.src = nil
		}
	}
}

// readRoom is how many bytes c may take in one read.
func (c *conn) readRoom() int {
	if !c.sess.authed.Load() {
		return max(preAuthRequest+1-len(c.src), 1)
	}
	return readChunk
}

// serve runs c's complete requests until it has none left, it waits, its
// output is full or it is closing.
func (c *conn) serve() {
	sess := c.sess
	c.partial = false
	if c.protoErr != "" && c.wait == nil {
		sess.w.Error(c.protoErr) // after the reply of the command it came behind
		c.protoErr = ""
	}
	budget := roundRequests
	if !sess.authed.Load() {
		budget = preAuthRound
	}
	for !c.closed && !c.closing && c.wait == nil && len(sess.w.B) < c.outputBound() && len(c.src) > 0 {
		if budget == 0 {
			// Its share of this round is spent: the rest runs next
			// round, after every other connection's.
			if !c.resuming {
				c.resuming = true
				c.own.resume = append(c.own.resume, c)
			}
			break
		}
		budget--
		args, n, err := resp.ParseRequest(c.src, c.args)
		if err != nil {
			// A protocol error: tell the client and close, as Redis does.
			sess.w.Error("ERR " + err.Error())
			c.closing = true
			break
		}
		if n == 0 {
			c.partial = true // the rest has not arrived
			break
		}
		c.src = c.src[n:]
		if len(args) == 0 {
			continue // a blank inline line
		}
		c.args = args
		wait := sess.exec(args)
		clear(args) // let go of the input
		if sess.quit {
			c.closing = true
		} else if wait != nil {
			c.startWait(wait)
		}
	}
	if len(c.src) == 0 && !c.borrowed {
		c.src = nil
		if cap(c.buf) > readChunk {
			c.buf = nil // a burst need not keep its buffer
		}
	}
	if c.hasOutput() || c.closing {
		c.markDirty()
	}
	c.own.drv.interest(c)
}

func (c *conn) markDirty() {
	if !c.dirty {
		c.dirty = true
		c.own.dirty = append(c.own.dirty, c)
	}
}

// write sends c's output; once it is all sent, a closing c is closed and
// one whose input was left for a full output buffer runs it next round
// (not now: a reply written now would not wait for its commit).
func (c *conn) write() {
	if c.running() {
		return // its output is the running command's
	}
	if err := c.own.drv.write(c); err != nil {
		c.own.close(c)
		return
	}
	w := &c.sess.w
	if len(w.B) == 0 {
		if cap(w.B) > maxReplyBuf {
			w.B = nil // a burst of replies need not keep its buffer
		}
		if c.closing {
			c.own.close(c)
			return
		}
		if c.wait == nil && len(c.src) > 0 && !c.resuming {
			c.resuming = true
			c.own.resume = append(c.own.resume, c)
		}
		if c.wait != nil && c.wait.run != nil {
			c.startRun()
		}
	}
	c.own.drv.interest(c)
}

// running reports whether c's command runs off the owner now: its output
// (sess.w) and session state are that goroutine's until msgRan.
func (c *conn) running() bool { return c.wait != nil && c.wait.run != nil && c.wait.started }

// hasOutput reports whether c has output the owner may write.
func (c *conn) hasOutput() bool { return !c.running() && len(c.sess.w.B) > 0 }

// startRun starts c's blocking command on a goroutine of its own, once
// c's earlier output is written (the command writes its reply into the
// same buffer).
func (c *conn) startRun() {
	pw := c.wait
	if pw.started || len(c.sess.w.B) > 0 {
		return // running, or to be started when the output is written
	}
	pw.started = true
	seq, own, srv := c.waitSeq, c.own, c.own.srv
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		next := pw.run()
		own.post(msg{c: c, kind: msgRan, seq: seq, next: next})
	}()
}

// wantsInput reports whether c may buffer more input: not while closing,
// nor while it holds a bound's worth of whole requests it has not run; a
// request not yet whole is read on whatever its size (the frame scanner
// bounds it by the configured limits).
func (c *conn) wantsInput() bool {
	if c.protoErr != "" && !c.closed {
		// Closing behind a waiting command: still read (and drop) what
		// comes, so that the client's hang-up is seen and ends the wait.
		return true
	}
	return !c.closed && !c.closing && (len(c.src) < c.inputBound() || c.partial)
}

// inputBound is how much input of whole requests c may have buffered
// before reading stops until they have run.
func (c *conn) inputBound() int {
	if c.sess.authed.Load() {
		return maxPending
	}
	return preAuthRequest
}

// outputBound is how much unsent output c may have before its requests
// stop being run until the client reads.
func (c *conn) outputBound() int {
	if c.sess.authed.Load() {
		return maxReplyBuf
	}
	return preAuthOutput
}

// commitLater leaves the commit of a command of c to the end of the round
// (see owner.deferCommit) when its owner defers commits; false: commit now.
func (c *conn) commitLater(ev *locktable.Events, sync bool) bool {
	if !c.own.deferCommits {
		return false
	}
	c.own.deferCommit(c, ev, sync)
	return true
}

// grant hands c the grant of its queued LOCK, from any goroutine. An
// owner that has exited (a goroutine-served connection that closed) takes
// no message: the grant is released here, as its owner would have
// released a grant to a closed connection.
func (c *conn) grant(g locktable.Grant) {
	if !c.own.post(msg{c: c, kind: msgGrant, grant: g}) {
		srv := c.own.srv
		srv.releaseUndelivered(g, srv.commitQuietly)
	}
}

// kill closes c from any goroutine: its socket is shut down at once (the
// client sees the close before kill returns), and its owner then closes
// it and ends its session.
func (c *conn) kill() {
	c.killed.Store(true)
	c.io.shutdown()
	c.own.post(msg{c: c, kind: msgKill})
}

// startWait parks c on the command that waits; its later requests wait in
// src.
func (c *conn) startWait(pw *pendingWait) {
	c.wait = pw
	c.waitSeq++
	seq, own, srv := c.waitSeq, c.own, c.own.srv
	switch {
	case pw.run != nil:
		c.startRun()
	case pw.resume != nil:
		own.later = append(own.later, c)
	case pw.check != nil:
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			srv.checkPassword(pw.check)
			own.post(msg{c: c, kind: msgChecked, seq: seq})
		}()
	default:
		c.sess.setWaiting(pw.name, seq)
		if pw.timeout > 0 {
			c.timer = time.AfterFunc(pw.timeout, func() {
				own.post(msg{c: c, kind: msgTimeout, seq: seq})
			})
		}
	}
}

// endWait resumes c after its waiting command's reply was written.
func (c *conn) endWait() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if c.wait.name != "" {
		c.sess.setWaiting("", 0)
	}
	c.wait = nil
	c.serve()
}
