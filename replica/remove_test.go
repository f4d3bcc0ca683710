package replica

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestRemove_TheLeaderRemovingItselfAnswersEveryProposal: CLUSTER
// REMOVENODE may name the leader itself. Raft's default
// ShutdownOnRemove makes the leader shut raft down as soon as the
// configuration without it commits, from inside its own loop; an entry
// of the batcher committed just before and handed to raft's FSM goroutine
// but not yet applied (the FSM busy with an earlier entry) is then
// dropped with its future (hashicorp/raft#498, which Node.Shutdown
// avoids by closing the batcher first — but here raft shuts down by
// itself). Its proposer waits forever, the batcher's completer with it,
// and Node.Shutdown (batcher.close) never returns.
//
// The FSM goroutine is held busy by holding the FSM's lock while raft
// applies an entry appended directly; whether the goroutine then takes
// the dropped batch or sees the shutdown first is a random select, so
// the test tries a few clusters.
func TestRemove_TheLeaderRemovingItselfAnswersEveryProposal(t *testing.T) {
	for attempt := 0; attempt < 6; attempt++ {
		if hung := removeLeaderOnce(t, attempt); hung {
			t.Fatalf("attempt %d: a proposal committed before the leader removed itself was never answered (and Node.Shutdown would hang)", attempt)
		}
	}
	t.Log("every proposal was answered in 6 attempts")
}

func removeLeaderOnce(t *testing.T, attempt int) (hung bool) {
	t.Helper()
	c := newTestClusterTiming(t, 3, 300*time.Millisecond)
	leader := c.leader()
	l := c.nodes[leader]
	defer func() {
		for i, n := range c.nodes {
			if i != leader || !hung {
				n.Shutdown()
			}
			c.down[i] = true // shut down here, or hung: not at the test's end
		}
	}()

	// Hold the leader's FSM busy: it blocks in Apply of an entry
	// appended directly.
	l.FSM.mu.Lock()
	locked := true
	defer func() {
		if locked {
			l.FSM.mu.Unlock()
		}
	}()
	blocker, err := encodeEntry([]*Op{{Kind: OpOpen, Now: 1, Session: 100}})
	if err != nil {
		t.Fatal(err)
	}
	last := l.Raft.LastIndex()
	l.Raft.Apply(blocker, 5*time.Second)
	waitFor(t, "the blocker committed", func() bool { return l.Raft.CommitIndex() >= last+1 })

	// A proposal of the batcher: appended and committed, queued for the
	// busy FSM goroutine.
	type res struct {
		r   *Result
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := l.Propose(Op{Kind: OpOpen, Now: 1, Session: 7}, 5*time.Second)
		done <- res{r, err}
	}()
	waitFor(t, "the proposal committed", func() bool { return l.Raft.CommitIndex() >= last+2 })

	// The leader removes itself: raft shuts itself down.
	rm := l.Raft.RemoveServer(raft.ServerID(c.addrs[leader]), 0, 5*time.Second)
	waitFor(t, "the leader stepped down", func() bool { return l.Raft.State() != raft.Leader })
	l.FSM.mu.Unlock()
	locked = false
	_ = rm

	select {
	case r := <-done:
		t.Logf("attempt %d: answered (%v, %v)", attempt, r.r, r.err)
		return false
	case <-time.After(5 * time.Second):
		return true
	}
}
