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
)

// The event loop: plain TCP and unix-socket connections are served the way
// Redis serves them, by a few goroutines that each own an epoll set and its
// connections (one per core, each on its own thread): wait for readiness,
// read once, run every complete command, write every reply at the end of
// the round. A round trip then costs one read and one write, where a
// goroutine per connection also pays a read that finds nothing and a trip
// through the scheduler to park and wake (per-request I/O decides
// the race). The loop is a thin driver: what a connection does with its
// bytes, and every completion it waits for, is the one lifecycle of
// conn.go. With --fsync always a loop commits once per round on its own
// thread, before it writes the round's replies.

const (
	loopEvents  = 256 // readiness events taken per round
	yieldEvery  = time.Millisecond
	spinFor     = 150 * time.Microsecond
	epollIn     = syscall.EPOLLIN | syscall.EPOLLRDHUP
	epollOut    = syscall.EPOLLOUT
	epollClosed = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
)

// evloop is one event loop: an owner (conn.go) whose driver is epoll.
// Everything belongs to the loop's goroutine but the owner's inbox.
type evloop struct {
	owner
	epfd   int
	wakefd int // eventfd: wakes the loop from epoll_wait when a message comes
	conns  map[int]*conn
	events []syscall.EpollEvent
	rbuf   []byte
}

// fdConn is a connection's socket on an event loop.
type fdConn struct {
	fd int
	// mu makes closing fd (the loop) and shutting it down (kill, from
	// any goroutine) exclusive, so that kill never touches a number the
	// kernel has handed to a newer connection. closed is written under it.
	mu       sync.Mutex
	closed   bool
	interest uint32 // the epoll events asked for
}

// breakWrite: an event loop's writes never block.
func (f *fdConn) breakWrite() {}

func (f *fdConn) shutdown() {
	f.mu.Lock()
	if !f.closed {
		syscall.Shutdown(f.fd, syscall.SHUT_RDWR)
	}
	f.mu.Unlock()
}

// useLoops reports whether connections are served by event loops: on
// Linux, unless the server speaks TLS or the operator asked for
// goroutines.
func (s *Server) useLoops() bool {
	return s.cfg.IO != "goroutine" && s.cfg.TLS == nil
}

// startLoops starts the event loops and one accept goroutine per
// listener. It returns false if it cannot (the caller serves each
// connection with a goroutine).
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
		l.post(msg{kind: msgStop})
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
		epfd:   epfd,
		wakefd: int(r),
		conns:  make(map[int]*conn),
		events: make([]syscall.EpollEvent, loopEvents),
		rbuf:   make([]byte, readChunk),
	}
	l.owner.init(s, l, true)
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

// run is the loop: wait for readiness, serve what is ready and what was
// posted, write the replies, until stopped.
func (l *evloop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		l.exit()
		l.closeFDs()
	}()
	yielded := time.Now()
	for !l.done {
		timeout := 0
		if l.idle() {
			timeout = -1
		}
		n, err := l.wait(timeout)
		if timeout != 0 {
			l.awake()
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
		l.round()
		if l.done {
			for _, c := range l.conns {
				l.close(c)
			}
			l.round() // the closes' commits
		}
		if now := time.Now(); now.Sub(yielded) >= yieldEvery {
			// A busy loop never parks: let timers and the accept
			// goroutines have the thread now and then.
			runtime.Gosched()
			yielded = now
		}
	}
}

// wait is epoll_wait, polling first for up to spinFor while a handoff
// chain may be running: within handoffWindow of a grant, each grantee's
// UNLOCK may pass the lock on at once, and the next link then does not pay
// for waking an idle CPU (the contended-handoff target). A loop that has
// not granted lately never spins, and neither does a cluster member's:
// there the next link is a Raft commit, not the loop's own work, and the
// spin only takes the CPU from the Raft goroutines and the followers
// (3 nodes sharing a core: 1,012-1,023 handoffs/s without it against
// 827-921 with it, 821-830 µs of CPU per handoff against 972-1,081).
func (l *evloop) wait(timeout int) (int, error) {
	if timeout != 0 && !l.srv.eng.blocking() && time.Since(l.lastGrant) <= handoffWindow {
		for start := time.Now(); time.Since(start) < spinFor; {
			if n, err := syscall.EpollWait(l.epfd, l.events, 0); n != 0 || err != nil {
				return n, err
			}
		}
	}
	return syscall.EpollWait(l.epfd, l.events, timeout)
}

// wake wakes the loop from epoll_wait (any goroutine).
func (l *evloop) wake() {
	one := [8]byte{1}
	syscall.Write(l.wakefd, one[:])
}

// ready serves epoll events of c.
func (l *evloop) ready(c *conn, events uint32) {
	f := c.io.(*fdConn)
	if events&epollOut != 0 {
		c.write()
		if c.closed {
			return
		}
	}
	if events&(syscall.EPOLLIN|epollClosed) != 0 && f.interest&syscall.EPOLLIN != 0 {
		l.read(c)
	} else if events&epollClosed != 0 {
		// Not reading (its input is full or it is closing): a hang-up
		// still ends it at once.
		l.close(c)
	}
}

// read takes what c has sent (one read per round, as Redis does) and runs
// the commands that are complete.
func (l *evloop) read(c *conn) {
	n, err := syscall.Read(c.io.(*fdConn).fd, l.rbuf[:c.readRoom()])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if n <= 0 || err != nil {
		l.close(c)
		return
	}
	c.input(l.rbuf[:n])
}

// write sends as much of c's output as the socket takes; the rest waits
// for EPOLLOUT.
func (l *evloop) write(c *conn) error {
	w := &c.sess.w
	fd := c.io.(*fdConn).fd
	for len(w.B) > 0 {
		n, err := syscall.Write(fd, w.B)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			break
		}
		if err != nil {
			return err
		}
		rest := copy(w.B, w.B[n:])
		w.B = w.B[:rest]
	}
	return nil
}

// interest asks epoll for input while c may buffer more, and for
// writability while it has output the socket did not take.
func (l *evloop) interest(c *conn) {
	if c.closed {
		return
	}
	f := c.io.(*fdConn)
	want := uint32(syscall.EPOLLRDHUP)
	if c.wantsInput() {
		want |= syscall.EPOLLIN
	}
	if c.hasOutput() && !c.dirty {
		want |= epollOut
	}
	if want == f.interest {
		return
	}
	op := syscall.EPOLL_CTL_MOD
	if f.interest == 0 {
		op = syscall.EPOLL_CTL_ADD
		l.conns[f.fd] = c
	}
	f.interest = want
	ev := syscall.EpollEvent{Events: want, Fd: int32(f.fd)}
	if err := syscall.EpollCtl(l.epfd, op, f.fd, &ev); err != nil {
		if op == syscall.EPOLL_CTL_ADD {
			l.srv.log.Error("epoll_ctl add", "err", err)
		}
		l.close(c)
	}
}

// closeIO closes c's socket.
func (l *evloop) closeIO(c *conn) {
	f := c.io.(*fdConn)
	f.mu.Lock()
	f.closed = true
	if f.interest != 0 {
		syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, f.fd, nil)
	}
	syscall.Close(f.fd)
	f.mu.Unlock()
	if l.conns[f.fd] == c {
		delete(l.conns, f.fd)
	}
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
			if !s.acceptFailed(aerr, &backoff) {
				return
			}
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
	c := newConn(s, &fdConn{fd: fd})
	c.own = &l.owner
	// c.sess is set before the session is registered: a CLIENT KILL may
	// reach the loop as soon as it is.
	sess, refusal := s.admit(raddr, local, func(sess *session) { sess.c, c.sess = c, sess })
	if sess == nil {
		if refusal != "" {
			syscall.Write(fd, []byte(refusal)) // non-blocking: best effort
		}
		syscall.Close(fd)
		return
	}
	l.post(msg{c: c, kind: msgAdd})
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
