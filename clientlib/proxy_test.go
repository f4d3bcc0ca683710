package clientlib_test

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
)

// slowProxy forwards TCP connections to target, delaying every chunk the
// server sends by delay (a slow network path back to the client).
type slowProxy struct {
	ln    net.Listener
	delay atomic.Int64 // time.Duration
	// bulkOnly: delay only chunks that start with a bulk string reply
	// ('$': a LOCK's key), not pub/sub messages ('*').
	bulkOnly atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startSlowProxy(t *testing.T, target string, delay time.Duration) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln}
	p.delay.Store(int64(delay))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
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
			go func() { // server -> client, late
				defer p.wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if !p.bulkOnly.Load() || buf[0] == '$' {
							time.Sleep(time.Duration(p.delay.Load()))
						}
						if _, werr := c.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *slowProxy) Addr() string { return p.ln.Addr().String() }

// warmUp opens a lock connection through the proxy without delay and
// leaves it idle in c, so that the next Lock call's request is sent at
// once (the connection's handshake done), then turns the delay on.
func warmUp(t *testing.T, p *slowProxy, c *clientlib.Client) {
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
