package commands

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// Cluster-mode findings of review h2: each test failed when written.

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
