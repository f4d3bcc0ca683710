package commands

import (
	"crypto/tls"
	"errors"
	"net"
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
	// reading: a read was asked for and its result not yet taken.
	reading bool
}

type readResult struct {
	n   int
	err error
}

// netIO is a goroutine-served connection's socket.
type netIO struct{ nc net.Conn }

func (n netIO) shutdown()   { n.nc.Close() }
func (n netIO) breakWrite() { n.nc.Close() }

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
		r, err := g.nc.Read(g.rbuf[:n])
		g.got <- readResult{r, err}
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
			if !ok || got.err != nil || got.n == 0 {
				g.close(c)
			} else {
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
// none is asked for.
func (g *goConn) ask(c *conn) {
	if !g.reading && c.wantsInput() {
		g.reading = true
		g.want <- c.readRoom()
	}
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
