// Package testproxy is a TCP proxy for tests: it forwards connections to
// a server, and can delay or drop what the server sends back, or cut
// every connection at once. It stands in for a slow or broken network
// path between a client and a server on loopback.
package testproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards the TCP connections it accepts to its target. What the
// client sends reaches the server at once; what the server sends the
// client can be delayed (SetDelay, BulkOnly) or dropped (Freeze).
type Proxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // time.Duration
	bulk   atomic.Bool
	frozen chan struct{}
	freeze sync.Once
	once   sync.Once
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

// Start starts a proxy to target on a loopback port; it is killed when
// the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, frozen: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Kill)
	return p
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay delays each chunk the server sends by d (0: none) and returns
// the delay it replaces.
func (p *Proxy) SetDelay(d time.Duration) time.Duration {
	return time.Duration(p.delay.Swap(int64(d)))
}

// BulkOnly limits the delay to chunks that start with a bulk string
// reply ('$': a LOCK's key), not pub/sub messages ('*').
func (p *Proxy) BulkOnly() { p.bulk.Store(true) }

// Freeze drops everything the server sends from now on.
func (p *Proxy) Freeze() { p.freeze.Do(func() { close(p.frozen) }) }

// Kill closes the listener and every connection, and waits for the
// proxy's goroutines. Idempotent.
func (p *Proxy) Kill() {
	p.once.Do(func() {
		p.ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { // client -> server, at once
			defer p.wg.Done()
			io.Copy(s, c)
			s.Close()
		}()
		go func() { // server -> client: late, or dropped once frozen
			defer p.wg.Done()
			defer c.Close()
			p.back(s, c)
		}()
	}
}

// back copies what the server s sends to the client c until either ends.
func (p *Proxy) back(s, c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		select {
		case <-p.frozen: // dropped
		default:
			if n > 0 {
				if !p.bulk.Load() || buf[0] == '$' {
					time.Sleep(time.Duration(p.delay.Load()))
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
