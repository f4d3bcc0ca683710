package commands

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// The goroutine driver: a connection served by a goroutine of its own, an
// owner (conn.go) of one connection. It serves TLS (crypto/tls needs a
// net.Conn), systems without epoll, and --io goroutine. A reader goroutine
// does the blocking reads, one at a time and only when the lifecycle
// wants input, so that a disconnect is seen while a LOCK waits and a
// client that floods is read no faster than it is served.

// goConn is the driver of one connection.
type goConn struct {
	owner
	nc    net.Conn
	c     *conn
	rbuf  []byte
	notes chan struct{} // buffered(1): the inbox has messages
	want  chan int      // buffered(1): read up to n bytes (the reader's only input)
	got   chan readResult
	// reading: a read (or a watch) was asked for and its result not yet
	// taken.
	reading bool
	// raw is the socket under nc, for awaitHangup (nil: not watched).
	raw syscall.RawConn
	// watching: the reader awaits a hang-up (watchHangup) instead of
	// reading; cancelled: its read deadline was set to end the watch.
	watching, cancelled bool
}

type readResult struct {
	n   int
	err error
	// watched: a hang-up watch ended without one (cancelled).
	watched bool
}

// watchHangup, asked of the reader instead of a read size, makes it await
// the client's hang-up without reading (awaitHangup).
const watchHangup = -1

// netIO is a goroutine-served connection's socket.
type netIO struct{ nc net.Conn }

func (n netIO) shutdown() { n.nc.Close() }

// breakWrite closes the socket itself, under TLS too: tls.Conn.Close
// would first send close_notify, which can wait (up to 5 s) on the very
// socket buffer the client stopped reading.
func (n netIO) breakWrite() {
	if tc, ok := n.nc.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	n.nc.Close()
}

// acceptGoroutines accepts connections on ln and serves each with a
// goroutine of its own, until the server shuts down.
func (s *Server) acceptGoroutines(ln net.Listener) {
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !s.acceptFailed(err, &backoff) {
				return
			}
			continue
		}
		backoff = 5 * time.Millisecond
		s.serveGoroutine(nc)
	}
}

// serveGoroutine admits nc and starts its goroutines.
func (s *Server) serveGoroutine(nc net.Conn) {
	g := &goConn{
		nc:    nc,
		rbuf:  make([]byte, readChunk),
		notes: make(chan struct{}, 1),
		want:  make(chan int, 1),
		got:   make(chan readResult),
	}
	g.owner.init(s, g, false)
	g.raw = rawSocket(nc)
	c := newConn(s, netIO{nc})
	c.own = &g.owner
	g.c = c
	sess, refusal := s.admit(nc.RemoteAddr(), nc.LocalAddr(), func(sess *session) {
		sess.c, sess.netConn, c.sess = c, nc, sess
	})
	if sess == nil {
		if refusal != "" {
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write([]byte(refusal))
		}
		nc.Close()
		return
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		g.read()
	}()
	go func() {
		defer s.wg.Done()
		g.run()
	}()
}

// read is the reader goroutine: a TLS handshake first (bounded by
// --auth-timeout, so that connections that never finish one cannot hold
// --max-clients slots), then one read each time it is asked, until the
// connection fails.
func (g *goConn) read() {
	defer close(g.got)
	if tc, ok := g.nc.(*tls.Conn); ok {
		tc.SetDeadline(time.Now().Add(g.srv.cfg.AuthTimeout))
		err := tc.Handshake()
		tc.SetDeadline(time.Time{})
		if err != nil {
			g.got <- readResult{err: err}
			return
		}
	}
	for n := range g.want {
		if n == watchHangup {
			err := awaitHangup(g.raw)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				g.got <- readResult{watched: true}
				continue
			}
			if err == nil {
				err = io.EOF // hung up
			}
			g.got <- readResult{err: err}
			return
		}
		r, err := g.nc.Read(g.rbuf[:n])
		g.got <- readResult{n: r, err: err}
		if err != nil {
			return
		}
	}
}

// run drives the connection until it is closed or the server stops.
func (g *goConn) run() {
	c := g.c
	defer func() {
		g.exit()
		close(g.want) // the reader's Read has failed, or will not be asked again
		for range g.got {
		}
	}()
	g.ask(c)
	for !c.closed {
		var got readResult
		var ok, read bool
		if g.idle() {
			select {
			case <-g.notes:
			case got, ok = <-g.gotCh():
				read = true
			case <-g.srv.shutdown:
				g.close(c)
			}
			g.awake()
		} else {
			select {
			case got, ok = <-g.gotCh():
				read = true
			default:
			}
		}
		if read {
			g.reading = false
			switch {
			case ok && got.watched:
				g.watching, g.cancelled = false, false
				g.nc.SetReadDeadline(time.Time{}) // before the next read
			case !ok || got.err != nil || got.n == 0:
				g.close(c)
			default:
				c.input(g.rbuf[:got.n])
			}
		}
		g.round()
		if !c.closed {
			g.ask(c)
		}
	}
	g.round() // the close's commit
}

// gotCh is the reader's result channel while a read is asked for.
func (g *goConn) gotCh() chan readResult {
	if g.reading {
		return g.got
	}
	return nil
}

// wake wakes run from its select (any goroutine).
func (g *goConn) wake() {
	select {
	case g.notes <- struct{}{}:
	default:
	}
}

// interest: run asks for a read after each round (ask), not while the
// read buffer may still be borrowed by the input being run.
func (g *goConn) interest(c *conn) {}

// ask asks the reader for a read when the connection wants input and
// none is asked for. While a command waits (a queued LOCK) with its input
// full, it asks the reader to watch for a hang-up instead, as the event
// loops do (EPOLLRDHUP), so that a waiter that is gone leaves the queue at
// once; the watch is cancelled when input is wanted again.
func (g *goConn) ask(c *conn) {
	switch {
	case g.watching:
		if !g.cancelled && (c.wantsInput() || c.wait == nil) {
			g.cancelled = true
			g.nc.SetReadDeadline(time.Unix(1, 0)) // ends the watch
		}
	case g.reading:
	case c.wantsInput():
		g.reading = true
		g.want <- c.readRoom()
	case c.wait != nil && !c.closed && g.raw != nil:
		g.reading, g.watching = true, true
		g.want <- watchHangup
	}
}

// rawSocket returns the socket under nc (a TLS connection's too), or nil
// where a hang-up cannot be awaited.
func rawSocket(nc net.Conn) syscall.RawConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !canAwaitHangup || !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// write sends all of c's output; a client that does not read blocks only
// this goroutine.
func (g *goConn) write(c *conn) error {
	w := &c.sess.w
	if len(w.B) == 0 {
		return nil
	}
	_, err := g.nc.Write(w.B)
	w.B = w.B[:0]
	return err
}

// closeIO closes the socket (which ends the reader's Read).
func (g *goConn) closeIO(c *conn) { g.nc.Close() }
