package commands

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/locktable"
)

// Edge cases of the single-node server over real TCP, both transports
// where it matters (found by an adversarial review).

// tcpServer runs a server with cfg on a loopback port until the test ends
// and returns its address.
func tcpServer(t *testing.T, cfg Config) string {
	_, addr := tcpServerOn(t, cfg)
	return addr
}

// tcpServerOn is tcpServer, returning the server too.
func tcpServerOn(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, runClusterServer(t, srv)
}

// wireConn is a raw RESP connection for these tests.
type wireConn struct {
	net.Conn
	r *bufio.Reader
}

func dialWire(t *testing.T, addr string) *wireConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &wireConn{Conn: nc, r: bufio.NewReader(nc)}
}

// send writes the commands as one pipeline.
func (c *wireConn) send(t *testing.T, cmds ...[]string) {
	t.Helper()
	var b []byte
	for _, args := range cmds {
		b = append(b, request(args...)...)
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// reply reads one reply (simple types, bulks and flat or nested arrays)
// and returns it in the summary form "+OK", "-ERR ...", ":1", "$key",
// "$nil", "*n[...]".
func (c *wireConn) reply(t *testing.T) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.readValue()
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return s
}

func (c *wireConn) readValue() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch line[0] {
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "$nil", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return "", err
		}
		return "$" + string(buf[:n]), nil
	case '*', '>', '%':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "*nil", nil
		}
		if line[0] == '%' {
			n *= 2
		}
		parts := make([]string, n)
		for i := range parts {
			if parts[i], err = c.readValue(); err != nil {
				return "", err
			}
		}
		return string(line[0]) + strconv.Itoa(n) + "[" + strings.Join(parts, " ") + "]", nil
	}
	return line, nil
}

func (c *wireConn) do(t *testing.T, args ...string) string {
	t.Helper()
	c.send(t, args)
	return c.reply(t)
}

// TestPubsub_SubscriberThatStopsReadingIsCutOffOnEveryTransport: SPEC
// §8.1 says a subscriber that stops reading is disconnected once its
// unsent output passes a bound. On the goroutine transport (TLS, --io
// goroutine) the connection's goroutine blocks in Write on the full
// socket and never handles its msgPublish, so the subscriber is never cut
// off (and its queue stops at the limit: events are silently lost).
func TestPubsub_SubscriberThatStopsReadingIsCutOffOnEveryTransport(t *testing.T) {
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			srv, addr := tcpServerOn(t, Config{IO: io})
			slow := dialWire(t, addr)
			slow.Conn.(*net.TCPConn).SetReadBuffer(4 << 10)
			if got := slow.do(t, "PSUBSCRIBE", "__lock__:*"); !strings.HasPrefix(got, "*3[$psubscribe") {
				t.Fatalf("PSUBSCRIBE: %q", got)
			}
			// slow never reads again.
			c := dialWire(t, addr)
			name := "slow:" + strings.Repeat("x", 300)
			const batch = 50
			cmds := make([][]string, 0, 2*batch)
			for range batch {
				cmds = append(cmds, []string{"LOCK", name, "TTL", "60000"}, []string{"FORCEUNLOCK", name})
			}
			deadline := time.Now().Add(20 * time.Second)
			start := time.Now()
			defer func() { t.Logf("published %d in %v", srv.hub.published.Load(), time.Since(start)) }()
			for srv.hub.dropped.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the subscriber that reads nothing was not cut off within 20s (events published: %d)", srv.hub.published.Load())
				}
				c.send(t, cmds...)
				for range cmds {
					if got := c.reply(t); strings.HasPrefix(got, "-") {
						t.Fatalf("reply: %q", got)
					}
				}
			}
		})
	}
}

// waitersOf returns how many requests wait on lock name.
func waitersOf(srv *Server, name string) int {
	p := srv.eng.table().LocksPage(locktable.Query{Prefix: name, Count: 1}, srv.now())
	for _, l := range p.Locks {
		if l.Name == name {
			return len(l.Waiters)
		}
	}
	return 0
}

// TestLock_WaiterWithAFullPipelineLeavesTheQueueWhenItHangsUp: SPEC §1 "A
// waiter whose connection closes ... leaves the queue at once and is never
// granted". A waiter that pipelined more than the server buffers (1 MiB)
// behind its blocked LOCK is not read any more; on the goroutine transport
// (TLS, --io goroutine) its reset connection is then never seen, so it
// stays queued and is granted the lock after it is gone (the event loops
// watch EPOLLHUP/EPOLLERR even when not reading).
func TestLock_WaiterWithAFullPipelineLeavesTheQueueWhenItHangsUp(t *testing.T) {
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			srv, addr := tcpServerOn(t, Config{IO: io})
			holder := dialWire(t, addr)
			key := holder.do(t, "LOCK", "x")
			if !strings.HasPrefix(key, "$") || key == "$nil" {
				t.Fatalf("LOCK x: %q", key)
			}
			waiter := dialWire(t, addr)
			cmds := [][]string{{"LOCK", "x"}}
			arg := strings.Repeat("p", 60<<10)
			for range 40 { // 2.4 MiB of PINGs behind the blocked LOCK
				cmds = append(cmds, []string{"PING", arg})
			}
			waiter.send(t, cmds...)
			deadline := time.Now().Add(5 * time.Second)
			for waitersOf(srv, "x") != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the LOCK did not queue")
				}
				time.Sleep(time.Millisecond)
			}
			// An abortive close (RST), as a crashed host's or a killed
			// process's with unread data: the FIN of an orderly close
			// would queue behind the unread pipeline.
			waiter.Conn.(*net.TCPConn).SetLinger(0)
			waiter.Close()
			deadline = time.Now().Add(3 * time.Second)
			for waitersOf(srv, "x") != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the waiter that hung up is still queued 3s later (it would be granted the lock)")
				}
				time.Sleep(time.Millisecond)
			}

			// A waiter that stays is granted, and the input behind its
			// LOCK runs: the server reads it again (on the goroutine
			// transport, the hang-up watch is cancelled).
			stays := dialWire(t, addr)
			stays.send(t, cmds...)
			deadline = time.Now().Add(5 * time.Second)
			for waitersOf(srv, "x") != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the second LOCK did not queue")
				}
				time.Sleep(time.Millisecond)
			}
			if got := holder.do(t, "UNLOCK", "x", key[1:]); got != ":1" {
				t.Fatalf("UNLOCK: %q", got)
			}
			if got := stays.reply(t); !strings.HasPrefix(got, "$") || got == "$nil" {
				t.Fatalf("the waiter's LOCK: %q", got)
			}
			for i := 1; i < len(cmds); i++ {
				if got := stays.reply(t); got != "$"+arg {
					t.Fatalf("PING %d behind the granted LOCK: %.40q", i, got)
				}
			}
		})
	}
}

// holdsField returns the holds= field of CLIENT INFO on c.
func holdsField(t *testing.T, c *wireConn) string {
	t.Helper()
	info := c.do(t, "CLIENT", "INFO")
	for _, f := range strings.Fields(info) {
		if strings.HasPrefix(f, "holds=") {
			return strings.TrimPrefix(f, "holds=")
		}
	}
	t.Fatalf("CLIENT INFO without holds=: %q", info)
	return ""
}

// TestLimit_MaxHoldsPerClientBoundsAMultiLockGrantedAfterWaiting:
// --max-holds-per-client bounds bound holds plus the wait of one
// connection. An MLOCK that waits is granted every name later, so it must
// fit the bound with all of them when it queues: it used to be checked
// for its wait only (one), and an MLOCK of 4 names, refused when free,
// was granted all 4 after waiting, leaving the connection at twice the
// bound.
func TestLimit_MaxHoldsPerClientBoundsAMultiLockGrantedAfterWaiting(t *testing.T) {
	addr := tcpServer(t, Config{MaxHolds: 2})
	a := dialWire(t, addr)
	b := dialWire(t, addr)
	if got := b.do(t, "MTRYLOCK", "4", "m1", "m2", "m3", "m4"); !strings.HasPrefix(got, "-LIMIT") {
		t.Fatalf("MTRYLOCK of 4 names with max-holds-per-client 2: %q; want -LIMIT", got)
	}
	key := a.do(t, "LOCK", "m1")
	if !strings.HasPrefix(key, "$") || key == "$nil" {
		t.Fatalf("LOCK m1: %q", key)
	}
	// Busy, it would wait: refused all the same, and nothing queues.
	if got := b.do(t, "MLOCK", "4", "m1", "m2", "m3", "m4", "WAIT", "5000"); !strings.HasPrefix(got, "-LIMIT") {
		t.Fatalf("MLOCK of 4 names that would wait, max-holds-per-client 2: %q; want -LIMIT", got)
	}
	if info := a.do(t, "LOCKS", "MATCH", "m1"); strings.Contains(info, "$waiters *1[") {
		t.Fatalf("the refused MLOCK is queued: %q", info)
	}
	// One hold and a wait for two names: three.
	if k := b.do(t, "LOCK", "other"); !strings.HasPrefix(k, "$") || k == "$nil" {
		t.Fatalf("LOCK other: %q", k)
	}
	if got := b.do(t, "MLOCK", "2", "m1", "m2", "WAIT", "5000"); !strings.HasPrefix(got, "-LIMIT") {
		t.Fatalf("MLOCK of 2 names that would wait beside 1 hold, max-holds-per-client 2: %q; want -LIMIT", got)
	}
	// What fits waits, and is granted.
	c := dialWire(t, addr)
	c.send(t, []string{"MLOCK", "2", "m1", "m2", "WAIT", "5000"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if info := a.do(t, "LOCKS", "MATCH", "m1"); strings.Contains(info, "$waiters *1[") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the MLOCK of 2 names did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	if got := a.do(t, "UNLOCK", "m1", key[1:]); got != ":1" {
		t.Fatalf("UNLOCK: %q", got)
	}
	if got := c.reply(t); !strings.HasPrefix(got, "*2[$") {
		t.Fatalf("MLOCK of 2 names after waiting: %q", got)
	}
	if holds := holdsField(t, c); holds != "2" {
		t.Fatalf("holds after the MLOCK of 2 names: %s", holds)
	}
}

// TestAuth_ResetConnectionIsClosedIfItDoesNotAuthenticateAgain: RESET
// clears a connection's authentication ("as new"), but the auth timeout
// is armed only when a connection is accepted: a connection that
// authenticates, RESETs and then idles is never closed, so idle
// unauthenticated connections can pile up after all (--auth-timeout).
func TestAuth_ResetConnectionIsClosedIfItDoesNotAuthenticateAgain(t *testing.T) {
	addr := tcpServer(t, Config{
		AuthTimeout: 300 * time.Millisecond,
		Users:       []User{{Name: "default", PasswordHash: bcryptHash(t, "pw"), Locks: []string{"*"}, Admin: true}},
	})
	c := dialWire(t, addr)
	if got := c.do(t, "AUTH", "pw"); got != "+OK" {
		t.Fatalf("AUTH: %q", got)
	}
	// A connection accepted after c and never authenticated is closed
	// after the timeout: by then c's auth timer has run too.
	fresh := dialWire(t, addr)
	fresh.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := fresh.r.ReadByte(); err == nil {
		t.Fatal("the fresh connection got a byte instead of being closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a fresh unauthenticated connection was not closed within 5s")
	}
	if got := c.do(t, "RESET"); got != "+RESET" {
		t.Fatalf("RESET: %q", got)
	}
	if got := c.do(t, "LOCK", "x"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("LOCK after RESET: %q; want -NOAUTH", got)
	}
	// ... and so should the one RESET made unauthenticated.
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("the RESET connection got a byte instead of being closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection RESET to unauthenticated is still open 3s after a 300ms auth timeout")
	}
}

// TestAuth_ResetDoesNotExtendAnUnauthenticatedConnectionsTimeout: a
// connection that has not authenticated within --auth-timeout is closed
// (docs/protocol.md). RESET is allowed before authentication and
// restarts the auth timer, so a client that never authenticates but sends
// RESET more often than the timeout keeps its connection (and a
// --max-clients slot) for ever.
func TestAuth_ResetDoesNotExtendAnUnauthenticatedConnectionsTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr := tcpServer(t, Config{
		AuthTimeout: timeout,
		Users:       []User{{Name: "default", PasswordHash: bcryptHash(t, "pw"), Locks: []string{"*"}, Admin: true}},
	})
	c := dialWire(t, addr)
	deadline := time.Now().Add(10 * timeout)
	for {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(request("RESET")); err != nil {
			return // closed
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := c.readValue()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("RESET got no reply within 5s")
			}
			return // closed, as it should be
		}
		if got != "+RESET" {
			t.Fatalf("RESET: %q", got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a connection that never authenticated but sends RESET is still open %v after accept (auth timeout %v)", 10*timeout, timeout)
		}
	}
}

// clientID is c's CLIENT ID.
func clientID(t *testing.T, c *wireConn) string {
	t.Helper()
	id := c.do(t, "CLIENT", "ID")
	if !strings.HasPrefix(id, ":") {
		t.Fatalf("CLIENT ID: %q", id)
	}
	return id[1:]
}

// TestClient_UnblockEndsAWaitAndKeepsTheConnectionsHolds: CLIENT UNBLOCK
// (as in Redis) ends a connection's queued LOCK as its WAIT running out
// would (TIMEOUT, the default: a null) or with -UNBLOCKED (ERROR), and
// leaves its holds and its later requests alone; a waiting UPGRADE keeps
// its shared hold. :0 for a connection that does not wait or does not
// exist.
func TestClient_UnblockEndsAWaitAndKeepsTheConnectionsHolds(t *testing.T) {
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			srv, addr := tcpServerOn(t, Config{IO: io})
			holder, w, ctl := dialWire(t, addr), dialWire(t, addr), dialWire(t, addr)
			key := holder.do(t, "LOCK", "x")
			ky := w.do(t, "LOCK", "y")
			id := clientID(t, w)
			if got := ctl.do(t, "CLIENT", "UNBLOCK", id); got != ":0" {
				t.Fatalf("CLIENT UNBLOCK of a connection that does not wait: %q", got)
			}
			queued := func() {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for waitersOf(srv, "x") != 1 {
					if time.Now().After(deadline) {
						t.Fatal("the LOCK did not queue")
					}
					time.Sleep(time.Millisecond)
				}
			}
			// TIMEOUT (the default): a null, and the pipelined PING runs.
			w.send(t, []string{"LOCK", "x"}, []string{"PING"})
			queued()
			if got := ctl.do(t, "CLIENT", "UNBLOCK", id); got != ":1" {
				t.Fatalf("CLIENT UNBLOCK: %q", got)
			}
			if got := w.reply(t); got != "$nil" {
				t.Fatalf("the unblocked LOCK: %q; want a null", got)
			}
			if got := w.reply(t); got != "+PONG" {
				t.Fatalf("the PING behind it: %q", got)
			}
			if waitersOf(srv, "x") != 0 {
				t.Fatal("the unblocked LOCK is still queued")
			}
			// ERROR.
			w.send(t, []string{"LOCK", "x"})
			queued()
			if got := ctl.do(t, "CLIENT", "UNBLOCK", id, "error"); got != ":1" {
				t.Fatalf("CLIENT UNBLOCK ERROR: %q", got)
			}
			if got := w.reply(t); got != "-"+errUnblocked {
				t.Fatalf("the LOCK unblocked with ERROR: %q", got)
			}
			// A waiting UPGRADE keeps its shared hold.
			ks := w.do(t, "LOCK", "z", "SHARED")
			other := dialWire(t, addr)
			other.do(t, "LOCK", "z", "SHARED")
			w.send(t, []string{"UPGRADE", "z", ks[1:]})
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(ctl.do(t, "LOCKS", "MATCH", "z"), "$upgrade") {
				if time.Now().After(deadline) {
					t.Fatal("the UPGRADE did not wait")
				}
				time.Sleep(time.Millisecond)
			}
			if got := ctl.do(t, "CLIENT", "UNBLOCK", id, "TIMEOUT"); got != ":1" {
				t.Fatalf("CLIENT UNBLOCK of an UPGRADE: %q", got)
			}
			if got := w.reply(t); got != "$nil" {
				t.Fatalf("the unblocked UPGRADE: %q; want a null", got)
			}
			// Its holds are all there.
			for _, c := range [][]string{{"CHECK", "y", ky[1:]}, {"CHECK", "z", ks[1:]}} {
				if got := w.do(t, c...); strings.HasPrefix(got, "-") {
					t.Fatalf("%v after the unblocks: %q", c, got)
				}
			}
			if got := ctl.do(t, "CLIENT", "UNBLOCK", "999999"); got != ":0" {
				t.Fatalf("CLIENT UNBLOCK of no connection: %q", got)
			}
			for _, bad := range [][]string{{"CLIENT", "UNBLOCK", "x"}, {"CLIENT", "UNBLOCK", id, "LATER"}, {"CLIENT", "UNBLOCK"}} {
				if got := ctl.do(t, bad...); !strings.HasPrefix(got, "-ERR") {
					t.Fatalf("%v: %q; want an error", bad, got)
				}
			}
			holder.do(t, "UNLOCK", "x", key[1:])
		})
	}
}

// TestClient_UnblockIsForTheSameUserOrAnAdmin: a user may unblock its
// own connections only (:0 for another's, which stays queued); an admin
// any.
func TestClient_UnblockIsForTheSameUserOrAnAdmin(t *testing.T) {
	srv, addr := tcpServerOn(t, Config{Users: []User{
		{Name: "a", PasswordHash: bcryptHash(t, "pa"), Locks: []string{"*"}},
		{Name: "b", PasswordHash: bcryptHash(t, "pb"), Locks: []string{"*"}},
		{Name: "root", PasswordHash: bcryptHash(t, "pr"), Locks: []string{"*"}, Admin: true},
	}})
	login := func(user, pass string) *wireConn {
		c := dialWire(t, addr)
		if got := c.do(t, "AUTH", user, pass); got != "+OK" {
			t.Fatalf("AUTH %s: %q", user, got)
		}
		return c
	}
	holder, w := login("a", "pa"), login("a", "pa")
	holder.do(t, "LOCK", "x")
	id := clientID(t, w)
	w.send(t, []string{"LOCK", "x"})
	deadline := time.Now().Add(5 * time.Second)
	for waitersOf(srv, "x") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the LOCK did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	if got := login("b", "pb").do(t, "CLIENT", "UNBLOCK", id); got != ":0" {
		t.Fatalf("CLIENT UNBLOCK of user a's connection by user b: %q; want :0", got)
	}
	if waitersOf(srv, "x") != 1 {
		t.Fatal("user b unblocked user a's LOCK")
	}
	if got := login("a", "pa").do(t, "CLIENT", "UNBLOCK", id); got != ":1" {
		t.Fatalf("CLIENT UNBLOCK by the same user: %q", got)
	}
	if got := w.reply(t); got != "$nil" {
		t.Fatalf("the unblocked LOCK: %q", got)
	}
	w.send(t, []string{"LOCK", "x"})
	for waitersOf(srv, "x") != 1 {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("the LOCK did not queue again")
		}
		time.Sleep(time.Millisecond)
	}
	if got := login("root", "pr").do(t, "CLIENT", "UNBLOCK", id); got != ":1" {
		t.Fatalf("CLIENT UNBLOCK by an admin: %q", got)
	}
	if got := w.reply(t); got != "$nil" {
		t.Fatalf("the LOCK an admin unblocked: %q", got)
	}
}
