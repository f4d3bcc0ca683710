package commands

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/redis/go-redis/v9"
	"github.com/relock/relock/replica"
)

// waitSessionEnded waits until c's session has ended (its end runs on a
// goroutine of its own with a blocking engine).
func waitSessionEnded(t *testing.T, h *testOwner, c *conn) {
	t.Helper()
	deadline := time.Now().Add(inboxDeadline)
	for {
		if open, ending := sessionState(h, c); !open && ending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not end in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// sessionState reports whether c's session is still the server's, and
// how many sessions are being ended.
func sessionState(h *testOwner, c *conn) (open bool, ending int) {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	_, open = h.srv.sessions[c.sess.id]
	return open, h.srv.ending
}

// TestConn_EarlyGrantToAClosedConnectionIsReleased: a LOCK DETACH runs
// off the owner (a blocking engine: the Raft one) and queues; another
// connection's UNLOCK grants it before the LOCK's run returns (the grant
// is kept as c.early); the connection then closes before msgRan is
// handled. Ending the session does not release a detached hold, so the
// early grant must be released like any grant that reaches a closed
// connection (TestConn_GrantToClosedConnectionIsReleased) — msgRan
// returns at its first c.closed check and drops it.
func TestConn_EarlyGrantToAClosedConnectionIsReleased(t *testing.T) {
	h, gates := newBlockingOwner(t, "acquire-waiting")
	a, b := h.connect(), h.connect()
	key := h.take(a, "x")
	h.send(b, "LOCK x DETACH TTL 60000")
	gates["acquire-waiting"].awaitReached(t) // queued in the table; its run not returned
	h.send(a, "UNLOCK x "+key)
	if got, want := h.await(a), []string{":1"}; !equal(got, want) {
		t.Fatalf("UNLOCK: %q; want %q", got, want)
	}
	if b.early == nil {
		t.Fatal("the grant did not arrive early")
	}
	h.own.close(b) // b hangs up while its LOCK still runs
	close(gates["acquire-waiting"].open)
	h.waitGoroutines()
	waitSessionEnded(t, h, b)
	h.round() // msgRan: releases the early grant, off the owner (a blocking engine)
	h.waitGoroutines()
	waitSessionEnded(t, h, b) // the release too: it counts in srv.ending
	h.round()
	if !h.free("x") {
		t.Errorf("x: %+v; want free: its detached hold was granted to a connection that closed before the grant could be answered", h.lock("x"))
	}
}

// TestCluster_CloseWhileTheFirstLockOpensTheSession: in a cluster, a
// connection's first lock command opens its session in the log (OpOpen)
// on the goroutine that runs the command off the owner. If the client
// hangs up meanwhile, the session's end (its own goroutine) finds
// clusterOpen still false and closes nothing; the command's goroutine
// then opens the session and takes the lock for a connection that is
// gone. Nothing ever closes that session: the hold (no TTL) stays bound
// to it until the next leader change.
func TestCluster_CloseWhileTheFirstLockOpensTheSession(t *testing.T) {
	nodes, l := inmemCluster(t)
	leader := nodes[l]
	h := newTestOwner(t, clusterServer(t, leader), false)
	c := h.connect()
	h.round()
	h.send(c, "LOCK job")
	if !c.running() {
		t.Fatal("LOCK does not run off the owner")
	}
	h.own.close(c) // the client hangs up while its LOCK runs
	h.waitGoroutines()
	waitSessionEnded(t, h, c)
	h.round()
	if n := leader.FSM.Bound(c.sess.id); n != 0 || !h.free("job") {
		t.Errorf("after the connection closed: its session has %d bound holds in the log, job %+v; want none, job free", n, h.lock("job"))
		forceUnlockJob(t, leader) // let the harness's own check pass
	}
}

// TestCluster_ACancelThatFailsClosesTheConnection: a LOCK's WAIT runs out
// and the proposal of its cancel fails unappended while the node goes on
// leading (it waited in the queue past its timeout: an overloaded
// leader). The waiter is still queued in the log. The LOCK used to be
// answered nil and the connection went on, so the waiter's later grant
// arrived for a command that was no longer waiting — and, if the
// connection's next LOCK (of any name) was running then, became that
// LOCK's reply. The connection is closed instead (an unknown outcome, as
// for a request in flight at a close), and its end drops the waiter.
func TestCluster_ACancelThatFailsClosesTheConnection(t *testing.T) {
	fails := failFirst(replica.OpCancel, 1)
	nodes, l := inmemClusterWith(t, fails.fault)
	h := newTestOwner(t, clusterServer(t, nodes[l]), false)
	a, b := h.connect(), h.connect()
	key := h.take(a, "x")
	h.send(b, "LOCK x WAIT 50")
	h.roundsUntil("the connection whose cancel failed is closed", func() bool { return b.closed })
	h.waitGoroutines()
	waitSessionEnded(t, h, b)
	h.round()
	if st := h.lock("x"); st.waiters != 0 {
		t.Fatalf("x after the connection closed: %+v; want no waiter", st)
	}
	h.send(a, "UNLOCK x "+key)
	if got, want := h.await(a), []string{":1"}; !equal(got, want) {
		t.Fatalf("UNLOCK: %q; want %q", got, want)
	}
	h.waitGoroutines()
	if !h.free("x") {
		t.Fatalf("x after UNLOCK: %+v; want free (granted to nobody)", h.lock("x"))
	}
}

// TestCluster_ATakeoverThatFailsIsTriedAgain: a node that becomes leader
// appends its takeover entry before it serves lock commands. If that
// proposal fails while the node goes on leading (it waited in the queue
// past its timeout), the node used to log it and wait for the next
// leadership change, answering -CLUSTERDOWN meanwhile for as long as it
// led. It tries again until the entry is applied or it no longer leads.
func TestCluster_ATakeoverThatFailsIsTriedAgain(t *testing.T) {
	fails := failFirst(replica.OpFailover, 2)
	nodes, l := inmemClusterWith(t, fails.fault)
	srv, err := New(Config{Listen: "127.0.0.1:0", Cluster: &Cluster{Node: nodes[l], Advertise: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: runClusterServer(t, srv), MaxRetries: -1})
	defer c.Close()
	var last error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		key, err := c.Do(rctx, "TRYLOCK", "job").Text()
		if err == nil {
			c.Do(rctx, "UNLOCK", "job", key)
			rcancel()
			break
		}
		rcancel()
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("the leader whose takeover failed (%d times) does not serve lock commands within 5s: %v", fails.proposed(), last)
		}
	}
	if n := fails.proposed(); n != 3 {
		t.Fatalf("the takeover was proposed %d times; want 3 (two failed)", n)
	}
}

// TestCluster_BecomingLeaderClosesTheConnectionsOfAnEarlierTerm: raft's
// leadership channel keeps only the latest signal, so a node that lost
// leadership and won it again before its watcher looked sees one "true",
// not the "false" that closes client connections. A connection whose
// session was opened under the earlier term (only a leader opens
// sessions) is then stale — the coming takeover orphans its session —
// and is closed on becoming leader, as on losing it. A "true" for a term
// whose takeover is already applied (a signal left over from a flap that
// takeOver's retry already covered) closes nothing and takes over no
// second time.
func TestCluster_BecomingLeaderClosesTheConnectionsOfAnEarlierTerm(t *testing.T) {
	nodes, l := inmemCluster(t)
	leader := nodes[l]
	h := newTestOwner(t, clusterServer(t, leader), false)
	c, idle := h.connect(), h.connect()
	lockJob(t, h, c)
	h.send(idle, "PING")
	h.await(idle)

	// Leadership goes away and comes back: a new term, no "false" seen.
	if err := leader.Raft.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	var others []*replica.Node
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	other := waitLeaderAmong(t, others)
	if err := other.Raft.LeadershipTransferToServer(leader.ID, raft.ServerAddress(leader.ID)).Error(); err != nil {
		t.Fatal(err)
	}
	if waitLeaderAmong(t, nodes) != leader {
		t.Fatal("leadership did not come back")
	}
	done := make(chan struct{})
	defer close(done)
	eng := h.srv.eng.(raftEngine)
	eng.becameLeader(done, time.Second) // the collapsed "false, true"
	h.roundsUntil("the connection of the earlier term is closed", func() bool { return c.closed })
	h.waitGoroutines()
	if idle.closed {
		t.Error("a connection without a session in the log was closed too")
	}
	if !eng.leader() {
		t.Fatal("no takeover for the new term")
	}
	forceUnlockJob(t, leader) // the takeover orphaned it

	d := h.connect()
	lockJob(t, h, d) // a session of this term
	applied := leader.FSM.Applied()
	eng.becameLeader(done, time.Second) // a leftover "true"
	h.round()
	if d.closed || leader.FSM.Applied() != applied {
		t.Errorf("a leftover signal for a term already taken over: connection closed %v, entries applied %d; want neither", d.closed, leader.FSM.Applied()-applied)
	}
}

// TestCluster_AFailedCloseIsTriedAgain: a connection holding a lock
// closes, and the proposal that ends its session fails unappended while
// the node goes on leading (it timed out in the queue of an overloaded
// leader). The session used to stay open in the log, its holds bound to a
// connection that is gone, until the next leader change. The close is
// tried again while the node leads.
func TestCluster_AFailedCloseIsTriedAgain(t *testing.T) {
	fails := failFirst(replica.OpClose, 2)
	nodes, l := inmemClusterWith(t, fails.fault)
	h := newTestOwner(t, clusterServer(t, nodes[l]), false)
	c := h.connect()
	lockJob(t, h, c)
	h.own.close(c)
	h.waitGoroutines()
	waitSessionEnded(t, h, c)
	if n := fails.proposed(); n != 3 {
		t.Fatalf("the close was proposed %d times; want 3 (two failed)", n)
	}
	if !h.free("job") {
		t.Fatalf("job after its holder's connection closed: %+v; want free", h.lock("job"))
	}
}

// runClusterServer runs srv (a cluster member) until the test ends and
// returns its client address.
func runClusterServer(t *testing.T, srv *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})
	for deadline := time.Now().Add(inboxDeadline); ; time.Sleep(time.Millisecond) {
		if as := srv.Addrs(); len(as) > 0 {
			return as[0].String()
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not listen in time")
		}
	}
}

// failing is a fault hook (replica.NodeConfig.Fault) that fails the first
// proposals of one kind unappended, as a leader's overloaded queue does.
type failing struct {
	kind      replica.Kind
	n         int32
	proposals atomic.Int32
}

// failFirst fails the first n proposals of kind.
func failFirst(kind replica.Kind, n int32) *failing { return &failing{kind: kind, n: n} }

func (f *failing) fault(op replica.Op) error {
	if op.Kind == f.kind && f.proposals.Add(1) <= f.n {
		return raft.ErrEnqueueTimeout
	}
	return nil
}

// proposed is how many proposals of the kind were made.
func (f *failing) proposed() int32 { return f.proposals.Load() }

// TestCluster_AGoneConnectionsCloseRetriesFreeItsSlot: while the close of
// a gone connection is tried again (every proposal failing unappended),
// the session no longer counts against --max-clients: a new client is
// let in. Once proposals go through again, the retry releases the hold.
func TestCluster_AGoneConnectionsCloseRetriesFreeItsSlot(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	nodes, l := inmemClusterWith(t, func(op replica.Op) error {
		if op.Kind == replica.OpClose && failing.Load() {
			return raft.ErrEnqueueTimeout
		}
		return nil
	})
	srv, err := New(Config{Listen: "127.0.0.1:0", MaxTTL: 60_000_000_000, MaxClients: 1,
		Cluster: &Cluster{Node: nodes[l], Advertise: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	takeover(t, nodes[l])
	h := newTestOwner(t, srv, false)
	c := h.connect()
	lockJob(t, h, c)
	h.own.close(c)
	for deadline := time.Now().Add(inboxDeadline); ; time.Sleep(time.Millisecond) {
		if open, _ := sessionState(h, c); !open {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gone connection's session is still counted while its close is retried")
		}
	}
	d := h.connect() // the one slot is free
	h.send(d, "PING")
	if got := h.await(d); len(got) != 1 || got[0] != "+PONG" {
		t.Fatalf("PING on a new connection: %v", got)
	}
	if h.free("job") {
		t.Fatal("job released while every close failed")
	}
	failing.Store(false)
	h.waitGoroutines()
	waitSessionEnded(t, h, c) // the retries have ended
	if !h.free("job") {
		t.Fatalf("job after the close went through: %+v; want free", h.lock("job"))
	}
}

// TestCluster_ACloseRetriedAfterTheStopBeganStaysAClose: a connection
// that closed while the server ran has its close fail unappended, and the
// server begins to stop during the retry's pause. The retry must not turn
// it into the stop's kind of end (its waits cancelled, its holds kept for
// the next leader): it stays a close, or is not tried again.
func TestCluster_ACloseRetriedAfterTheStopBeganStaysAClose(t *testing.T) {
	var mu sync.Mutex
	var kinds []replica.Kind
	fault := func(op replica.Op) error {
		if op.Kind != replica.OpClose && op.Kind != replica.OpCancel {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, op.Kind)
		if len(kinds) == 1 {
			return raft.ErrEnqueueTimeout
		}
		return nil
	}
	attempts := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(kinds)
	}
	nodes, l := inmemClusterWith(t, fault)
	srv := clusterServer(t, nodes[l])
	h := newTestOwner(t, srv, false)
	c := h.connect()
	lockJob(t, h, c)
	stopping := make(chan struct{})
	go func() { // the stop begins once the first close failed: during the retry's pause (10 ms)
		defer close(stopping)
		for deadline := time.Now().Add(inboxDeadline); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
			if attempts() == 1 && c.sess.clusterOpen.Load() {
				srv.mu.Lock()
				srv.closing = true
				srv.mu.Unlock()
				return
			}
		}
	}()
	h.own.close(c) // a disconnect, before the stop
	<-stopping
	h.waitGoroutines()
	waitSessionEnded(t, h, c)
	mu.Lock()
	got := append([]replica.Kind(nil), kinds...)
	mu.Unlock()
	srv.mu.Lock()
	srv.closing = false // the harness's own checks run on a live server
	srv.mu.Unlock()
	forceUnlockJob(t, nodes[l])
	for _, k := range got {
		if k != replica.OpClose {
			t.Fatalf("a disconnect's close was retried as %v once the stop began; want only closes", got)
		}
	}
}

// TestCluster_LocksOnALeaderWithoutAQuorumIsNotReadFromItsTable: a
// leader whose followers are gone still believes it leads until its lease
// runs out. A LOCKS sent then must not be answered from its table (which
// a new leader elsewhere may have moved on from): it confirms its
// leadership first, and cannot, so it answers with a redirect.
func TestCluster_LocksOnALeaderWithoutAQuorumIsNotReadFromItsTable(t *testing.T) {
	nodes, l := inmemCluster(t)
	leader := nodes[l]
	h := newTestOwner(t, clusterServer(t, leader), false)
	c := h.connect()
	h.send(c, "LOCKS")
	if got := h.await(c); len(got) != 1 || got[0] != "*0" {
		t.Fatalf("LOCKS on the leader with its quorum: %v; want *0", got)
	}
	for i, n := range nodes {
		if i != l {
			n.Shutdown()
		}
	}
	h.send(c, "LOCKS")
	got := h.await(c)
	if len(got) != 1 || (got[0] != "-MOVED" && got[0] != "-CLUSTERDOWN") {
		t.Fatalf("LOCKS on a leader that lost its quorum: %v; want -MOVED or -CLUSTERDOWN, not its table", got)
	}
	h.waitGoroutines()
}
