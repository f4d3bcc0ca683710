package clientlib_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// test stops the servers and Clients it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is an in-process relock server on a loopback port.
type testServer struct {
	Addr   string
	srv    *commands.Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// runServer starts a server with cfg (Listen defaults to 127.0.0.1:0) and
// waits until it listens.
func runServer(cfg commands.Config) (*testServer, error) {
	if cfg.Listen == "" && cfg.UnixSocket == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	srv, err := commands.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		cancel()
		return nil, fmt.Errorf("server exited before listening: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		return nil, errors.New("server did not listen within 10s")
	}
	addrs := srv.Addrs()
	if len(addrs) == 0 {
		s.stop()
		return nil, errors.New("server has no address")
	}
	s.Addr = addrs[0].String()
	if cfg.Listen == "" {
		s.Addr = cfg.UnixSocket
	}
	// Ready means listening, not serving: a server stopped before its
	// redcon loop runs never stops (redcon's Close says "not serving" and
	// Serve then runs on). A PONG proves the loop runs.
	if err := ping(addrs[0], cfg.TLS != nil); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// ping sends PING over a raw connection (TLS without verification if
// useTLS) and expects +PONG.
func ping(addr net.Addr, useTLS bool) error {
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if useTLS {
		conn, err = tls.DialWithDialer(d, addr.Network(), addr.String(), &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = d.Dial(addr.Network(), addr.String())
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "+PONG\r\n" {
		return fmt.Errorf("PING = %q, %v", buf, err)
	}
	return nil
}

// stop stops the server and waits for Run to return. Idempotent.
func (s *testServer) stop() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		select {
		case err = <-s.done:
		case <-time.After(10 * time.Second):
			err = errors.New("server did not stop within 10s")
		}
	})
	return err
}

// startServer is runServer for a test: it fails the test on error and
// stops the server when the test ends.
func startServer(t testing.TB, cfg commands.Config) *testServer {
	t.Helper()
	s, err := runServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Stop stops the server now, failing the test if it does not stop.
func (s *testServer) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}

// newClient returns a Client of s, closed when the test ends.
func newClient(t testing.TB, s *testServer, mods ...func(*clientlib.Options)) *clientlib.Client {
	t.Helper()
	opt := clientlib.Options{Addr: s.Addr}
	for _, m := range mods {
		m(&opt)
	}
	c, err := clientlib.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx returns a context that ends with the test or after d.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 5 ms until it is true, failing the test if it
// is not within d.
func eventually(t testing.TB, d time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: "+msg, append([]any{d}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waiters returns the number of waiters of name (0 if it does not exist).
func waiters(t testing.TB, c *clientlib.Client, name string) int {
	t.Helper()
	info, err := c.Inspect(testCtx(t, 5*time.Second), name)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	if info == nil {
		return 0
	}
	return len(info.Waiters)
}

// waitersReach waits until name has n waiters.
func waitersReach(t testing.TB, c *clientlib.Client, name string, n int) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool { return waiters(t, c, name) == n }, "%s has %d waiters", name, n)
}

// lostWithin waits for l's loss, failing the test if it is not reported
// within d, and returns how long it took.
func lostWithin(t testing.TB, l *clientlib.Lock, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-l.Lost():
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("lock %s: loss not reported within %v", l.Name(), d)
		return 0
	}
}

// exampleServer starts a server for an Example; it exits the program if it
// cannot.
func exampleServer() (addr string, stop func()) {
	s, err := runServer(commands.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return s.Addr, func() { s.stop() }
}

// shortTempDir returns a new directory with a short path (unix socket paths
// are limited to about 100 bytes), removed when the test ends.
func shortTempDir(t testing.TB) (string, error) {
	dir, err := os.MkdirTemp("", "rl")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, nil
}
