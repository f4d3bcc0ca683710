package commands

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/persist"
)

// Edges of the connection lifecycle found by a review of the single-node
// server: each test failed before its fix.

// stopLikeRun does what Run does at shutdown before any connection is
// closed: admits no more state changes (the gate), then takes the final
// state (Store.Close).
func stopLikeRun(t *testing.T, srv *Server) {
	t.Helper()
	srv.beginStop()
	if err := srv.cfg.Store.Close(); err != nil {
		t.Fatalf("final commit: %v", err)
	}
}

// restoredHolds opens the store in dir again, as the next start does,
// and returns the lock names of the holds it would restore.
func restoredHolds(t *testing.T, dir string) []string {
	t.Helper()
	st, err := persist.Open(persist.Options{Dir: dir, Mode: persist.Always})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, _, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
	}
	return names
}

// TestShutdownWaitsForTheRoundsCommit: with --fsync always a command's
// commit is its round's, after the command returned. Run, stopping, takes
// the gate and then the final state (Store.Close): it must not do so
// between a change and its round's commit, or the change would be in the
// final state while the commit, failing on the closed store, refused it
// to its client — a TRYLOCK … DETACH closed unanswered whose hold comes
// back at the next start for its whole TTL, by a key nobody was given.
// The owner holds the gate until its round's commit: the client gets its
// key, and the hold it was given is the one restored.
func TestShutdownWaitsForTheRoundsCommit(t *testing.T) {
	for _, syncHere := range []bool{true, false} {
		name := "group commit"
		if syncHere {
			name = "event loop commit"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := persist.Open(persist.Options{Dir: dir, Mode: persist.Always})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			srv, err := New(Config{Listen: "127.0.0.1:0", Store: st})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.attachStore(); err != nil {
				t.Fatal(err)
			}
			h := newTestOwner(t, srv, syncHere)
			c := h.connect()
			h.round()
			h.send(c, "TRYLOCK y DETACH TTL 600000") // runs; its commit is the round's
			stopped := make(chan struct{})
			go func() { stopLikeRun(t, srv); close(stopped) }() // shutdown begins before the round ends
			select {
			case <-stopped:
				t.Fatal("the final state was taken between the TRYLOCK and its round's commit")
			case <-time.After(50 * time.Millisecond): // a negative check: Run must still wait
			}
			h.round()
			if got := h.replies(c); !equal(got, []string{"KEY"}) || c.closed {
				t.Fatalf("TRYLOCK: %q, closed %v; want its key", got, c.closed)
			}
			select {
			case <-stopped:
			case <-time.After(inboxDeadline):
				t.Fatal("shutdown did not proceed after the round's commit")
			}
			if names := restoredHolds(t, dir); !equal(names, []string{"y"}) {
				t.Errorf("the next start restores %q; want the hold its client was given, y", names)
			}
			h.send(c, "TRYLOCK z")
			if got := h.await(c); len(got) != 1 || !strings.HasPrefix(got[0], "-ERR") {
				t.Errorf("TRYLOCK after the stop began: %q; want -ERR server is shutting down", got)
			}
		})
	}
}

// grantHeldBackForAGoroutineOwner sets up a grant on its way to a
// goroutine-served connection a (owner gor): a's LOCK x DETACH is queued
// behind b's hold, and b's UNLOCK on an event loop (loop, --fsync always)
// has granted it, the grant held back until the loop's round commits.
func grantHeldBackForAGoroutineOwner(t *testing.T) (gor, loop *testOwner, a, b *conn) {
	t.Helper()
	srv, _ := newStoreServer(t)
	gor = newTestOwner(t, srv, false) // a goroutine-served connection's owner
	loop = newTestOwner(t, srv, true) // an event loop
	a = gor.connect()
	b = loop.connect()
	gor.round()
	key := loop.take(b, "x")
	gor.send(a, "LOCK x DETACH TTL 600000")
	gor.round()
	if st := loop.lock("x"); st.waiters != 1 {
		t.Fatalf("x: %+v; want a's LOCK queued", st)
	}
	loop.send(b, "UNLOCK x "+key) // grants a; held back until the loop's commit
	return gor, loop, a, b
}

// TestGrantToAnExitedGoroutineOwnerIsReleased: a connection served
// by a goroutine of its own (TLS, --io goroutine, non-Linux) has an owner
// that exits once the connection closes (goConn.run: close, last round,
// owner.exit), after which owner.post drops every message. A grant made
// before the close but delivered after the exit — here held back by
// another owner's round until its --fsync always commit, as deferCommit
// does — is then dropped instead of reaching handle(msgGrant), which
// releases a grant to a closed connection (releaseUndelivered). A
// DETACH hold is not released by the session's end either: it stays held
// for its whole TTL by a key no client was ever given.
func TestGrantToAnExitedGoroutineOwnerIsReleased(t *testing.T) {
	gor, loop, a, b := grantHeldBackForAGoroutineOwner(t)

	// a's client hangs up: its goroutine closes it, runs its last round
	// and exits, as goConn.run does.
	gor.own.close(a)
	gor.round()
	gor.own.exit()

	loop.round() // commits, then delivers the grant to a's (exited) owner
	if got := loop.replies(b); !equal(got, []string{":1"}) {
		t.Fatalf("UNLOCK: %q; want :1", got)
	}
	if st := loop.lock("x"); len(st.holders) > 0 {
		t.Errorf("x: %+v; want free: its grant went to a connection that was gone "+
			"(the message was dropped by the exited owner, so the detached hold was never released)", st)
	}
}

// TestGrantBehindAKillIsReleased: kill shuts the connection's
// socket down at once and then posts msgKill to its owner. A grant already
// in the owner's inbox is handled first: c is not yet closed, so
// handle(msgGrant) writes the key into an output that can never reach the
// client (its socket is shut down), and the close that follows discards
// it. A DETACH hold granted so stays held for its whole TTL by a key no
// client has; a grant to a killed connection should be released as one to
// a closed connection is (releaseUndelivered).
func TestGrantBehindAKillIsReleased(t *testing.T) {
	h := newTestOwner(t, newTestServer(t), false)
	a, b := h.connect(), h.connect()
	key := h.take(a, "x")
	h.send(b, "LOCK x DETACH TTL 60000")
	h.round()
	h.send(a, "UNLOCK x "+key) // grants b: posted to the owner
	b.sess.kill()              // socket shut down now; msgKill queued behind the grant
	h.round()
	if got := h.replies(b); len(got) > 0 {
		t.Errorf("killed connection answered %q", got)
	}
	if !b.closed {
		t.Fatal("b not closed")
	}
	if st := h.lock("x"); len(st.holders) > 0 {
		t.Errorf("x: %+v; want free: its key was written to a connection already shut down, so nobody has it", st)
	}
}

// TestPatternsAreBoundedPerConnection: every pattern is matched against
// every change of the locks its literal prefix covers, in the change's
// critical section, so one connection's patterns are bounded
// (--max-patterns): a PSUBSCRIBE that would pass the bound is refused
// whole and subscribes nothing. Channels are not bounded (one map lookup
// per change; clientlib's loss watch takes one per lock its client holds).
func TestPatternsAreBoundedPerConnection(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0", MaxPatterns: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestOwner(t, srv, false)
	c := h.connect()
	h.send(c, "SUBSCRIBE __lock__:a __lock__:b __lock__:c __lock__:d")
	if got := h.await(c); len(got) != 4 || c.sess.sub.count() != 4 {
		t.Fatalf("SUBSCRIBE of 4 channels with max-patterns 2: %q; want all 4", got)
	}
	h.send(c, "PSUBSCRIBE __lock__:x* __lock__:y* __lock__:z*")
	if got := h.await(c); !equal(got, []string{"-LIMIT"}) {
		t.Fatalf("PSUBSCRIBE past the bound: %q; want -LIMIT", got)
	}
	if n := c.sess.sub.patternCount(); n != 0 {
		t.Fatalf("%d patterns after the refused PSUBSCRIBE; want none", n)
	}
	h.send(c, "PSUBSCRIBE __lock__:x* __lock__:x* __lock__:y*") // a pattern counts once
	h.await(c)
	if n := c.sess.sub.patternCount(); n != 2 {
		t.Fatalf("%d patterns; want 2", n)
	}
	h.send(c, "PSUBSCRIBE __lock__:x*") // already subscribed: adds none
	h.await(c)
	h.send(c, "PSUBSCRIBE __lock__:w*")
	if got := h.await(c); !equal(got, []string{"-LIMIT"}) {
		t.Fatalf("PSUBSCRIBE past the bound: %q; want -LIMIT", got)
	}
}

// TestHub_PatternsOfOnePrefixEndInAnyOrder: patterns are indexed by their
// literal prefix, and one ends in constant time (the last of its prefix's
// list takes its place). Whatever the order they end in, each lock change
// reaches exactly the subscribers whose patterns match it.
func TestHub_PatternsOfOnePrefixEndInAnyOrder(t *testing.T) {
	h := newTestOwner(t, newTestServer(t), false)
	const n = 40
	subs := make([]*conn, 4)
	for i := range subs {
		subs[i] = h.connect()
	}
	pattern := func(i int) string { return "__lock__:job*" + strconv.Itoa(i) } // prefix "job" for all
	for i := range n {
		h.send(subs[i%len(subs)], "PSUBSCRIBE "+pattern(i))
		h.await(subs[i%len(subs)])
	}
	live := map[int]bool{}
	for i := range n {
		live[i] = true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	taker := h.connect()
	for _, i := range rng.Perm(n) {
		h.send(subs[i%len(subs)], "PUNSUBSCRIBE "+pattern(i))
		h.await(subs[i%len(subs)])
		delete(live, i)
		// A lock whose name matches pattern i and every pattern whose
		// number ends it (job…17 matches job*7 and job*17).
		probe := rng.IntN(n)
		name := "job-" + strconv.Itoa(probe)
		key := h.take(taker, name)
		h.send(taker, "UNLOCK "+name+" "+key)
		h.await(taker)
		h.round()
		for j, c := range subs {
			want := 0
			for k := range live {
				if k%len(subs) == j && strings.HasSuffix(name, strconv.Itoa(k)) {
					want += 3 // acquired, released, free
				}
			}
			if got := len(h.replies(c)); got != want {
				t.Fatalf("after ending pattern %d, lock %s: subscriber %d got %d messages; want %d", i, name, j, got, want)
			}
		}
	}
}

// TestProtocolErrorBehindAWaitingCommand: docs/protocol.md
// (Protocol errors): "If the protocol error arrives while an earlier
// command of the same connection is still running (a blocked LOCK, a
// password check), the earlier command's reply is sent first, then the
// protocol error, then the connection closes." conn.input defers the
// error only while a command runs off the owner (c.running(): the Raft
// engine); on a single server a queued LOCK or a pending password check
// is not "running", so the protocol error is written at once, in the
// place of the earlier command's reply, and the close then drops that
// command (the queued LOCK leaves the queue unanswered).
func TestProtocolErrorBehindAWaitingCommand(t *testing.T) {
	t.Run("blocked LOCK", func(t *testing.T) {
		h := newTestOwner(t, newTestServer(t), false)
		a, b := h.connect(), h.connect()
		key := h.take(a, "x")
		h.send(b, "LOCK x")
		h.round()
		h.feed(b, []byte("*x\r\n")) // the client's next request is garbage
		h.round()
		h.send(a, "UNLOCK x "+key)
		h.round()
		got := h.replies(b)
		if len(got) != 2 || got[0] != "KEY" || got[1] != "-ERR" {
			t.Errorf("%q; want the LOCK's key, then the protocol error", got)
		}
	})
	t.Run("password check", func(t *testing.T) {
		h := newTestOwner(t, newAuthServer(t), false)
		c := h.connect()
		h.send(c, "AUTH app app-pass")
		if c.wait == nil || c.wait.check == nil {
			t.Fatal("AUTH does not wait for its check")
		}
		h.feed(c, []byte("*x\r\n"))
		h.round()
		h.waitGoroutines()
		h.round()
		got := h.replies(c)
		if len(got) != 2 || got[0] != "+OK" || got[1] != "-ERR" {
			t.Errorf("%q; want AUTH's +OK, then the protocol error", got)
		}
	})
}

// TestFailedCommitUndoesAnUpgrade: with --fsync always a command
// granted at once is remembered (session.commitGrant → uncommitted) so
// that a failed round commit undoes it before its connection is closed
// unanswered. UPGRADE granted at once is not (cmdUpgrade uses
// session.commit): its connection is closed, which releases only bound
// holds, so a DETACH shared hold upgraded in a round whose commit fails
// stays upgraded — exclusive, under a new key its client never received,
// while the key it did receive no longer holds the lock — until its TTL
// (and the next round's rewrite makes that durable).
func TestFailedCommitUndoesAnUpgrade(t *testing.T) {
	srv, failNext := newStoreServer(t)
	h := newTestOwner(t, srv, true)
	c, o := h.connect(), h.connect()
	key := h.take(c, "s", "SHARED", "DETACH", "TTL", "60000")
	failNext.Store(true)
	h.send(c, "UPGRADE s "+key)
	h.round()
	if failNext.Load() {
		t.Fatal("the round did not commit")
	}
	if got := h.replies(c); len(got) > 0 || !c.closed {
		t.Fatalf("UPGRADE whose commit failed: replies %q, closed %v; want none, closed", got, c.closed)
	}
	h.send(o, "CHECK s "+key)
	h.round()
	st := h.lock("s")
	if got := h.replies(o); len(got) != 1 || (got[0] == "-NOTHELD" && len(st.holders) > 0) {
		t.Errorf("CHECK with the key the client holds: %q, lock %+v; the failed UPGRADE was not undone "+
			"(the lock is held exclusively by a key nobody was given)", got, st)
	}
}

// TestFailedCommitUndoesTheGrantOfAConnectionClosedInTheRound: a
// connection granted a DETACH hold at once that closes before its round's
// commit, which then fails: its hold is undone like any other of the
// round's (the close releases bound holds only).
func TestFailedCommitUndoesTheGrantOfAConnectionClosedInTheRound(t *testing.T) {
	srv, failNext := newStoreServer(t)
	h := newTestOwner(t, srv, true)
	c := h.connect()
	h.round()
	h.send(c, "TRYLOCK x DETACH TTL 60000") // granted; its commit is the round's
	h.own.close(c)                          // the client hangs up before the commit
	failNext.Store(true)
	h.round()
	if failNext.Load() {
		t.Fatal("the round did not commit")
	}
	h.waitGoroutines()
	if !h.free("x") {
		t.Errorf("x: %+v; want free: its grant's commit failed and nobody has its key", h.lock("x"))
	}
}

// TestGrantPostedBeforeTheOwnerExitsIsReleased: goConn.run ends with
// its last round and then owner.exit (deferred). conn.grant now releases
// a grant itself when post refuses it (the owner has exited), but a grant
// posted after the last round's drainInbox and before exit is accepted by
// post and then never handled: exit drops the inbox. A DETACH hold so
// granted stays held for its whole TTL by a key nobody was given.
func TestGrantPostedBeforeTheOwnerExitsIsReleased(t *testing.T) {
	gor, loop, a, b := grantHeldBackForAGoroutineOwner(t)

	// a's client hangs up: its goroutine closes it and runs its last
	// round (goConn.run) ...
	gor.own.close(a)
	gor.round()
	// ... the loop delivers the grant now: post accepts it (the owner
	// has not exited yet) ...
	loop.round()
	if got := loop.replies(b); !equal(got, []string{":1"}) {
		t.Fatalf("UNLOCK: %q; want :1", got)
	}
	// ... and then goConn.run's deferred exit runs: no round follows.
	gor.own.exit()

	if st := loop.lock("x"); len(st.holders) > 0 {
		t.Errorf("x: %+v; want free: the grant was posted to the owner between its last round and its exit, "+
			"and exit dropped it with the inbox (the detached hold is never released)", st)
	}
}

// TestProtocolErrorBehindAQueuedLockStillSeesTheHangUp: a protocol
// error read while a LOCK waits in the queue is now answered after the
// LOCK's reply (protoErr) and the connection is marked closing at once,
// so it stops wanting input. A goroutine-served connection (TLS,
// --io goroutine, non-Linux) reads only while it wants input, so its
// client's hang-up is never seen: the dead connection stays queued on the
// lock (for ever without WAIT) and is granted the lock when it comes.
// Before the change the error was answered and the connection closed at
// once, withdrawing its wait.
func TestProtocolErrorBehindAQueuedLockStillSeesTheHangUp(t *testing.T) {
	h := newTestOwner(t, newTestServer(t), false)
	a, b := h.connect(), h.connect()
	h.take(a, "x")
	h.send(b, "LOCK x") // queued: no WAIT, no --default-wait
	h.round()
	if st := h.lock("x"); st.waiters != 1 {
		t.Fatalf("x: %+v; want b's LOCK queued", st)
	}
	h.feed(b, []byte("*1\r\n$-5\r\n")) // a protocol error (bad bulk length)
	h.round()
	if !b.closed && !b.wantsInput() {
		t.Errorf("b neither closed nor reading after a protocol error behind its queued LOCK "+
			"(waiters on x: %d): a goroutine driver never reads it again, so its client's hang-up "+
			"is never seen and the dead connection waits on x", h.lock("x").waiters)
	}
}
