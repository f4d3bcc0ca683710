package clientlib_test

import (
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
	"github.com/relock/relock/internal/testproxy"
)

// warmUp opens a lock connection through the proxy without delay and
// leaves it idle in c, so that the next Lock call's request is sent at
// once (the connection's handshake done), then turns the delay on.
func warmUp(t *testing.T, p *testproxy.Proxy, c *clientlib.Client) {
	t.Helper()
	d := p.SetDelay(0)
	l, err := c.TryLock(testCtx(t, 5*time.Second), "inflight:warmup")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	p.SetDelay(d)
}

// slowReplies starts a server and two clients of it: direct, and
// viaProxy, whose replies come back 300 ms late (its connection warmed up
// first), with opts applied to viaProxy's options.
func slowReplies(t *testing.T, opts ...func(*clientlib.Options)) (direct, viaProxy *clientlib.Client) {
	t.Helper()
	s := startServer(t, commands.Config{})
	p := testproxy.Start(t, s.Addr)
	p.SetDelay(300 * time.Millisecond)
	direct = newClient(t, s)
	viaProxy = newClient(t, s, append([]func(*clientlib.Options){func(o *clientlib.Options) { o.Addr = p.Addr() }}, opts...)...)
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
