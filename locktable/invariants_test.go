package locktable

import (
	"fmt"
	"testing"
)

// checkInvariants walks every shard of tb (each under its mutex) and fails
// the test if the table's internal structures disagree with each other or
// with the package's promises:
//
//   - a lock in the map has holds or waiters, its name and shard are its own,
//     it holds at most size holds, and it has waiters only when full;
//   - every hold points back at its lock and shard, has count ≥ 1, and its
//     fence lies in [FenceStart, LastFence]; fences rise along a lock's holds
//     (grant order); fences, and so keys, are unique across the table;
//   - a bound hold (neither detached nor orphaned) belongs to an open session
//     and sits in that session's list; a detached hold has a TTL and no
//     session;
//   - a hold has a deadline iff it has a TTL (an orphan always has one, its
//     restore grace), and then it is in the shard's heap at its heapIdx;
//     the heap has nothing else and keeps its order;
//   - the shard's hold and waiter counters match what is there;
//   - a waiter is queued on its own lock, its session is open and waits
//     for exactly it, and the queue's links and length agree;
//   - every session seen (through holds and waiters, plus the ones passed
//     in) counts as bound exactly the holds linked to it, all live; a closed
//     session has no holds and no wait.
//
// Call it only while no other goroutine uses tb.
func checkInvariants(t testing.TB, tb *Table, sessions ...*Session) {
	t.Helper()
	for _, err := range invariantErrors(tb, sessions...) {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// invariantErrors returns what checkInvariants would report, for callers
// (the model test) that add their own context to a failure.
func invariantErrors(tb *Table, sessions ...*Session) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	fenceStart := tb.cfg.FenceStart
	lastFence := tb.LastFence()
	fences := make(map[uint64]bool) // unique fences make unique keys
	// linked counts, per session, the live holds that name it as theirs.
	linked := make(map[*Session]int)
	seen := make(map[*Session]bool)
	for _, s := range sessions {
		seen[s] = true
	}

	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.Lock()
		holds, waiters, withDeadline := 0, 0, 0
		for name, l := range sh.locks {
			if l.name != name {
				fail("shard %d: lock %q filed under %q", i, l.name, name)
			}
			if l.shard != sh || tb.shardOf(name) != sh {
				fail("lock %q: in shard %d, but its shard pointer or hash says otherwise", name, i)
			}
			if len(l.holds) == 0 && l.waiters.n == 0 {
				fail("lock %q: empty but still in the map", name)
			}
			if l.size == 0 {
				fail("lock %q: size 0", name)
			}
			if len(l.holds) > int(l.size) {
				fail("lock %q: %d holds > size %d", name, len(l.holds), l.size)
			}
			if l.waiters.n > 0 && len(l.holds) != int(l.size) {
				fail("lock %q: %d waiters with only %d of %d holds", name, l.waiters.n, len(l.holds), l.size)
			}
			var prevFence uint64
			for _, h := range l.holds {
				holds++
				if h.lock != l || h.sh != sh {
					fail("lock %q: hold %v points at another lock or shard", name, h.key)
				}
				if h.count < 1 {
					fail("lock %q: hold %v has count %d", name, h.key, h.count)
				}
				if fences[h.key.Fence] {
					fail("lock %q: fence %d appears twice", name, h.key.Fence)
				}
				fences[h.key.Fence] = true
				if h.key.Fence < fenceStart || h.key.Fence > lastFence {
					fail("lock %q: fence %d outside [%d, %d]", name, h.key.Fence, fenceStart, lastFence)
				}
				if h.key.Fence <= prevFence {
					fail("lock %q: fence %d after %d: holds not in grant order", name, h.key.Fence, prevFence)
				}
				prevFence = h.key.Fence
				switch {
				case h.orphan && h.deadline <= 0:
					// Restore gives every orphan a grace deadline.
					fail("lock %q: orphaned hold %v without deadline", name, h.key)
				case !h.orphan && (h.ttl > 0) != (h.deadline > 0):
					fail("lock %q: hold %v has ttl %d but deadline %d", name, h.key, h.ttl, h.deadline)
				}
				if h.deadline > 0 {
					withDeadline++
					if h.heapIdx < 0 || int(h.heapIdx) >= len(sh.expiry) || sh.expiry[h.heapIdx] != h {
						fail("lock %q: hold %v with deadline not at its heap index %d", name, h.key, h.heapIdx)
					}
				} else if h.heapIdx != -1 {
					fail("lock %q: hold %v without deadline has heap index %d", name, h.key, h.heapIdx)
				}
				switch {
				case h.detached:
					if h.session != nil {
						fail("lock %q: detached hold %v bound to session %d", name, h.key, h.session.ID)
					}
					if h.ttl == 0 {
						fail("lock %q: detached hold %v without TTL", name, h.key)
					}
				case h.orphan:
					if h.session != nil {
						fail("lock %q: orphaned hold %v bound to session %d", name, h.key, h.session.ID)
					}
				default:
					s := h.session
					if s == nil {
						fail("lock %q: bound hold %v has no session", name, h.key)
						break
					}
					seen[s] = true
					linked[s]++
					s.mu.Lock()
					if s.closed {
						fail("lock %q: hold %v bound to closed session %d", name, h.key, s.ID)
					}
					if h.sprev == nil && s.head != h {
						fail("lock %q: hold %v not in session %d's list", name, h.key, s.ID)
					}
					s.mu.Unlock()
				}
			}

			n := 0
			var prev *waiter
			for w := l.waiters.head; w != nil; w = w.next {
				n++
				if n > l.waiters.n+1 {
					fail("lock %q: wait queue longer than its count %d (cycle?)", name, l.waiters.n)
					break
				}
				if w.prev != prev {
					fail("lock %q: waiter %d has a wrong prev link", name, n)
				}
				if w.lock != l || !w.queued {
					fail("lock %q: waiter %d belongs elsewhere or is not marked queued", name, n)
				}
				s := w.session
				seen[s] = true
				s.mu.Lock()
				if s.closed {
					fail("lock %q: waiter of closed session %d still queued", name, s.ID)
				}
				if s.waiting != w {
					fail("lock %q: session %d does not know it waits here", name, s.ID)
				}
				s.mu.Unlock()
				prev = w
			}
			if l.waiters.tail != prev {
				fail("lock %q: wait queue tail is not its last waiter", name)
			}
			if n != l.waiters.n {
				fail("lock %q: wait queue has %d waiters, count says %d", name, n, l.waiters.n)
			}
			waiters += n
		}

		if sh.holds != holds {
			fail("shard %d: hold counter %d, actual %d", i, sh.holds, holds)
		}
		if sh.waiters != waiters {
			fail("shard %d: waiter counter %d, actual %d", i, sh.waiters, waiters)
		}
		if len(sh.expiry) != withDeadline {
			fail("shard %d: heap has %d entries, %d live holds have a deadline", i, len(sh.expiry), withDeadline)
		}
		for j, h := range sh.expiry {
			if int(h.heapIdx) != j {
				fail("shard %d: heap[%d] says it is at %d", i, j, h.heapIdx)
			}
			if h.lock == nil {
				fail("shard %d: heap[%d] is a released hold", i, j)
			}
			if j > 0 && sh.expiry.less(j, (j-1)/2) {
				fail("shard %d: heap order broken at %d", i, j)
			}
		}
		sh.mu.Unlock()
	}

	for s := range seen {
		s.mu.Lock()
		n := 0
		for h := s.head; h != nil; h = h.snext {
			n++
			if n > s.bound+1 {
				fail("session %d: hold list longer than bound %d (cycle?)", s.ID, s.bound)
				break
			}
			if h.session != s || h.lock == nil || h.detached {
				fail("session %d: list has hold %v that is not a live bound hold of it", s.ID, h.key)
			}
		}
		if n != s.bound {
			fail("session %d: list has %d holds, bound says %d", s.ID, n, s.bound)
		}
		if s.bound != linked[s] {
			fail("session %d: bound %d, but %d live holds are bound to it", s.ID, s.bound, linked[s])
		}
		if s.closed && (s.bound != 0 || s.waiting != nil) {
			fail("session %d: closed with %d holds, waiting=%v", s.ID, s.bound, s.waiting != nil)
		}
		if w := s.waiting; w != nil && (!w.queued || w.session != s) {
			fail("session %d: waits on a request that is not queued for it", s.ID)
		}
		s.mu.Unlock()
	}
	return errs
}
