package commands

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/redis/go-redis/v9"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// Cluster edges found by a review: each test failed before its fix.

// TestCluster_AFailedExpiryIsTriedAgain: the leader's expiry timer
// proposes an OpExpire when a TTL runs out. If that proposal fails
// unappended while the node goes on leading (it waited in the queue of
// an overloaded leader past its timeout: raft.ErrEnqueueTimeout, the
// class of failure the takeover and close retries handle),
// raftEngine.expire returns (0, false) and the expirer goes to sleep for
// an hour: nothing expires any more until some later command happens to
// schedule a deadline. Here a hold with a 300 ms TTL is never expired and
// the LOCK waiting behind it runs out its 3 s WAIT instead of being
// granted.
func TestCluster_AFailedExpiryIsTriedAgain(t *testing.T) {
	var armed atomic.Bool
	var failed atomic.Int32
	nodes, l := inmemClusterWith(t, func(op replica.Op) error {
		if op.Kind == replica.OpExpire && armed.Load() && failed.Add(1) == 1 {
			return raft.ErrEnqueueTimeout
		}
		return nil
	})
	srv, err := New(Config{Listen: "127.0.0.1:0", Cluster: &Cluster{Node: nodes[l], Advertise: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := runClusterServer(t, srv)
	holder := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	defer holder.Close()
	waiter := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	defer waiter.Close()

	// Until the takeover is applied: -CLUSTERDOWN.
	var key string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		k, err := holder.Do(context.Background(), "TRYLOCK", "job", "TTL", "300").Text()
		if err == nil {
			key = k
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TRYLOCK on the new leader: %v", err)
		}
	}
	armed.Store(true) // the expiry of this hold fails once, unappended
	start := time.Now()
	got, err := waiter.Do(context.Background(), "LOCK", "job", "WAIT", "3000").Text()
	if err != nil || got == key {
		t.Fatalf("LOCK job WAIT 3000 behind a hold whose 300 ms TTL ran out: %q, %v after %v (expiry proposals failed: %d); "+
			"want a new key within about 300 ms: the expirer stopped after one failed proposal while the node still led",
			got, err, time.Since(start).Round(time.Millisecond), failed.Load())
	}
	waiter.Do(context.Background(), "UNLOCK", "job", got)
}

// TestCluster_ReleasingAnUndeliveredGrantDoesNotBlockTheOwner: every
// command that may propose runs off the connection's owner (a Raft
// proposal blocks its caller; engine.go, session.exec), so that one
// connection's proposal never holds up the other connections of its event
// loop. A grant that reaches a connection that closed meanwhile is
// released by msgGrant (and msgRan, for an early grant) through
// releaseUndelivered, which proposes the UNLOCK on the owner itself: the
// event loop waits for a whole Raft commit, and for as long as the
// proposal waits (a leader that lost its quorum: until it steps down; an
// overloaded one: up to ProposeTimeout). The proposal is made slow here
// by the fault hook (1 s), as a queued proposal is.
func TestCluster_ReleasingAnUndeliveredGrantDoesNotBlockTheOwner(t *testing.T) {
	var slow atomic.Bool
	nodes, l := inmemClusterWith(t, func(op replica.Op) error {
		if op.Kind == replica.OpUnlock && slow.Load() {
			time.Sleep(time.Second)
		}
		return nil
	})
	h := newTestOwner(t, clusterServer(t, nodes[l]), false)
	a, b, other := h.connect(), h.connect(), h.connect()
	key := h.take(a, "x")
	h.send(b, "LOCK x")
	h.roundsUntil("b queued", func() bool { return h.lock("x").waiters == 1 })
	h.waitGoroutines()
	h.send(a, "UNLOCK x "+key) // grants b; msgGrant posted to b's owner
	h.waitGoroutines()
	h.own.close(b) // b hangs up before its owner handles the grant
	h.send(other, "PING")
	slow.Store(true)
	start := time.Now()
	h.round() // msgGrant to the closed b, and other's PING
	took := time.Since(start)
	slow.Store(false)
	if got := h.replies(other); !equal(got, []string{"+PONG"}) {
		t.Errorf("PING: %q", got)
	}
	if took > 250*time.Millisecond {
		t.Errorf("one round of the owner took %v: it waited for the Raft proposal releasing the grant to the closed connection, "+
			"and every other connection of the loop (a PING here) waited with it", took.Round(time.Millisecond))
	}
	h.waitGoroutines()
	waitSessionEnded(t, h, b)
	h.roundsUntil("x free", func() bool { return h.free("x") })
}

// TestCluster_SlotsNameNoFormerLeader: CLUSTER SLOTS and CLUSTER SHARDS
// are documented to name the leader's client address, or to be empty
// while no leader is known. Between an election and the moment this node
// applies the new leader's takeover entry, the address they give is the
// takeover entry's — the former leader's — while raft already names the
// new one: SHARDS then pairs the new leader's id with the old leader's
// address, and SLOTS sends cluster-aware clients to a node that no longer
// leads. moved() refuses exactly this mismatch (-CLUSTERDOWN); the slots
// replies do not.
func TestCluster_SlotsNameNoFormerLeader(t *testing.T) {
	nodes, l := inmemCluster(t)
	old := nodes[l]
	h := newTestOwner(t, clusterServer(t, old), false) // takeover: old at 127.0.0.1:1
	c := h.connect()
	if err := old.Raft.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); old.IsLeader() || old.LeaderID() == "" || old.LeaderID() == string(old.ID); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no other leader known within 10s")
		}
	}
	// The new leader's takeover is not applied here (nothing runs it in
	// this harness): the window a slow or failing takeover widens.
	h.send(c, "LOCK x")
	if got := h.await(c); !equal(got, []string{"-CLUSTERDOWN"}) {
		t.Fatalf("LOCK in the window: %q; want -CLUSTERDOWN", got)
	}
	h.send(c, "CLUSTER SLOTS")
	h.roundsUntil("SLOTS", func() bool { return len(h.drv.out[c]) > 0 })
	raw := h.rawReplies(c)
	if len(raw) == 1 && strings.Contains(raw[0], "127.0.0.1") {
		t.Errorf("CLUSTER SLOTS while raft's leader is %s: %q names the former leader's address 127.0.0.1:1 (this very node, "+
			"a follower now); want an empty array, as while no leader is known", old.LeaderID(), raw[0])
	}
	h.send(c, "CLUSTER SHARDS")
	h.roundsUntil("SHARDS", func() bool { return len(h.drv.out[c]) > 0 })
	raw = h.rawReplies(c)
	if len(raw) == 1 && strings.Contains(raw[0], "127.0.0.1") && strings.Contains(raw[0], old.LeaderID()) {
		t.Errorf("CLUSTER SHARDS: %q pairs the new leader's id %s with the former leader's address", raw[0], old.LeaderID())
	}
	h.waitGoroutines()
}

// TestCluster_ReleasingAnUndeliveredMultiGrantDeliversWhatItsUnlocksGrant:
// an MLOCK granted to a connection that is gone (its close is on its
// way: here its proposal is held back) is released by
// Server.release, one UNLOCK proposal per name into one Events. The Raft
// engine's propose overwrites ev with each result's events instead of
// appending, so the grant that the release of x causes (to z, queued
// behind the MLOCK on x) is dropped by the release of y: z holds x in
// the table and is never told.
func TestCluster_ReleasingAnUndeliveredMultiGrantDeliversWhatItsUnlocksGrant(t *testing.T) {
	var holding atomic.Bool
	closeGate := make(chan struct{})
	nodes, l := inmemClusterWith(t, func(op replica.Op) error {
		if op.Kind == replica.OpClose && holding.Load() {
			<-closeGate // the close is slow (an overloaded leader)
		}
		return nil
	})
	h := newTestOwner(t, clusterServer(t, nodes[l]), false)
	a, w, z := h.connect(), h.connect(), h.connect()
	kx := h.take(a, "x")
	ky := h.take(a, "y")
	h.send(w, "MLOCK 2 x y")
	h.roundsUntil("w queued", func() bool { return h.lock("x").waiters == 1 && h.lock("y").waiters == 1 })
	h.send(z, "LOCK x")
	h.roundsUntil("z queued", func() bool { return h.lock("x").waiters == 2 })
	h.send(a, "UNLOCK x "+kx) // w still needs y: nothing granted
	if got := h.await(a); !equal(got, []string{":1"}) {
		t.Fatalf("UNLOCK x: %q", got)
	}
	holding.Store(true)
	h.own.close(w)            // w hangs up; its close is on its way
	h.send(a, "UNLOCK y "+ky) // grants w x and y; w is gone: released
	if got := h.await(a); !equal(got, []string{":1"}) {
		t.Fatalf("UNLOCK y: %q", got)
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(h.drv.out[z]) == 0 && time.Now().Before(deadline) {
		h.round()
		time.Sleep(time.Millisecond)
	}
	got := h.replies(z)
	st := h.lock("x")
	holding.Store(false)
	close(closeGate)
	if !equal(got, []string{"KEY"}) {
		t.Errorf("z's LOCK x: replies %q; want a key (x's holders now: sessions %v, z is %d): "+
			"the grant to z was lost", got, st.holders, z.sess.id)
	}
}

// TestCluster_AGrantToAConnectionWhoseCloseIsRetriedIsReleased: a
// connection waiting for a detached LOCK hangs up, and the proposal that
// ends its session fails unappended (an overloaded leader's queue): the
// close is retried in the background and the session is forgotten
// meanwhile (retryCloseLater), its waiter still queued in the log. When
// the lock frees, the FSM grants that waiter; deliverGrants finds no
// connection for it (sessionOf: nil, taken for "a replicated session not
// connected to this node") and drops the grant. The retried close then
// releases bound holds only: the detached hold granted to nobody stays
// for its whole TTL. A grant to a gone connection must be released at
// once (SPEC §1, Waiters).
func TestCluster_AGrantToAConnectionWhoseCloseIsRetriedIsReleased(t *testing.T) {
	var failing atomic.Bool
	nodes, l := inmemClusterWith(t, func(op replica.Op) error {
		if op.Kind == replica.OpClose && failing.Load() {
			return raft.ErrEnqueueTimeout
		}
		return nil
	})
	h := newTestOwner(t, clusterServer(t, nodes[l]), false)
	a, w := h.connect(), h.connect()
	kx := h.take(a, "x")
	h.send(w, "LOCK x TTL 60000 DETACH")
	h.roundsUntil("w queued", func() bool { return h.lock("x").waiters == 1 })
	failing.Store(true)
	h.own.close(w) // w hangs up; its close fails and is retried
	for deadline := time.Now().Add(inboxDeadline); ; time.Sleep(time.Millisecond) {
		if open, _ := sessionState(h, w); !open {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("w's session is still counted")
		}
	}
	h.send(a, "UNLOCK x "+kx) // grants w's queued LOCK
	if got := h.await(a); !equal(got, []string{":1"}) {
		t.Fatalf("UNLOCK x: %q", got)
	}
	failing.Store(false)
	h.waitGoroutines()
	waitSessionEnded(t, h, w) // the retried close went through
	deadline := time.Now().Add(2 * time.Second)
	for !h.free("x") && time.Now().Before(deadline) {
		h.round()
		time.Sleep(time.Millisecond)
	}
	if st := h.lock("x"); !h.free("x") {
		t.Errorf("x after its waiter's connection was gone and its close went through: holders %v (0: detached); "+
			"want free: the grant to the gone connection was dropped, not released, and its detached hold lives out its TTL", st.holders)
		forceUnlock(h, "x")
	}
}

// forceUnlock frees name through the server's engine.
func forceUnlock(h *testOwner, name string) {
	h.srv.eng.forceUnlock(new(locktable.Events), name, h.srv.now())
}
