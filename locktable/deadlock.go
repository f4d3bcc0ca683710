package locktable

import (
	"slices"
	"sync"
)

// Deadlock detection (SPEC §8.5).
//
// A participant is a request's (or hold's) owner when it has one, else
// its session; a hold without either (detached or orphaned, without an
// owner) has no participant and waits for nothing: it ends by its TTL. A
// waiting request of participant P waits for the holds of its lock it
// conflicts with — every other hold for an exclusive request or an
// upgrade, the exclusive ones for a shared request, none for a multi-lock
// leg that re-enters its owner's hold — and so P waits for their
// participants. When LOCK (Acquire), MLOCK (AcquireMulti) or UPGRADE would
// wait, findDeadlock walks these edges from the holders the request would
// wait for; reaching the requester's own participant closes a cycle, and
// the request fails with a *DeadlockError naming the cycle's locks.
//
// Only hold edges count: a request queued behind another waiter of the
// same lock waits for that waiter only until the waiter is granted, and
// the waiter is granted once the holds it conflicts with end — unless
// those holds' participants wait in turn, which is an edge of the walk.
// So every cycle in which each participant waits for a hold of the next
// is found when its last edge would form (by the request that forms it),
// while a wait that is only behind a queued request, which can end as
// that request is granted or withdrawn, is never reported. (A request
// that waits only behind an earlier waiter that waits for the requester's
// hold — a reader asking again behind a writer queued for its own read
// hold — is such a wait, and not reported.) Semaphores (size > 1) have no
// edges: a waiter needs any of several holds to end, not all of them, and
// is not reported.
//
// The walk is breadth-first from the requester, in a defined order
// (holds in grant order, a session's wait, an owner's waits in the order
// they were queued, a multi-lock's legs in request order), so that the
// Raft FSM, which applies one operation at a time, finds the same cycle
// on every node. It visits at most maxDeadlockEdges edges; past that it
// reports no deadlock (the request waits, as without detection). It is
// paid only by a request that would wait on a held size-1 lock.
//
// Concurrency on a single server: the walk holds no mutex across steps;
// it reads each waiter's lock under that lock's shard mutex, one at a
// time (never two: no lock order to keep), after the requester's own
// critical section ended, and the request is queued in a second critical
// section if no cycle was found. A cycle whose edges are all waits on
// holds is stable (no participant on it can proceed but by a timeout,
// a cancel, an UNLOCK by key from elsewhere, or an expiry), so a real
// deadlock is always found, unless one of those ends it meanwhile. A
// false report needs edges that did not exist together: a hold on the
// path ending and a new wait on a hold of the requester forming while
// the walk runs (microseconds), each by another connection; the walk
// cannot tell that apart from a cycle. The request that forms a cycle
// between the walk and its queuing (both requests of the cycle walking at
// once) is not reported; its peers wait until a timeout as without
// detection.

// A participant waiting for its own hold (a cycle of one) is not
// reported: see findDeadlock.

// maxDeadlockEdges bounds the edges one deadlock walk visits.
const maxDeadlockEdges = 10_000

// participant is who waits and holds, for deadlock detection: an owner id
// (sess nil), or a session (owner ""). The zero value is no participant.
type participant struct {
	owner string
	sess  *Session
}

func participantOf(owner string, s *Session) participant {
	if owner != "" {
		return participant{owner: owner}
	}
	return participant{sess: s}
}

// waitEdge: a waiter waits on lock for a hold of to.
type waitEdge struct {
	lock string
	to   participant
}

// waitStart is a request about to wait: its participant and the holds it
// would wait for.
type waitStart struct {
	who   participant
	edges []waitEdge
}

// DeadlockError is the error of a request that would wait forever: its
// wait would close a cycle of waits on holds (SPEC §8.5). Locks are the
// cycle's lock names in cycle order: the requester would wait on Locks[0],
// whose holder waits on Locks[1], …, whose holder waits on the last,
// which the requester holds. It matches ErrDeadlock with errors.Is.
type DeadlockError struct{ Locks []string }

func (e *DeadlockError) Error() string {
	msg := ErrDeadlock.Error() + ": cycle through"
	for _, name := range e.Locks {
		msg += " '" + name + "'"
	}
	return msg
}

// Is makes errors.Is(err, ErrDeadlock) true.
func (e *DeadlockError) Is(target error) bool { return target == ErrDeadlock }

// holdParticipant returns hold id's participant. Caller holds sh.mu.
func (sh *shard) holdParticipant(t *Table, id uint32) participant {
	h := sh.hold(id)
	if h.is(owned) {
		return participant{owner: sh.owners[id]}
	}
	if h.session != 0 {
		return participant{sess: t.sessions.get(h.session)}
	}
	return participant{}
}

// holdEdges appends to buf an edge to each participant of a hold of lock
// lid, a size-1 lock, that a request of the given mode conflicts with:
// every other live hold for an exclusive one, the exclusive ones for a
// shared one; except is a hold to leave out (an upgrade's own). Caller
// holds sh.mu.
func (sh *shard) holdEdges(t *Table, lid uint32, isShared bool, except uint32, buf []waitEdge) []waitEdge {
	l := sh.lock(lid)
	if l.size != 1 {
		return buf
	}
	var name string
	for id := l.first; id != 0; id = sh.hold(id).next {
		h := sh.hold(id)
		if id == except || h.is(delayed) || (isShared && h.is(shared)) {
			continue
		}
		p := sh.holdParticipant(t, id)
		if p == (participant{}) {
			continue
		}
		if name == "" {
			name = sh.name(lid)
		}
		buf = append(buf, waitEdge{lock: name, to: p})
	}
	return buf
}

// waiterEdges appends w's edges to buf. Caller holds w.sh.mu; w is queued.
func (sh *shard) waiterEdges(t *Table, w *waiter, buf []waitEdge) []waitEdge {
	switch {
	case w.upgrade != 0:
		return sh.holdEdges(t, w.lock, false, w.upgrade, buf)
	case w.multi != nil && sh.reentry(w.lock, w) != 0:
		return buf
	}
	return sh.holdEdges(t, w.lock, w.req.Shared, 0, buf)
}

// waitEdges appends to buf the edges of every request p waits on. It
// takes one mutex at a time.
func (t *Table) waitEdges(p participant, buf []waitEdge) []waitEdge {
	var ws []*waiter
	if p.sess != nil {
		p.sess.mu.Lock()
		w := p.sess.waiting
		p.sess.mu.Unlock()
		switch {
		case w == nil || w.owner != "":
		case w.multi != nil:
			ws = w.multi.legs
		default:
			ws = []*waiter{w}
		}
	} else {
		ws = t.ownerWaits.of(p.owner)
	}
	for _, w := range ws {
		sh := w.sh
		sh.mu.Lock()
		if w.queued {
			buf = sh.waiterEdges(t, w, buf)
		}
		sh.mu.Unlock()
	}
	return buf
}

// findDeadlock walks the wait-for edges from st breadth-first and returns
// a *DeadlockError for the first cycle back to st.who, or nil (none, or
// the walk passed maxDeadlockEdges). Caller holds no mutex.
func (t *Table) findDeadlock(st *waitStart) error {
	type node struct {
		p      participant
		parent int    // the node whose wait reached this one; -1: the requester
		lock   string // the lock that wait is on
	}
	nodes := []node{{p: st.who, parent: -1}}
	seen := map[participant]bool{st.who: true} // membership only
	visited := 0
	edges := st.edges
	var buf []waitEdge
	for i := 0; i < len(nodes); i++ {
		if i > 0 {
			buf = t.waitEdges(nodes[i].p, buf[:0])
			edges = buf
		}
		for _, e := range edges {
			if visited++; visited > maxDeadlockEdges {
				return nil
			}
			if e.to == st.who && i == 0 {
				// A wait on a hold of the requester itself (a connection
				// that LOCKs, with a WAIT, a lock it holds): a cycle of
				// one, which its WAIT, the hold's TTL or an UNLOCK by key
				// from elsewhere ends. Clients rely on it answering nil
				// after its WAIT, as before detection: not reported.
				continue
			}
			if e.to == st.who {
				var locks []string
				for j := i; j > 0; j = nodes[j].parent {
					locks = append(locks, nodes[j].lock)
				}
				slices.Reverse(locks)
				return &DeadlockError{Locks: append(locks, e.lock)}
			}
			if !seen[e.to] {
				seen[e.to] = true
				nodes = append(nodes, node{p: e.to, parent: i, lock: e.lock})
			}
		}
	}
	return nil
}

// ownerWaits lists the queued waiters whose participant is an owner, by
// owner, in the order they were queued: the walk's way from an owner to
// what it waits on. Only queued requests with an owner pay for it.
type ownerWaits struct {
	// mu guards by and every waiter's onext/oprev. Taken after shard
	// mutexes (enqueue, dequeue) or alone (of), nothing after it.
	mu sync.Mutex
	by map[string]*ownerList
}

type ownerList struct{ head, tail *waiter }

func (o *ownerWaits) add(w *waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.by == nil {
		o.by = make(map[string]*ownerList)
	}
	l := o.by[w.owner]
	if l == nil {
		l = &ownerList{}
		o.by[w.owner] = l
	}
	w.oprev, w.onext = l.tail, nil
	if l.tail != nil {
		l.tail.onext = w
	} else {
		l.head = w
	}
	l.tail = w
}

func (o *ownerWaits) remove(w *waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.by[w.owner]
	if w.oprev != nil {
		w.oprev.onext = w.onext
	} else {
		l.head = w.onext
	}
	if w.onext != nil {
		w.onext.oprev = w.oprev
	} else {
		l.tail = w.oprev
	}
	w.oprev, w.onext = nil, nil
	if l.head == nil {
		delete(o.by, w.owner)
	}
}

// of returns owner's queued waiters, in the order they were queued.
func (o *ownerWaits) of(owner string) []*waiter {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ws []*waiter
	if l := o.by[owner]; l != nil {
		for w := l.head; w != nil; w = w.onext {
			ws = append(ws, w)
		}
	}
	return ws
}
