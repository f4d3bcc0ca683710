//go:build linux

package commands

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/persist"
)

// The event loop: plain TCP and unix-socket connections are served the way
// Redis serves them, by a few goroutines that each own an epoll set and its
// connections (one per core, each on its own thread): wait for readiness,
// read once, run every complete command, write every reply at the end of
// the round. A round trip then costs one read and one write, where a
// goroutine per connection also pays a read that finds nothing and a trip
// through the scheduler to park and wake (SPEC §6: per-request I/O decides
// the race). Commands, replies and the lock table are the same as on the
// redcon path, which still serves TLS and Raft clusters (see useLoops).
// With --fsync always a loop commits once per round, before it writes the
// round's replies (see commit).

const (
	loopEvents  = 256      // readiness events taken per round
	readChunk   = 64 << 10 // bytes read per readable connection per round
	maxPending  = 1 << 20  // complete requests a connection may have buffered before reading stops
	maxReplyBuf = 1 << 20  // unsent output a connection may have before parsing stops
	// (unauthenticated connections: preAuthRequest and preAuthOutput)
	yieldEvery    = time.Millisecond
	spinFor       = 150 * time.Microsecond
	handoffWindow = time.Millisecond
	epollIn       = syscall.EPOLLIN | syscall.EPOLLRDHUP
	epollOut      = syscall.EPOLLOUT
	epollClosed   = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
)

// loopMsg is work handed to a loop by other goroutines (or itself).
type loopMsg struct {
	c     *lconn
	kind  uint8
	seq   uint32 // msgTimeout: the wait it is for
	grant locktable.Grant
}

const (
	msgAdd     = iota + 1 // start serving c
	msgGrant              // c's queued LOCK was granted
	msgTimeout            // c's LOCK WAIT ran out
	msgChecked            // c's password check is done
	msgKill               // close c
	msgStop               // close every connection and return
)

// evloop is one event loop. Everything but mu's fields belongs to the
// loop's goroutine.
type evloop struct {
	srv    *Server
	epfd   int
	wakefd int // eventfd: wakes the loop from epoll_wait when a message comes
	conns  map[int]*lconn
	events []syscall.EpollEvent
	rbuf   []byte
	dirty  []*lconn // connections with output to write at the end of the round
	resume []*lconn // connections whose output drained with input left to run
	later  []*lconn // connections whose command goes on next round (pendingWait.resume)
	done   bool
	// lastGrant is when the loop last granted a waiting LOCK. Within
	// handoffWindow of one, a handoff chain may be running (each grantee's
	// UNLOCK passing the lock on at once), so the loop polls for up to
	// spinFor before it sleeps: the next link then does not pay for
	// waking an idle CPU (SPEC §6: contended handoffs). A loop that has
	// not granted lately never spins.
	lastGrant time.Time

	// With --fsync always, commands do not wait for their commit: the
	// round's changes are committed once (Store.SyncHere: one fdatasync
	// on the loop's thread), before any reply of the round is written and
	// before the round's grants reach their waiters: the way Redis
	// handles appendfsync always.
	deferCommits bool
	needSync     bool
	grants       []locktable.Grant // held back until the commit

	mu       sync.Mutex
	inbox    []loopMsg
	spare    []loopMsg // the previous inbox, reused
	sleeping bool      // the loop is (about to be) in a blocking epoll_wait
	exited   bool      // the loop returned: messages are dropped
}

// lconn is one connection of a loop.
type lconn struct {
	loop *evloop
	fd   int
	sess *session

	// src is the input read but not yet run: a tail of buf, or during
	// read of the loop's read buffer (borrowed: most reads hold whole
	// requests, which then are never copied).
	src      []byte
	buf      []byte
	borrowed bool
	args     [][]byte // reused by parseRequest
	scan     frameScanner

	wait    *pendingWait // the LOCK waiting for its grant, if any
	waitSeq uint32
	timer   *time.Timer

	// fdMu makes closing fd (the loop) and shutting it down (kill, from
	// any goroutine) exclusive, so that kill never touches a number the
	// kernel has handed to a newer connection. closed is written under it.
	fdMu sync.Mutex

	interest uint32 // the epoll events asked for
	dirty    bool   // in loop.dirty
	resuming bool   // in loop.resume
	granted  bool   // has a grant in its output: written first
	syncDep  bool   // its output acknowledges changes not yet committed
	closing  bool   // close once the output is written (QUIT, protocol error)
	partial  bool   // src ends in a request not yet whole: read on, whatever its size
	closed   bool
}

// useLoops reports whether connections are served by event loops: on
// Linux, unless the server speaks TLS or is in a Raft cluster (whose
// proposals would block the loop), or the operator asked for goroutines.
func (s *Server) useLoops() bool {
	switch {
	case s.cfg.IO == "goroutine", s.cfg.TLS != nil, s.cfg.Cluster != nil:
		return false
	}
	return true
}

// startLoops starts the event loops and one accept goroutine per
// listener. It returns false if it cannot (the caller serves with redcon).
func (s *Server) startLoops(lns []net.Listener) (bool, error) {
	if !s.useLoops() {
		return false, nil
	}
	// One loop per P. A loop blocked in epoll_wait holds its P only
	// until the runtime's monitor hands it to other goroutines (timers,
	// the committer, metrics); a busy one yields every yieldEvery.
	n := s.cfg.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	loops := make([]*evloop, 0, n)
	for range n {
		l, err := newLoop(s)
		if err != nil {
			for _, l := range loops {
				l.closeFDs()
			}
			return false, err
		}
		loops = append(loops, l)
	}
	s.loops = loops
	for _, l := range loops {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			l.run()
		}()
	}
	for _, ln := range lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.acceptLoop(ln, loops)
		}()
	}
	return true, nil
}

// stopLoops makes every loop close its connections and return.
func (s *Server) stopLoops() {
	for _, l := range s.loops {
		l.post(loopMsg{kind: msgStop})
	}
}

func newLoop(s *Server) (*evloop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, errno
	}
	l := &evloop{
		srv:    s,
		epfd:   epfd,
		wakefd: int(r),
		conns:  make(map[int]*lconn),
		events: make([]syscall.EpollEvent, loopEvents),
		rbuf:   make([]byte, readChunk),

		deferCommits: s.cfg.Store != nil && s.cfg.Store.Mode() == persist.Always,
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wakefd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wakefd, &ev); err != nil {
		l.closeFDs()
		return nil, err
	}
	return l, nil
}

func (l *evloop) closeFDs() {
	syscall.Close(l.epfd)
	syscall.Close(l.wakefd)
}

// post hands m to the loop from any goroutine, waking it if it sleeps.
func (l *evloop) post(m loopMsg) {
	l.mu.Lock()
	if l.exited {
		l.mu.Unlock()
		return
	}
	l.inbox = append(l.inbox, m)
	wake := l.sleeping
	l.sleeping = false
	l.mu.Unlock()
	if wake {
		one := [8]byte{1}
		syscall.Write(l.wakefd, one[:])
	}
}

// run is the loop: wait for readiness, serve what is ready and what was
// posted, write the replies, until stopped.
func (l *evloop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		l.mu.Lock()
		l.exited = true
		l.mu.Unlock()
		l.closeFDs()
	}()
	yielded := time.Now()
	for !l.done {
		l.mu.Lock()
		timeout := 0
		if len(l.inbox) == 0 && len(l.resume) == 0 && len(l.later) == 0 {
			l.sleeping = true
			timeout = -1
		}
		l.mu.Unlock()
		n, err := l.wait(timeout)
		if timeout != 0 {
			l.mu.Lock()
			l.sleeping = false
			l.mu.Unlock()
		}
		if err != nil && err != syscall.EINTR {
			l.srv.log.Error("epoll_wait", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			e := &l.events[i]
			if int(e.Fd) == l.wakefd {
				var b [8]byte
				syscall.Read(l.wakefd, b[:])
				continue
			}
			if c := l.conns[int(e.Fd)]; c != nil {
				l.ready(c, e.Events)
			}
		}
		l.resumeAll()
		l.runLater()
		l.drainInbox()
		l.commit()
		l.flush()
		if now := time.Now(); now.Sub(yielded) >= yieldEvery {
			// A busy loop never parks: let timers and the accept
			// goroutines have the thread now and then.
			runtime.Gosched()
			yielded = now
		}
	}
}

// wait is epoll_wait, polling first for up to spinFor while a handoff
// chain may be running.
func (l *evloop) wait(timeout int) (int, error) {
	if timeout != 0 && time.Since(l.lastGrant) <= handoffWindow {
		for start := time.Now(); time.Since(start) < spinFor; {
			if n, err := syscall.EpollWait(l.epfd, l.events, 0); n != 0 || err != nil {
				return n, err
			}
		}
	}
	return syscall.EpollWait(l.epfd, l.events, timeout)
}

// resumeAll runs the input of connections whose output drained.
func (l *evloop) resumeAll() {
	for i := 0; i < len(l.resume); i++ {
		c := l.resume[i]
		l.resume[i] = nil
		c.resuming = false
		if !c.closed {
			l.serve(c)
		}
	}
	l.resume = l.resume[:0]
}

// runLater runs the next step of the commands that let others be served
// between their steps.
func (l *evloop) runLater() {
	later := l.later
	l.later = nil
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
	if l.later == nil {
		l.later = later[:0]
	}
}

// deferCommit takes the commit of a command of c (see session.commit), or
// of a session ending on this loop (c nil): releases are accounted now;
// grants, releases and c's reply if sync wait for the round's commit.
func (l *evloop) deferCommit(c *lconn, ev *locktable.Events, sync bool) {
	if !sync && len(ev.Grants) == 0 && len(ev.Releases) == 0 {
		return
	}
	if !l.deferCommits {
		l.srv.commit(ev, sync) // nothing to wait for: --fsync everysec or no, or no store
		return
	}
	l.needSync = true
	if sync && c != nil {
		c.syncDep = true
	}
	l.srv.accountReleases(ev.Releases)
	l.grants = append(l.grants, ev.Grants...)
}

// commit makes the round's changes durable before any reply of the round
// is written, then delivers their grants. A reply may also reveal a change
// another goroutine made and has not yet committed (a release by
// disconnect or expiry that a CHECK shows): then the round commits too.
// Replies the grants produce here (waiters of this loop) may change more,
// hence the loop. If a commit fails, nothing it did not make durable is
// acknowledged: the connections whose replies depend on it are closed
// unanswered (their bound holds released with them, the holds granted to
// them this round undone: a detached one would outlive them), and the
// round's grants to waiters are undone (undoGrants).
func (l *evloop) commit() {
	if !l.deferCommits {
		return
	}
	st := l.srv.cfg.Store
	if !l.needSync && len(l.dirty) > 0 && st.Pending() {
		l.needSync = true
	}
	for l.needSync {
		l.needSync = false
		gs := l.grants
		l.grants = nil
		if err := st.SyncHere(); err != nil {
			if err != persist.ErrClosed {
				l.srv.log.Error("commit failed; closing the connections it would have answered", "err", err)
			}
			for _, c := range l.dirty {
				if c.syncDep && !c.closed {
					l.undoUncommitted(c)
					l.close(c)
				}
			}
			l.srv.undoGrants(gs, l.commitLater)
		} else {
			l.srv.deliverGrants(gs)
		}
		for _, c := range l.dirty {
			c.syncDep = false
			c.sess.uncommitted = c.sess.uncommitted[:0]
		}
		clear(gs)
		if l.grants == nil {
			l.grants = gs[:0]
		}
		l.drainInbox()
	}
}

// commitLater leaves the commit of ev to the round (see deferCommit).
func (l *evloop) commitLater(ev *locktable.Events) { l.deferCommit(nil, ev, false) }

// undoUncommitted releases the holds granted at once to c's commands this
// round, whose commit failed.
func (l *evloop) undoUncommitted(c *lconn) {
	srv := l.srv
	var ev locktable.Events
	for _, h := range c.sess.uncommitted {
		srv.unlock(&ev, h.name, h.key, srv.now())
	}
	c.sess.uncommitted = c.sess.uncommitted[:0]
	l.commitLater(&ev)
}

// drainInbox runs the posted messages, including those posted while it
// runs (a grant can post another).
func (l *evloop) drainInbox() {
	for {
		l.mu.Lock()
		msgs := l.inbox
		l.inbox, l.spare = l.spare[:0], msgs
		l.mu.Unlock()
		if len(msgs) == 0 {
			return
		}
		for i := range msgs {
			l.handle(&msgs[i])
			msgs[i] = loopMsg{}
		}
	}
}

func (l *evloop) handle(m *loopMsg) {
	c := m.c
	switch m.kind {
	case msgAdd:
		if c.closed {
			return // killed before it was served
		}
		c.interest = epollIn
		ev := syscall.EpollEvent{Events: c.interest, Fd: int32(c.fd)}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			l.srv.log.Error("epoll_ctl add", "err", err)
			l.close(c)
			return
		}
		l.conns[c.fd] = c
	case msgGrant:
		if c.closed {
			l.srv.releaseUndelivered(m.grant, l.commitLater)
			return
		}
		if c.wait == nil {
			l.srv.log.Error("grant without a waiting LOCK; releasing", "lock", m.grant.Name, "client", c.sess.id)
			l.srv.releaseUndelivered(m.grant, l.commitLater)
			return
		}
		l.srv.grantReply(c.sess, c.wait, m.grant)
		c.endWait()
		c.granted = true
		l.lastGrant = time.Now()
	case msgTimeout:
		if c.closed || c.wait == nil || m.seq != c.waitSeq {
			return
		}
		if l.srv.timeOut(c.sess) {
			c.endWait()
		} // else granted meanwhile: the grant is in the inbox
	case msgChecked:
		if c.closed || c.wait == nil || m.seq != c.waitSeq {
			return
		}
		c.wait.check.done()
		c.endWait()
	case msgKill:
		l.close(c)
	case msgStop:
		for _, c := range l.conns {
			l.close(c)
		}
		l.done = true
	}
}

// ready serves epoll events of c.
func (l *evloop) ready(c *lconn, events uint32) {
	if events&epollOut != 0 {
		l.write(c)
		if c.closed {
			return
		}
	}
	if events&(syscall.EPOLLIN|epollClosed) != 0 && c.interest&syscall.EPOLLIN != 0 {
		l.read(c)
	} else if events&epollClosed != 0 {
		// Not reading (its input is full or it is closing): a hang-up
		// still ends it at once.
		l.close(c)
	}
}

// read takes what c has sent (one read per round, as Redis does) and runs
// the commands that are complete.
func (l *evloop) read(c *lconn) {
	authed := c.sess.authed.Load()
	room := l.rbuf
	if !authed {
		// Read no more than an unauthenticated request may be.
		room = room[:max(preAuthRequest+1-len(c.src), 1)]
	}
	n, err := syscall.Read(c.fd, room)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if n <= 0 || err != nil {
		l.close(c)
		return
	}
	b := l.rbuf[:n]
	if msg := c.scan.feedAs(b, authed); msg != "" {
		c.sess.w.Error("ERR Protocol error: " + msg)
		c.closing = true
		l.markDirty(c)
		return
	}
	if len(c.src) == 0 {
		c.src, c.borrowed = b, true
	} else {
		n := copy(c.buf, c.src) // src is a tail of buf
		c.buf = append(c.buf[:n], b...)
		c.src = c.buf
	}
	l.serve(c)
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

// serve runs c's complete commands until it has none left, its LOCK
// waits, its output is full or it is closing.
func (l *evloop) serve(c *lconn) {
	sess := c.sess
	c.partial = false
	for !c.closed && !c.closing && c.wait == nil && len(sess.w.B) < c.outputBound() && len(c.src) > 0 {
		args, n, err := parseRequest(c.src, c.args)
		if err != nil {
			// A protocol error: tell the client and close, as redcon
			// (and Redis) do.
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
	if len(sess.w.B) > 0 || c.closing {
		l.markDirty(c)
	}
	l.setInterest(c)
}

func (l *evloop) markDirty(c *lconn) {
	if !c.dirty {
		c.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

// flush writes the output of every connection that has some.
func (l *evloop) flush() {
	// Grants first: the waiter's next request (its UNLOCK, in a handoff
	// chain) is what the other connections wait for.
	for _, c := range l.dirty {
		if c.granted && !c.closed {
			c.granted = false
			l.write(c)
		}
	}
	for i, c := range l.dirty {
		l.dirty[i] = nil
		c.dirty = false
		c.granted = false
		if !c.closed {
			l.write(c)
		}
	}
	l.dirty = l.dirty[:0]
}

// write sends as much of c's output as the socket takes; the rest waits
// for EPOLLOUT.
func (l *evloop) write(c *lconn) {
	w := &c.sess.w
	for len(w.B) > 0 {
		n, err := syscall.Write(c.fd, w.B)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			break
		}
		if err != nil {
			l.close(c)
			return
		}
		rest := copy(w.B, w.B[n:])
		w.B = w.B[:rest]
	}
	if len(w.B) == 0 {
		if cap(w.B) > maxReplyBuf {
			w.B = nil // a burst of replies need not keep its buffer
		}
		if c.closing {
			l.close(c)
			return
		}
		if c.wait == nil && len(c.src) > 0 && !c.resuming {
			// Parsing stopped for a full output buffer: run the rest
			// next round (not here: a reply written now would not wait
			// for its commit).
			c.resuming = true
			l.resume = append(l.resume, c)
		}
	}
	l.setInterest(c)
}

// setInterest asks epoll for input while c may buffer more, and for
// writability while it has output the socket did not take.
func (l *evloop) setInterest(c *lconn) {
	if c.closed {
		return
	}
	want := uint32(syscall.EPOLLRDHUP)
	if !c.closing && (len(c.src) < c.inputBound() || c.partial) {
		// A request not yet whole is read on whatever its size: the
		// frame scanner bounds it by the configured limits.
		want |= syscall.EPOLLIN
	}
	if len(c.sess.w.B) > 0 && !c.dirty {
		want |= epollOut
	}
	if want == c.interest {
		return
	}
	c.interest = want
	ev := syscall.EpollEvent{Events: want, Fd: int32(c.fd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		l.close(c)
	}
}

// inputBound is how much input of whole requests c may have buffered
// before reading stops until they have run.
func (c *lconn) inputBound() int {
	if c.sess.authed.Load() {
		return maxPending
	}
	return preAuthRequest
}

// outputBound is how much unsent output c may have before its requests
// stop being run until the client reads.
func (c *lconn) outputBound() int {
	if c.sess.authed.Load() {
		return maxReplyBuf
	}
	return preAuthOutput
}

// close closes c and ends its session (releasing its bound holds and its
// wait). Idempotent.
func (l *evloop) close(c *lconn) {
	if c.closed {
		return
	}
	c.fdMu.Lock()
	c.closed = true
	syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	syscall.Close(c.fd)
	c.fdMu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	if l.conns[c.fd] == c {
		delete(l.conns, c.fd)
	}
	c.src, c.buf = nil, nil
	l.srv.endSessionBy(c.sess, l.commitLater)
}

// commitLater leaves the commit of a command of c to the end of the round
// (see evloop.deferCommit) when the loop defers commits; false: commit now.
func (c *lconn) commitLater(ev *locktable.Events, sync bool) bool {
	if !c.loop.deferCommits {
		return false
	}
	c.loop.deferCommit(c, ev, sync)
	return true
}

// grant hands c the grant of its queued LOCK, from any goroutine.
func (c *lconn) grant(g locktable.Grant) {
	c.loop.post(loopMsg{c: c, kind: msgGrant, grant: g})
}

// kill closes c from any goroutine: its socket is shut down at once (the
// client sees the close before kill returns, as with a goroutine's
// net.Conn.Close), and the loop then closes it and ends its session.
func (c *lconn) kill() {
	c.fdMu.Lock()
	if !c.closed {
		syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
	}
	c.fdMu.Unlock()
	c.loop.post(loopMsg{c: c, kind: msgKill})
}

// startWait parks c on its queued LOCK or its password check; its later
// commands wait in src.
func (c *lconn) startWait(pw *pendingWait) {
	c.wait = pw
	c.waitSeq++
	if pw.resume != nil {
		c.loop.later = append(c.loop.later, c)
		return
	}
	if pc := pw.check; pc != nil {
		seq, srv := c.waitSeq, c.loop.srv
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			srv.checkPassword(pc)
			c.loop.post(loopMsg{c: c, kind: msgChecked, seq: seq})
		}()
		return
	}
	c.sess.setWaiting(pw.name)
	if pw.timeout > 0 {
		seq := c.waitSeq
		c.timer = time.AfterFunc(pw.timeout, func() {
			c.loop.post(loopMsg{c: c, kind: msgTimeout, seq: seq})
		})
	}
}

// endWait resumes c after its LOCK's reply was written.
func (c *lconn) endWait() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.wait = nil
	c.sess.setWaiting("")
	c.loop.serve(c)
}

// acceptLoop accepts connections on ln (through Go's poller) and hands
// them to the loops in turn, until the server shuts down.
func (s *Server) acceptLoop(ln net.Listener, loops []*evloop) {
	// A listener's RawConn cannot wait for readability: poll a duplicate
	// of its socket as a file instead, closed at shutdown.
	f, err := pollableDup(ln)
	if err != nil {
		s.log.Error("listener", "addr", ln.Addr().String(), "err", err)
		return
	}
	defer f.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-s.shutdown:
			f.Close() // ends the accept below
		case <-done:
		}
	}()
	rc, err := f.SyscallConn()
	if err != nil {
		s.log.Error("listener", "addr", ln.Addr().String(), "err", err)
		return
	}
	laddr := ln.Addr()
	next := 0
	backoff := 5 * time.Millisecond
	for {
		var fd int
		var sa syscall.Sockaddr
		var aerr error
		err := rc.Read(func(lfd uintptr) bool {
			fd, sa, aerr = syscall.Accept4(int(lfd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			return aerr != syscall.EAGAIN
		})
		if err != nil {
			return // shutting down
		}
		switch {
		case aerr == syscall.ECONNABORTED || aerr == syscall.EINTR:
			continue
		case aerr != nil:
			// Out of file descriptors, most likely: wait for some to
			// close rather than spin.
			s.log.Error("accept", "err", aerr, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.shutdown:
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		s.serveFD(fd, sa, laddr, loops[next])
		next = (next + 1) % len(loops)
	}
}

// pollableDup returns a non-blocking duplicate of ln's socket as a file
// that Go's poller waits on.
func pollableDup(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket listener")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dup, derr = syscall.Dup(int(fd))
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	syscall.CloseOnExec(dup)
	if err := syscall.SetNonblock(dup, true); err != nil {
		syscall.Close(dup)
		return nil, err
	}
	return os.NewFile(uintptr(dup), ln.Addr().String()), nil
}

// serveFD admits an accepted connection and gives it to loop l.
func (s *Server) serveFD(fd int, sa syscall.Sockaddr, laddr net.Addr, l *evloop) {
	raddr, local := sockAddrs(fd, sa, laddr)
	if raddr.Network() == "tcp" {
		s.tuneTCP(fd)
	}
	c := &lconn{loop: l, fd: fd, scan: newFrameScanner(int64(s.cfg.MaxArgs), int64(s.cfg.MaxBulk))}
	// c.sess is set before the session is registered: a CLIENT KILL may
	// reach the loop as soon as it is.
	sess, refusal := s.admit(raddr, local, func(sess *session) { sess.lc, c.sess = c, sess })
	if sess == nil {
		if refusal != "" {
			syscall.Write(fd, []byte(refusal)) // non-blocking: best effort
		}
		syscall.Close(fd)
		return
	}
	l.post(loopMsg{c: c, kind: msgAdd})
}

// tuneTCP sets what Go sets on the connections it accepts: no Nagle delay
// and keep-alive probes (--tcp-keepalive; negative: off).
func (s *Server) tuneTCP(fd int) {
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	ka := s.cfg.TCPKeepAlive
	if ka < 0 {
		return
	}
	if ka == 0 {
		ka = 15 * time.Second // Go's default
	}
	secs := max(int(ka/time.Second), 1)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, secs)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, secs)
}

// sockAddrs returns the remote and local addresses of an accepted socket.
func sockAddrs(fd int, sa syscall.Sockaddr, laddr net.Addr) (raddr, local net.Addr) {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		raddr = &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		var zone string
		if a.ZoneId != 0 {
			zone = strconv.Itoa(int(a.ZoneId))
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		raddr = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: zone}
	default:
		return &net.UnixAddr{Name: "@", Net: "unix"}, laddr
	}
	local = laddr
	if lsa, err := syscall.Getsockname(fd); err == nil {
		switch a := lsa.(type) {
		case *syscall.SockaddrInet4:
			local = &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
		case *syscall.SockaddrInet6:
			local = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
		}
	}
	return raddr, local
}
