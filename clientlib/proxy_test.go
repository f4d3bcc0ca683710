package clientlib_test

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

// proxy forwards TCP connections to target. What the server sends the
// client can be delayed (a slow network path back: delay, bulkOnly) or
// dropped (freeze); kill closes its listener and every connection.
type proxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // time.Duration
	// bulkOnly: delay only chunks that start with a bulk string reply
	// ('$': a LOCK's key), not pub/sub messages ('*').
	bulkOnly atomic.Bool
	frozen   chan struct{}
	once     sync.Once
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, frozen: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.kill)
	return p
}

// startSlowProxy is a proxy that delays every chunk the server sends.
func startSlowProxy(t *testing.T, target string, delay time.Duration) *proxy {
	t.Helper()
	p := startProxy(t, target)
	p.delay.Store(int64(delay))
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
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
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				select {
				case <-p.frozen: // dropped
				default:
					if n > 0 {
						if !p.bulkOnly.Load() || buf[0] == '$' {
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
		}()
	}
}

func (p *proxy) freeze() { close(p.frozen) }

func (p *proxy) kill() {
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

// warmUp opens a lock connection through the proxy without delay and
// leaves it idle in c, so that the next Lock call's request is sent at
// once (the connection's handshake done), then turns the delay on.
func warmUp(t *testing.T, p *proxy, c *clientlib.Client) {
	t.Helper()
	d := p.delay.Swap(0)
	l, err := c.TryLock(testCtx(t, 5*time.Second), "inflight:warmup")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	p.delay.Store(d)
}

// slowReplies starts a server and two clients of it: direct, and
// viaProxy, whose replies come back 300 ms late (its connection warmed up
// first), with opts applied to viaProxy's options.
func slowReplies(t *testing.T, opts ...func(*clientlib.Options)) (direct, viaProxy *clientlib.Client) {
	t.Helper()
	s := startServer(t, commands.Config{})
	p := startSlowProxy(t, s.Addr, 300*time.Millisecond)
	direct = newClient(t, s)
	viaProxy = newClient(t, s, append([]func(*clientlib.Options){func(o *clientlib.Options) { o.Addr = p.addr() }}, opts...)...)
	warmUp(t, p, viaProxy)
	return direct, viaProxy
}

// noHoldLeft waits (2 s at most) until none of names has a holder: a
// call that gave up (returning err) must leave no hold behind, not even
// a detached one, which closing a connection does not release.
func noHoldLeft(t *testing.T, c *clientlib.Client, call string, err error, names ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for _, name := range names {
		for {
			info, ierr := c.Inspect(testCtx(t, 5*time.Second), name)
			if ierr != nil {
				t.Fatal(ierr)
			}
			if info == nil || len(info.Holders) == 0 {
				break
			}
			if time.Now().After(deadline) {
				h := info.Holders[0]
				t.Fatalf("%s returned %v, yet a hold of the call stays on the server (%s: fence %d, detached %v, TTL %v): leaked until its TTL",
					call, err, name, h.Fence, h.Detached, h.TTL)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
