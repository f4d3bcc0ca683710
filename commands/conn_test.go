package commands

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/persist"
)

// Tests of the one connection lifecycle (conn.go) against a fake
// transport. The test goroutine is the owner's goroutine: it reads for its
// connections as a driver does (c.input, no more than readRoom while
// wantsInput), runs the owner's rounds itself (owner.round), and plays the
// socket becoming writable (c.write). What other goroutines post — a
// password check's result, a command run off the owner, a WAIT timer — is
// waited for on the owner's inbox with a deadline; nothing sleeps.

// inboxDeadline bounds every wait for another goroutine.
const inboxDeadline = 5 * time.Second

// fakeDriver is a transport that moves no bytes: it keeps what the
// lifecycle writes, counts closes, and notes what interest was last told.
type fakeDriver struct {
	out     map[*conn][]byte // written output, per connection
	closes  map[*conn]int
	reading map[*conn]bool // wantsInput when interest was last called
	// stalled: the client reads nothing, so write takes no output.
	stalled bool
	// woke has a token when post woke the owner (see testOwner.waitInbox).
	woke chan struct{}
}

func (d *fakeDriver) write(c *conn) error {
	if d.stalled {
		return nil
	}
	d.out[c] = append(d.out[c], c.sess.w.B...)
	c.sess.w.B = c.sess.w.B[:0]
	return nil
}

func (d *fakeDriver) interest(c *conn) { d.reading[c] = c.wantsInput() }
func (d *fakeDriver) closeIO(c *conn)  { d.closes[c]++ }

func (d *fakeDriver) wake() {
	select {
	case d.woke <- struct{}{}:
	default:
	}
}

// fakeIO is a connection's socket as other goroutines see it.
type fakeIO struct{ shutdowns atomic.Int32 }

func (f *fakeIO) shutdown()   { f.shutdowns.Add(1) }
func (f *fakeIO) breakWrite() {}

// testOwner is an owner with a fake driver, and the connections it owns.
type testOwner struct {
	t     *testing.T
	srv   *Server
	own   *owner
	drv   *fakeDriver
	rbuf  []byte // the driver's read buffer, reused: input may only borrow it
	conns []*conn
}

// newTestOwner returns an owner of srv's connections; syncHere commits as
// an event loop does (on the owner's goroutine), else as a connection's
// goroutine does (through the store's committer). When the test ends,
// every connection is closed and the server's invariants are checked.
func newTestOwner(t *testing.T, srv *Server, syncHere bool) *testOwner {
	t.Helper()
	drv := &fakeDriver{
		out:     make(map[*conn][]byte),
		closes:  make(map[*conn]int),
		reading: make(map[*conn]bool),
		woke:    make(chan struct{}, 1),
	}
	h := &testOwner{t: t, srv: srv, own: &owner{}, drv: drv, rbuf: make([]byte, readChunk)}
	h.own.init(srv, drv, syncHere)
	t.Cleanup(h.closeAll)
	return h
}

// connect admits a new connection, as accept does.
func (h *testOwner) connect() *conn {
	h.t.Helper()
	c := newConn(h.srv, &fakeIO{})
	c.own = h.own
	ip := net.IPv4(127, 0, 0, 1)
	raddr := &net.TCPAddr{IP: ip, Port: 40000 + len(h.conns)}
	sess, refusal := h.srv.admit(raddr, &net.TCPAddr{IP: ip, Port: 6379}, func(sess *session) {
		sess.c, c.sess = c, sess
	})
	if sess == nil {
		h.t.Fatalf("connection refused: %q", refusal)
	}
	h.own.post(msg{c: c, kind: msgAdd})
	h.conns = append(h.conns, c)
	return c
}

// feed reads data for c as a driver does: while c wants input, at most
// readRoom bytes at a time, into the one read buffer. It returns what c
// did not take.
func (h *testOwner) feed(c *conn, data []byte) []byte {
	for len(data) > 0 && c.wantsInput() {
		n := copy(h.rbuf[:min(c.readRoom(), len(data))], data)
		c.input(h.rbuf[:n])
		data = data[n:]
	}
	return data
}

// send feeds c the requests, one per line ("LOCK x WAIT 100"), as
// multibulk requests; c must take them all.
func (h *testOwner) send(c *conn, lines ...string) {
	h.t.Helper()
	var b []byte
	for _, l := range lines {
		b = append(b, request(strings.Fields(l)...)...)
	}
	if rest := h.feed(c, b); len(rest) > 0 {
		h.t.Fatalf("connection took %d of %d bytes", len(b)-len(rest), len(b))
	}
}

// request encodes a multibulk request.
func request(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

func (h *testOwner) round() { h.own.round() }

// waitInbox returns once the owner's inbox has a message, as an idle
// driver sleeps until post wakes it.
func (h *testOwner) waitInbox() {
	h.t.Helper()
	o := h.own
	o.mu.Lock()
	if len(o.inbox) > 0 {
		o.mu.Unlock()
		return
	}
	o.sleeping = true
	o.mu.Unlock()
	select {
	case <-h.drv.woke:
	case <-time.After(inboxDeadline):
		h.t.Fatal("no message reached the owner in time")
	}
	o.awake()
}

// roundsUntil runs rounds, waiting for messages between them, until done.
func (h *testOwner) roundsUntil(what string, done func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(inboxDeadline)
	for {
		h.round()
		if done() {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not in time", what)
		}
		h.waitInbox()
	}
}

// await runs rounds until c has written output, and returns its replies.
func (h *testOwner) await(c *conn) []string {
	h.t.Helper()
	h.roundsUntil("a reply", func() bool { return len(h.drv.out[c]) > 0 })
	return h.replies(c)
}

// waitGoroutines waits for the goroutines the server started (password
// checks, commands run off the owner).
func (h *testOwner) waitGoroutines() {
	h.t.Helper()
	done := make(chan struct{})
	go func() {
		h.srv.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(inboxDeadline):
		h.t.Fatal("the server's goroutines did not end in time")
	}
}

// rawReplies returns and forgets c's written replies.
func (h *testOwner) rawReplies(c *conn) []string {
	h.t.Helper()
	b := h.drv.out[c]
	delete(h.drv.out, c)
	var out []string
	for len(b) > 0 {
		n := replyLen(h.t, b)
		out = append(out, string(b[:n]))
		b = b[n:]
	}
	return out
}

// replies returns and forgets c's written replies, summarized: "KEY" for
// a lock key, "NULL", "+PONG", ":1", "-WRONGPASS" (an error's code),
// "$text" for other bulk strings, "*3" for an aggregate of 3.
func (h *testOwner) replies(c *conn) []string {
	h.t.Helper()
	raw := h.rawReplies(c)
	out := make([]string, len(raw))
	for i, r := range raw {
		out[i] = summarize(r)
	}
	return out
}

func summarize(r string) string {
	line, _, _ := strings.Cut(r, "\r\n")
	switch r[0] {
	case '$':
		if line == "$-1" {
			return "NULL"
		}
		body := bulkBody(r)
		if _, err := locktable.ParseKey([]byte(body)); err == nil {
			return "KEY"
		}
		return "$" + body
	case '_':
		return "NULL"
	case '-':
		code, _, _ := strings.Cut(line, " ")
		return code
	}
	return line
}

// bulkBody is the content of a bulk string reply.
func bulkBody(r string) string {
	_, body, _ := strings.Cut(r, "\r\n")
	return strings.TrimSuffix(body, "\r\n")
}

// replyLen is the length of the RESP reply b starts with.
func replyLen(t testing.TB, b []byte) int {
	t.Helper()
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 {
		t.Fatalf("truncated reply %q", b)
	}
	n := i + 2
	size, _ := strconv.Atoi(string(b[1:i]))
	switch b[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return n
	case '$', '=', '!':
		if size < 0 {
			return n
		}
		return n + size + 2
	case '*', '%', '~', '>', '|':
		if b[0] == '%' || b[0] == '|' {
			size *= 2
		}
		for range max(size, 0) {
			n += replyLen(t, b[n:])
		}
		return n
	}
	t.Fatalf("not a reply: %q", b)
	return 0
}

// take makes c hold name (TRYLOCK) and returns the key.
func (h *testOwner) take(c *conn, name string, opts ...string) string {
	h.t.Helper()
	h.send(c, strings.Join(append([]string{"TRYLOCK", name}, opts...), " "))
	h.roundsUntil("TRYLOCK's reply", func() bool { return len(h.drv.out[c]) > 0 })
	raw := h.rawReplies(c)
	if len(raw) != 1 || summarize(raw[0]) != "KEY" {
		h.t.Fatalf("TRYLOCK %s = %q; want a key", name, raw)
	}
	return bulkBody(raw[0])
}

// lockState is who holds a lock and how many wait for it.
type lockState struct {
	holders []uint64 // session ids; 0: a detached hold
	waiters int
}

func (h *testOwner) lock(name string) lockState {
	info, ok := h.srv.eng.table().Lock(name, h.srv.now())
	if !ok {
		return lockState{}
	}
	var st lockState
	for _, hd := range info.Holds {
		id := uint64(hd.SessionID)
		if hd.Detached {
			id = 0
		}
		st.holders = append(st.holders, id)
	}
	st.waiters = len(info.Waiters)
	return st
}

// heldBy reports whether name is held by c alone (c nil: by a detached
// hold alone) and nobody waits.
func (h *testOwner) heldBy(name string, c *conn) bool {
	var id uint64
	if c != nil {
		id = c.sess.id
	}
	st := h.lock(name)
	return len(st.holders) == 1 && st.holders[0] == id && st.waiters == 0
}

func (h *testOwner) free(name string) bool {
	st := h.lock(name)
	return len(st.holders) == 0 && st.waiters == 0
}

// closeAll closes every connection, waits for what they started, and
// checks that nothing outlives them: no session, no bound hold, no waiter.
func (h *testOwner) closeAll() {
	t := h.t
	for _, c := range h.conns {
		h.own.close(c)
	}
	h.round()
	h.srv.waitSessionsGone(inboxDeadline)
	h.waitGoroutines()
	h.round()
	h.own.exit()
	h.srv.mu.Lock()
	left := len(h.srv.sessions)
	h.srv.mu.Unlock()
	if left > 0 {
		t.Errorf("%d sessions outlived their connections", left)
	}
	for _, l := range h.srv.eng.table().Locks(locktable.Query{}, h.srv.now()) {
		for _, hd := range l.Holds {
			if !hd.Detached {
				t.Errorf("hold on %q outlived its connection", l.Name)
			}
		}
		if len(l.Waiters) > 0 {
			t.Errorf("%d waiters on %q outlived their connections", len(l.Waiters), l.Name)
		}
	}
	for _, c := range h.conns {
		if n := h.drv.closes[c]; n != 1 {
			t.Errorf("client %d: transport closed %d times; want 1", c.sess.id, n)
		}
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// TestConn_PipelinedCommandsAnsweredAfterBlockedLock: requests behind a
// LOCK that queues are read but not run until its grant, then answered in
// order after the key, however the bytes arrive.
func TestConn_PipelinedCommandsAnsweredAfterBlockedLock(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		chunk int // bytes per read, a round after each; 0: one read
		want  []string
	}{
		{"one read", []string{"LOCK x", "PING", "ECHO hi"}, 0, []string{"KEY", "+PONG", "$hi"}},
		{"byte by byte", []string{"LOCK x", "PING", "ECHO hi"}, 1, []string{"KEY", "+PONG", "$hi"}},
		{"a lock change behind", []string{"LOCK x WAIT 60000", "TRYLOCK y", "PING"}, 7, []string{"KEY", "KEY", "+PONG"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestOwner(t, newTestServer(t), false)
			a, b := h.connect(), h.connect()
			key := h.take(a, "x")
			var in []byte
			for _, l := range tc.lines {
				in = append(in, request(strings.Fields(l)...)...)
			}
			chunk := tc.chunk
			if chunk == 0 {
				chunk = len(in)
			}
			for len(in) > 0 {
				n := min(chunk, len(in))
				if rest := h.feed(b, in[:n]); len(rest) > 0 {
					t.Fatalf("a waiting connection stopped reading with %d bytes buffered", len(b.src))
				}
				in = in[n:]
				h.round()
			}
			if got := h.replies(b); len(got) > 0 {
				t.Fatalf("before the grant: replies %q; want none", got)
			}
			if !h.free("y") || h.lock("x").waiters != 1 {
				t.Fatalf("before the grant: y %+v, x %+v; want y free, one waiter on x", h.lock("y"), h.lock("x"))
			}
			h.send(a, "UNLOCK x "+key)
			h.round()
			if got, want := h.replies(a), []string{":1"}; !equal(got, want) {
				t.Errorf("UNLOCK: %q; want %q", got, want)
			}
			if got := h.replies(b); !equal(got, tc.want) {
				t.Errorf("after the grant: %q; want %q", got, tc.want)
			}
			if !h.heldBy("x", b) {
				t.Errorf("x: %+v; want held by the waiter", h.lock("x"))
			}
		})
	}
}

// postTimeout posts what c's WAIT timer posts, for wait sequence seq.
func (h *testOwner) postTimeout(c *conn, seq uint32) {
	h.own.post(msg{c: c, kind: msgTimeout, seq: seq})
}

// TestConn_GrantAndWaitTimeoutRaces: whichever of a grant and a WAIT
// timeout the owner handles first, the waiter gets exactly one reply, and
// the lock's state agrees with it; a timeout of an earlier wait is
// ignored.
func TestConn_GrantAndWaitTimeoutRaces(t *testing.T) {
	cases := []struct {
		name string
		wait string // LOCK x WAIT
		// act posts the completions; unlock sends the holder's UNLOCK
		// (whose grant is posted at once, handled in the next round).
		act        func(h *testOwner, b *conn, unlock func())
		want       []string
		wantHolder string // "a", "b"
		waiters    int
	}{
		{"timer runs out", "1", func(h *testOwner, b *conn, unlock func()) { h.waitInbox() },
			[]string{"NULL", "+PONG"}, "a", 0},
		{"timeout", "60000", func(h *testOwner, b *conn, unlock func()) { h.postTimeout(b, b.waitSeq) },
			[]string{"NULL", "+PONG"}, "a", 0},
		{"timeout, then grant", "60000", func(h *testOwner, b *conn, unlock func()) {
			h.postTimeout(b, b.waitSeq)
			unlock()
		}, []string{"KEY", "+PONG"}, "b", 0},
		{"grant, then timeout", "60000", func(h *testOwner, b *conn, unlock func()) {
			seq := b.waitSeq
			unlock()
			h.postTimeout(b, seq)
		}, []string{"KEY", "+PONG"}, "b", 0},
		{"timeout of an earlier wait", "60000", func(h *testOwner, b *conn, unlock func()) {
			h.postTimeout(b, b.waitSeq-1)
		}, nil, "a", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestOwner(t, newTestServer(t), false)
			a, b := h.connect(), h.connect()
			key := h.take(a, "x")
			// An earlier wait of b's, granted: its sequence is stale now.
			ykey := h.take(a, "y")
			h.send(b, "LOCK y")
			h.send(a, "UNLOCK y "+ykey)
			h.round()
			h.replies(a)
			if got := h.replies(b); !equal(got, []string{"KEY"}) {
				t.Fatalf("earlier wait: %q; want a key", got)
			}
			h.send(b, "LOCK x WAIT "+tc.wait, "PING")
			if b.wait == nil || b.wait.name != "x" {
				t.Fatal("LOCK x does not wait")
			}
			tc.act(h, b, func() { h.send(a, "UNLOCK x "+key) })
			h.round()
			if got := h.replies(b); !equal(got, tc.want) {
				t.Errorf("waiter: %q; want %q", got, tc.want)
			}
			holder := map[string]*conn{"a": a, "b": b}[tc.wantHolder]
			if st := h.lock("x"); len(st.holders) != 1 || st.holders[0] != holder.sess.id || st.waiters != tc.waiters {
				t.Errorf("x: %+v; want held by %s, %d waiters", st, tc.wantHolder, tc.waiters)
			}
			if tc.waiters == 0 && b.timer != nil {
				t.Error("the WAIT timer is left running")
			}
		})
	}
}

// TestConn_KillWhileWaiting: a connection killed while its LOCK waits
// leaves the queue and releases its holds, whether its grant comes before
// the kill, after it, or never; it is never answered.
func TestConn_KillWhileWaiting(t *testing.T) {
	cases := []struct {
		name string
		kill func(h *testOwner, b *conn, unlock func())
	}{
		{"kill", func(h *testOwner, b *conn, unlock func()) { b.sess.kill() }},
		{"CLIENT KILL from another connection", func(h *testOwner, b *conn, unlock func()) {
			k := h.connect()
			h.send(k, "CLIENT KILL ID "+strconv.FormatUint(b.sess.id, 10))
			h.round()
			if got := h.replies(k); !equal(got, []string{":1"}) {
				t.Errorf("CLIENT KILL: %q; want :1", got)
			}
		}},
		{"kill, then grant", func(h *testOwner, b *conn, unlock func()) {
			b.sess.kill()
			unlock()
		}},
		{"grant, then kill", func(h *testOwner, b *conn, unlock func()) {
			unlock()
			b.sess.kill()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestOwner(t, newTestServer(t), false)
			a, b := h.connect(), h.connect()
			key := h.take(a, "x")
			h.take(b, "y")
			h.send(b, "LOCK x", "PING")
			h.round()
			unlocked := false
			tc.kill(h, b, func() {
				h.send(a, "UNLOCK x "+key)
				unlocked = true
			})
			h.round()
			if !unlocked {
				if !h.heldBy("x", a) {
					t.Errorf("x: %+v; want held by its holder, no waiter", h.lock("x"))
				}
				h.send(a, "UNLOCK x "+key)
				h.round()
			}
			if got := h.replies(b); len(got) > 0 {
				t.Errorf("killed connection answered %q", got)
			}
			if !b.closed || h.drv.closes[b] != 1 || b.io.(*fakeIO).shutdowns.Load() != 1 {
				t.Errorf("closed %v, transport closed %d times, shut down %d times; want closed once, shut down once",
					b.closed, h.drv.closes[b], b.io.(*fakeIO).shutdowns.Load())
			}
			if !h.free("x") || !h.free("y") {
				t.Errorf("x %+v, y %+v; want both free", h.lock("x"), h.lock("y"))
			}
		})
	}
}

// TestConn_GrantToClosedConnectionIsReleased: a grant that reaches its
// connection after the connection closed (the transport saw the hang-up
// in the same round) is released, a detached hold included, and the lock
// passes to the next waiter.
func TestConn_GrantToClosedConnectionIsReleased(t *testing.T) {
	for _, lock := range []string{"LOCK x", "LOCK x DETACH TTL 60000"} {
		t.Run(lock, func(t *testing.T) {
			h := newTestOwner(t, newTestServer(t), false)
			a, b, c := h.connect(), h.connect(), h.connect()
			key := h.take(a, "x")
			h.send(b, lock)
			h.send(c, "LOCK x")
			h.round()
			h.send(a, "UNLOCK x "+key) // grants b: posted
			h.own.close(b)             // b hung up, seen before the inbox
			h.round()
			if got := h.replies(b); len(got) > 0 {
				t.Errorf("closed connection answered %q", got)
			}
			if got, want := h.replies(c), []string{"KEY"}; !equal(got, want) {
				t.Errorf("next waiter: %q; want %q", got, want)
			}
			if !h.heldBy("x", c) {
				t.Errorf("x: %+v; want held by the next waiter only", h.lock("x"))
			}
		})
	}
}

var errInjected = errors.New("injected fsync failure")

// newStoreServer returns a server with a store in mode always whose next
// commit fails (before its fsync) once fail is set.
func newStoreServer(t *testing.T) (*Server, *atomic.Bool) {
	t.Helper()
	fail := new(atomic.Bool)
	st, err := persist.Open(persist.Options{Dir: t.TempDir(), Mode: persist.Always, Fault: func(point string) error {
		if point == "before-fsync" && fail.CompareAndSwap(true, false) {
			return errInjected
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	srv, err := New(Config{Listen: "127.0.0.1:0", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.attachStore(); err != nil {
		t.Fatal(err)
	}
	return srv, fail
}

// TestConn_CommitFailureUndoesWhatRepliesWouldReveal: with --fsync always
// a round's replies wait for its commit. When it fails, nothing it did
// not make durable is acknowledged: the connections whose replies depend
// on it are closed unanswered, holds granted at once to them are undone
// (a detached one too), a waiter's grant is undone and the waiter closed;
// a reply that depends on nothing is still written.
func TestConn_CommitFailureUndoesWhatRepliesWouldReveal(t *testing.T) {
	for _, mode := range []struct {
		name     string
		syncHere bool
	}{{"event loop commit", true}, {"group commit", false}} {
		for _, fail := range []bool{false, true} {
			name := mode.name + "/commit succeeds"
			if fail {
				name = mode.name + "/commit fails"
			}
			t.Run(name, func(t *testing.T) {
				srv, failNext := newStoreServer(t)
				h := newTestOwner(t, srv, mode.syncHere)
				if !h.own.deferCommits {
					t.Fatal("the owner does not defer commits with --fsync always")
				}
				a, b, c, d, p := h.connect(), h.connect(), h.connect(), h.connect(), h.connect()
				key := h.take(a, "x")
				h.send(b, "LOCK x")
				h.round()
				failNext.Store(fail)
				h.send(a, "UNLOCK x "+key)              // releases x, grants b
				h.send(c, "TRYLOCK y DETACH TTL 60000") // granted at once, detached
				h.send(d, "TRYLOCK z")                  // granted at once, bound
				h.send(p, "PING")                       // depends on no change
				h.round()
				if failNext.Load() {
					t.Fatal("the round did not commit")
				}
				if got := h.replies(p); !equal(got, []string{"+PONG"}) {
					t.Errorf("PING: %q; want +PONG", got)
				}
				if srv.cfg.Store.Pending() {
					t.Error("changes left uncommitted after the round")
				}
				if !fail {
					for _, r := range []struct {
						c    *conn
						want string
					}{{a, ":1"}, {b, "KEY"}, {c, "KEY"}, {d, "KEY"}} {
						if got := h.replies(r.c); !equal(got, []string{r.want}) {
							t.Errorf("client %d: %q; want %s", r.c.sess.id, got, r.want)
						}
					}
					if !h.heldBy("x", b) || !h.heldBy("y", nil) || !h.heldBy("z", d) {
						t.Errorf("x %+v, y %+v, z %+v; want held by b, detached, d", h.lock("x"), h.lock("y"), h.lock("z"))
					}
					return
				}
				for _, cc := range []*conn{a, b, c, d} {
					if got := h.replies(cc); len(got) > 0 {
						t.Errorf("client %d answered %q after its commit failed", cc.sess.id, got)
					}
					if !cc.closed {
						t.Errorf("client %d left open after its commit failed", cc.sess.id)
					}
				}
				if b.io.(*fakeIO).shutdowns.Load() != 1 {
					t.Error("the waiter whose grant was undone was not killed")
				}
				for _, name := range []string{"x", "y", "z"} {
					if !h.free(name) {
						t.Errorf("%s: %+v; want free (not committed, so not granted)", name, h.lock(name))
					}
				}
			})
		}
	}
}

// TestConn_Backpressure: a client that does not read stops having its
// requests run once its unsent output reaches the bound, and stops being
// read once a bound's worth of whole requests waits; both bounds are
// smaller before authentication. Once it reads, the rest runs in order.
func TestConn_Backpressure(t *testing.T) {
	cases := []struct {
		name     string
		srv      func(t *testing.T) *Server
		cmd      string // a request taking one argument, echoing it
		argLen   int
		outBound int
		inBound  int
	}{
		{"authenticated", func(t *testing.T) *Server { return newTestServer(t) }, "ECHO", 60000, maxReplyBuf, maxPending},
		{"unauthenticated", func(t *testing.T) *Server { return newAuthServer(t) }, "PING", 3000, preAuthOutput, preAuthRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestOwner(t, tc.srv(t), false)
			c := h.connect()
			arg := strings.Repeat("a", tc.argLen)
			req := request(tc.cmd, arg)
			reply := "$" + strconv.Itoa(tc.argLen) + "\r\n" + arg + "\r\n"
			ran := (tc.outBound + len(reply) - 1) / len(reply) // requests run before the output is full
			n := ran + tc.inBound/len(req) + 2                 // more than both bounds take
			in := bytes.Repeat(req, n)

			h.drv.stalled = true
			rest := h.feed(c, in)
			h.round()
			if len(rest) == 0 {
				t.Fatalf("read all %d requests of a client that reads nothing", n)
			}
			if got := len(c.sess.w.B) / len(reply); got != ran {
				t.Errorf("ran %d requests before the output bound; want %d", got, ran)
			}
			if len(c.src) < tc.inBound || h.drv.reading[c] {
				t.Errorf("stopped reading at %d bytes buffered (driver told reading=%v); want at least %d, not reading",
					len(c.src), h.drv.reading[c], tc.inBound)
			}

			h.drv.stalled = false
			for i := 0; len(rest) > 0 || len(c.src) > 0 || len(c.sess.w.B) > 0; i++ {
				if i > 4*n {
					t.Fatal("the client's requests did not all run")
				}
				c.write() // writable
				h.round()
				rest = h.feed(c, rest) // readable
			}
			got := h.rawReplies(c)
			if len(got) != n {
				t.Fatalf("%d replies; want %d", len(got), n)
			}
			for i, r := range got {
				if r != reply {
					t.Fatalf("reply %d: %.40q; want %.40q", i, r, reply)
				}
			}
		})
	}
}

// TestConn_LargeRequest: a request not yet whole is read on past
// maxPending (the frame scanner bounds it by --max-bulk); before
// authentication one over preAuthRequest is a protocol error.
func TestConn_LargeRequest(t *testing.T) {
	cases := []struct {
		name string
		srv  func(t *testing.T) *Server
		cmd  string
		size int
		want string
	}{
		{"authenticated: read on", func(t *testing.T) *Server {
			srv, err := New(Config{Listen: "127.0.0.1:0", MaxBulk: 2 << 20})
			if err != nil {
				t.Fatal(err)
			}
			return srv
		}, "ECHO", maxPending + maxPending/2, "$"},
		{"unauthenticated: refused", func(t *testing.T) *Server { return newAuthServer(t) },
			"PING", preAuthRequest + 1, "-ERR Protocol error: " + errPreAuthTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestOwner(t, tc.srv(t), false)
			c := h.connect()
			in := request(tc.cmd, strings.Repeat("a", tc.size))
			pastBound := false
			for len(in) > 0 && c.wantsInput() {
				n := copy(h.rbuf[:min(c.readRoom(), len(in))], in)
				c.input(h.rbuf[:n])
				in = in[n:]
				if len(c.src) > maxPending && c.wantsInput() {
					pastBound = true
				}
				h.round()
			}
			got := h.rawReplies(c)
			if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
				t.Fatalf("replies %.60q; want one starting %q", got, tc.want)
			}
			if tc.want == "$" {
				if len(in) > 0 || !pastBound {
					t.Errorf("%d bytes left unread; read on past maxPending: %v", len(in), pastBound)
				}
				if got := len(bulkBody(got[0])); got != tc.size {
					t.Errorf("echoed %d bytes; want %d", got, tc.size)
				}
				return
			}
			if !c.closed {
				t.Error("connection left open after a protocol error")
			}
		})
	}
}

// TestConn_AuthCheckResumesConnection: AUTH's password check runs off
// the owner; its completion (msgChecked) answers the AUTH and then the
// requests pipelined behind it, in order, as the new login allows.
func TestConn_AuthCheckResumesConnection(t *testing.T) {
	cases := []struct {
		name string
		auth string
		kill bool // killed while the check runs
		want []string
	}{
		{"right password", "AUTH app app-pass", false, []string{"+OK", "+PONG", "KEY"}},
		{"wrong password", "AUTH app nope", false, []string{"-WRONGPASS", "+PONG", "-NOAUTH"}},
		{"HELLO with AUTH", "HELLO 3 AUTH app app-pass", false, []string{"%7", "+PONG", "KEY"}},
		{"killed while checking", "AUTH app app-pass", true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestOwner(t, newAuthServer(t), false)
			c := h.connect()
			h.send(c, tc.auth, "PING", "TRYLOCK app:x")
			if c.wait == nil || c.wait.check == nil {
				t.Fatal("AUTH does not wait for its check")
			}
			h.round()
			if got := h.replies(c); len(got) > 0 {
				t.Fatalf("before the check: %q; want nothing", got)
			}
			if tc.kill {
				c.sess.kill()
				h.round()
				h.waitGoroutines() // the check, which posts its completion
				h.round()
				if got := h.replies(c); len(got) > 0 || !c.closed {
					t.Errorf("killed connection: replies %q, closed %v; want none, closed", got, c.closed)
				}
				if !h.free("app:x") {
					t.Error("a request behind the AUTH of a killed connection ran")
				}
				return
			}
			if got := h.await(c); !equal(got, tc.want) {
				t.Errorf("%q", got)
				t.Errorf("want %q", tc.want)
			}
		})
	}
}

// TestConn_StepwiseLocksResumesInOrder: a LOCKS page that examines more
// than locksBudget names is served in steps, one per round, the owner
// serving other connections between them; the requests behind it are
// answered after it, in order.
func TestConn_StepwiseLocksResumesInOrder(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestOwner(t, srv, false)
	// 2.5 budgets of names, none with the pattern's (absent) prefix.
	holder := srv.table.NewSession(1<<40, nil)
	var ev locktable.Events
	const names = locksBudget*2 + locksBudget/2
	for i := range names {
		ev.Reset()
		name := "k" + strconv.Itoa(100000+i)
		if _, _, err := srv.table.Acquire(&ev, holder, locktable.Request{Name: name, Size: 1, Rand: uint64(i)}, srv.now(), false); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { srv.table.CloseSession(&ev, holder, srv.now()) })

	b, d := h.connect(), h.connect()
	h.send(b, "LOCKS MATCH *999", "PING")
	if b.wait == nil || b.wait.resume == nil {
		t.Fatal("LOCKS did not stop after its first step")
	}
	h.send(d, "PING") // served between the steps
	h.round()
	if got, want := h.replies(d), []string{"+PONG"}; !equal(got, want) {
		t.Errorf("other connection between steps: %q; want %q", got, want)
	}
	if got := h.replies(b); len(got) > 0 || b.wait == nil || b.wait.resume == nil {
		t.Fatalf("after the second step: replies %q; want none, a third step to come", got)
	}
	// The steps go on, one a round (bounded by names and by work), until
	// the page is whole.
	var got []string
	for rounds := 0; len(got) == 0; rounds++ {
		if rounds > 100 {
			t.Fatal("no reply after 100 more steps")
		}
		h.round()
		got = h.replies(b)
	}
	matches := 0
	for i := range names {
		if (100000+i)%1000 == 999 {
			matches++
		}
	}
	want := []string{"*" + strconv.Itoa(matches), "+PONG"}
	if !equal(got, want) {
		t.Errorf("after the last step: %q; want %q", got, want)
	}
}

// blockingEngine is the local engine made to act like the Raft engine:
// its changes block their caller, so the lifecycle runs them off the
// owner. gates, if set for an operation, stop it at that point until the
// test opens them.
type blockingEngine struct {
	localEngine
	gates map[string]*gate // "acquire-waiting": after a LOCK's change; "cancelWait": before it
}

// gate stops an operation: it tells reached, then waits for open to close.
type gate struct{ reached, open chan struct{} }

func newGate() *gate { return &gate{reached: make(chan struct{}, 16), open: make(chan struct{})} }

func (g *gate) pass() {
	g.reached <- struct{}{}
	<-g.open
}

// awaitReached waits until an operation reached g.
func (g *gate) awaitReached(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(inboxDeadline):
		t.Fatal("the operation did not reach its gate in time")
	}
}

func (e *blockingEngine) blocking() bool { return true }

func (e *blockingEngine) acquire(ev *locktable.Events, sess *session, req locktable.Request, now int64, wait bool) (locktable.Key, locktable.Outcome, error) {
	k, o, err := e.localEngine.acquire(ev, sess, req, now, wait)
	if g := e.gates["acquire-waiting"]; g != nil && wait {
		g.pass()
	}
	return k, o, err
}

func (e *blockingEngine) cancelWait(ev *locktable.Events, sess *session, now int64) bool {
	if g := e.gates["cancelWait"]; g != nil {
		g.pass()
	}
	return e.localEngine.cancelWait(ev, sess, now)
}

// newBlockingOwner returns an owner of connections to a server whose
// engine blocks, with gates at the named operations (opened when the
// test ends at the latest).
func newBlockingOwner(t *testing.T, gated ...string) (*testOwner, map[string]*gate) {
	srv := newTestServer(t)
	eng := &blockingEngine{localEngine: localEngine{srv.table}, gates: map[string]*gate{}}
	for _, op := range gated {
		eng.gates[op] = newGate()
	}
	srv.eng = eng
	h := newTestOwner(t, srv, false)
	t.Cleanup(func() { // before closeAll
		for _, g := range eng.gates {
			select {
			case <-g.open:
			default:
				close(g.open)
			}
		}
	})
	return h, eng.gates
}

// TestConn_BlockingEngine_RunsAfterEarlierOutputIsWritten: a command that
// runs off the owner writes its reply into the connection's output, so it
// starts only once the replies before it are written; the requests behind
// it are answered after it.
func TestConn_BlockingEngine_RunsAfterEarlierOutputIsWritten(t *testing.T) {
	h, _ := newBlockingOwner(t)
	b := h.connect()
	h.drv.stalled = true
	h.send(b, "PING", "LOCK y", "ECHO after")
	if b.wait == nil || b.wait.run == nil {
		t.Fatal("LOCK does not run off the owner")
	}
	h.round()
	if b.wait.started {
		t.Fatal("LOCK started before the reply ahead of it was written")
	}
	h.drv.stalled = false
	b.write() // writable
	if !b.wait.started {
		t.Fatal("LOCK not started once the output was written")
	}
	if got, want := h.replies(b), []string{"+PONG"}; !equal(got, want) {
		t.Errorf("first write: %q; want %q", got, want)
	}
	if got, want := h.await(b), []string{"KEY", "$after"}; !equal(got, want) {
		t.Errorf("after the run: %q; want %q", got, want)
	}
	if !h.heldBy("y", b) {
		t.Errorf("y: %+v; want held by the client", h.lock("y"))
	}
}

// TestConn_BlockingEngine_EarlyGrantKeptUntilRan: a LOCK's grant can
// arrive before the LOCK's own run returns (another connection's UNLOCK
// applied in between): the grant is kept and answered once the run is
// done; meanwhile the owner serves others.
func TestConn_BlockingEngine_EarlyGrantKeptUntilRan(t *testing.T) {
	h, gates := newBlockingOwner(t, "acquire-waiting")
	a, b, d := h.connect(), h.connect(), h.connect()
	key := h.take(a, "x")
	h.send(b, "LOCK x", "PING")
	gates["acquire-waiting"].awaitReached(t) // queued in the table; its run not returned
	h.send(d, "PING")
	if got, want := h.await(d), []string{"+PONG"}; !equal(got, want) {
		t.Errorf("another connection while LOCK runs: %q; want %q", got, want)
	}
	h.send(a, "UNLOCK x "+key)
	if got, want := h.await(a), []string{":1"}; !equal(got, want) {
		t.Errorf("UNLOCK: %q; want %q", got, want)
	}
	if b.early == nil {
		t.Fatal("the grant that came before the LOCK's run returned was not kept")
	}
	if got := h.replies(b); len(got) > 0 {
		t.Fatalf("answered %q before the LOCK's run returned", got)
	}
	close(gates["acquire-waiting"].open)
	if got, want := h.await(b), []string{"KEY", "+PONG"}; !equal(got, want) {
		t.Errorf("after the run: %q; want %q", got, want)
	}
	if b.early != nil || !h.heldBy("x", b) {
		t.Errorf("early %v, x %+v; want the grant delivered, x held by the waiter", b.early, h.lock("x"))
	}
}

// TestConn_BlockingEngine_WaitTimeout: with a blocking engine, leaving
// the queue when WAIT runs out is itself run off the owner; if the LOCK
// was granted meanwhile, the grant is the reply.
func TestConn_BlockingEngine_WaitTimeout(t *testing.T) {
	cases := []struct {
		name       string
		grant      bool // the holder unlocks while the cancellation runs
		want       []string
		wantHolder string
	}{
		{"runs out", false, []string{"NULL", "+PONG"}, "a"},
		{"granted meanwhile", true, []string{"KEY", "+PONG"}, "b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, gates := newBlockingOwner(t, "cancelWait")
			a, b := h.connect(), h.connect()
			key := h.take(a, "x")
			h.send(b, "LOCK x WAIT 60000", "PING")
			h.roundsUntil("LOCK queued", func() bool { return b.wait != nil && b.wait.run == nil })
			h.postTimeout(b, b.waitSeq)
			h.round()
			if b.wait == nil || b.wait.run == nil {
				t.Fatal("the timeout's cancellation does not run off the owner")
			}
			gates["cancelWait"].awaitReached(t)
			if tc.grant {
				h.send(a, "UNLOCK x "+key)
				h.await(a)
				if b.early == nil {
					t.Error("the grant that came while the cancellation ran was not kept")
				}
			}
			close(gates["cancelWait"].open)
			if got := h.await(b); !equal(got, tc.want) {
				t.Errorf("waiter: %q; want %q", got, tc.want)
			}
			holder := map[string]*conn{"a": a, "b": b}[tc.wantHolder]
			if !h.heldBy("x", holder) {
				t.Errorf("x: %+v; want held by %s only", h.lock("x"), tc.wantHolder)
			}
		})
	}
}

// waitingOn is the lock CLIENT LIST shows c blocked on.
func waitingOn(c *conn) string {
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	return c.sess.waiting
}

// TestConn_BlockingEngine_WaitTimeoutClearsWaiting: once a LOCK's WAIT
// has run out, CLIENT LIST no longer shows its connection blocked.
func TestConn_BlockingEngine_WaitTimeoutClearsWaiting(t *testing.T) {
	h, _ := newBlockingOwner(t)
	a, b := h.connect(), h.connect()
	h.take(a, "x")
	h.send(b, "LOCK x WAIT 60000")
	h.roundsUntil("LOCK queued", func() bool { return b.wait != nil && b.wait.run == nil })
	if got := waitingOn(b); got != "x" {
		t.Fatalf("while queued: waiting on %q; want x", got)
	}
	h.postTimeout(b, b.waitSeq)
	if got, want := h.await(b), []string{"NULL"}; !equal(got, want) {
		t.Fatalf("%q; want %q", got, want)
	}
	if got := waitingOn(b); got != "" {
		t.Errorf("after the WAIT ran out: CLIENT LIST shows the connection blocked on %q", got)
	}
}

// TestConn_BlockingEngine_ProtocolErrorWhileRunning: input read while a
// command runs off the owner must leave that command's output alone (it
// is the running goroutine's): a protocol error in it is answered after
// the command's reply, then the connection closes.
func TestConn_BlockingEngine_ProtocolErrorWhileRunning(t *testing.T) {
	h, gates := newBlockingOwner(t, "acquire-waiting")
	a, b := h.connect(), h.connect()
	key := h.take(a, "x")
	h.send(b, "LOCK x")
	gates["acquire-waiting"].awaitReached(t)
	if !b.running() {
		t.Fatal("LOCK does not run off the owner")
	}
	h.feed(b, []byte("*x\r\n")) // the client's next request is garbage
	if n := len(b.sess.w.B); n > 0 {
		t.Fatal("the protocol error was written into the output of the command running off the owner")
	}
	h.send(a, "UNLOCK x "+key)
	h.await(a)
	close(gates["acquire-waiting"].open)
	got := h.await(b)
	if len(got) != 2 || got[0] != "KEY" || got[1] != "-ERR" {
		t.Errorf("%q; want the key, then the protocol error", got)
	}
	if !b.closed {
		t.Error("connection left open after a protocol error")
	}
}

// The fakes satisfy the interfaces they stand in for.
var (
	_ driver = (*fakeDriver)(nil)
	_ connIO = (*fakeIO)(nil)
	_ engine = (*blockingEngine)(nil)
)
