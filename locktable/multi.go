package locktable

import (
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// Atomic multi-locks (SPEC §8.4).
//
// A waiting multi-lock is one waiter per name (its legs), each queued on
// its own lock, all linked to one multiWait, queued at one instant: while
// AcquireMulti holds the mutexes of all its shards. So two requests that
// share names are queued in the same order on every name they share, and
// the earliest waiting request of the table heads every queue it is on:
// with all-or-nothing granting, no set of multi-locks waits for each
// other in a circle, whatever the order of their names.
//
// Granting takes every shard of the multi-lock, in shard-index order (the
// only order in which any operation takes several shard mutexes, so none
// can deadlock with another). A release in one shard cannot do that while
// it holds its own shard's mutex: when it leaves a leg at the head of its
// queue that fits the lock, grantWaiters stops there (nothing behind a
// head goes first) and records the multi-lock in the table's settle list
// (toSettle). Every public operation that can change a queue's head calls
// settle once it has let go of its shard mutexes: settle takes each listed
// multi-lock's shards and grants it if it now heads all its queues and
// fits all its locks, then grants what follows it on them. The list is
// empty unless multi-locks wait, and an operation that finds it empty pays
// one atomic load: no global mutex on the single-lock path.

// multiWait is a waiting multi-lock. legs and shards never change; done is
// guarded by the mutexes of all its shards (written holding every one,
// read holding any); pending by Table.settling.mu.
type multiWait struct {
	legs    []*waiter // one per name, in request order
	shards  []*shard  // the legs' shards, each once, in index order
	done    bool      // granted or withdrawn: no leg is queued any more
	pending bool      // in Table.settling's list
}

// lock takes the mutexes of m's shards, in index order.
func (m *multiWait) lock() {
	for _, sh := range m.shards {
		sh.mu.Lock()
	}
}

func (m *multiWait) unlock() {
	for i := len(m.shards) - 1; i >= 0; i-- {
		m.shards[i].mu.Unlock()
	}
}

// settleList is the multi-locks a release may have made grantable, in the
// order the releases found them (deterministic when operations are
// applied one at a time, as the Raft FSM does).
type settleList struct {
	// mu guards list and every multiWait's pending. Taken after shard
	// mutexes (toSettle) or alone (settle), nothing after it.
	mu   sync.Mutex
	list []*multiWait
	// n is len(list), read without mu by every operation on its way out.
	n atomic.Int32
}

// toSettle records m for the settle of the current operation, once.
// Caller holds a mutex of one of m's shards.
func (t *Table) toSettle(m *multiWait) {
	q := &t.settling
	q.mu.Lock()
	if !m.pending {
		m.pending = true
		q.list = append(q.list, m)
		q.n.Add(1)
	}
	q.mu.Unlock()
}

// settle grants, in ev, the recorded multi-locks that head all their
// queues and fit all their locks, in the order recorded, and what their
// grants let follow. Caller holds no shard mutex. With ev nil it does
// nothing (operations without events grant nothing).
func (t *Table) settle(ev *Events, now int64) {
	q := &t.settling
	for ev != nil && q.n.Load() != 0 {
		q.mu.Lock()
		if len(q.list) == 0 {
			q.mu.Unlock()
			return
		}
		m := q.list[0]
		q.list[0] = nil
		q.list = q.list[1:]
		m.pending = false
		q.n.Add(-1)
		q.mu.Unlock()
		t.settleMulti(ev, m, now)
	}
}

// reentry returns the hold of lock lid that leg w would re-enter (its
// owner's, in its mode and detach mode, with room in its count), or 0.
// Caller holds sh.mu.
func (sh *shard) reentry(lid uint32, w *waiter) uint32 {
	id := sh.ownedHold(lid, w.req.Owner)
	if id == 0 {
		return 0
	}
	h := sh.hold(id)
	if h.is(shared) != w.req.Shared || h.is(detached) != w.req.Detach || h.count == math.MaxUint32 {
		return 0
	}
	return id
}

// legFits reports whether multi-lock leg w fits lock lid: it re-enters
// its owner's hold, or fits the lock's holds. Caller holds sh.mu.
func (sh *shard) legFits(lid uint32, w *waiter) bool {
	return sh.reentry(lid, w) != 0 || sh.fits(lid, w.req.Shared)
}

// settleMulti grants m if it heads every queue it is on, fits every lock
// and has room in every bucket, and its session is open; then the
// requests behind it that fit. A closed session's multi-lock is left to
// its CloseSession, which withdraws it.
func (t *Table) settleMulti(ev *Events, m *multiWait, now int64) {
	m.lock()
	defer m.unlock()
	if m.done {
		return
	}
	for _, w := range m.legs {
		if q := w.sh.queues[w.lock]; q == nil || q.head != w || !w.sh.legFits(w.lock, w) {
			return
		}
	}
	for i, w := range m.legs {
		if w.sh.reentry(w.lock, w) != 0 {
			continue
		}
		need := uint32(1)
		for _, v := range m.legs[:i] {
			if v.sh == w.sh && v.bucket == w.bucket && v.sh.reentry(v.lock, v) == 0 {
				need++
			}
		}
		if w.sh.buckets[w.bucket]+need > t.bucketCap {
			return
		}
	}
	s := m.legs[0].session
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	g := Grant{Session: s, Names: make([]string, len(m.legs)), Keys: make([]Key, len(m.legs))}
	// Re-entries first decided, for all legs, before any hold is added.
	re := make([]uint32, len(m.legs))
	for i, w := range m.legs {
		re[i] = w.sh.reentry(w.lock, w)
	}
	for i, w := range m.legs {
		sh := w.sh
		sh.dequeue(w)
		id := re[i]
		if id != 0 {
			h := sh.hold(id)
			h.count++
			sh.restartTTL(id, w.req.TTL, now)
			sh.journalPut(id, w.req.Name)
		} else {
			id = sh.newHold(t, w.lock, w.bucket, w.req, now)
			if !w.req.Detach {
				s.link(t, sh.base|hid(id))
			}
		}
		h := sh.hold(id)
		g.Names[i], g.Keys[i] = w.req.Name, h.key
		if i == 0 {
			g.TTL, g.Deadline = h.ttl, sh.deadline(id)
		}
	}
	if s.waiting == m.legs[0] {
		s.waiting = nil
	}
	s.mu.Unlock()
	m.done = true
	ev.Grants = append(ev.Grants, g)
	for _, w := range m.legs {
		w.sh.grantWaiters(t, ev, w.lock, w.req.Name, now)
	}
}

// cancelMulti withdraws m from all its queues, granting, with ev, the
// requests it kept waiting (see cancelWaiter). It reports whether m was
// still waiting.
func (t *Table) cancelMulti(ev *Events, m *multiWait, now int64) bool {
	m.lock()
	defer m.unlock()
	if m.done {
		return false
	}
	m.done = true
	for _, w := range m.legs {
		w.sh.cancelWaiter(t, ev, w, now)
	}
	return true
}

// multiLeg is what AcquireMulti learns of one name.
type multiLeg struct {
	sh      *shard
	hash    uint64
	bucket  uint16
	lid     uint32
	reentry uint32 // the owner's hold it re-enters; 0: none
}

// AcquireMulti asks for every name of reqs at once, on behalf of s (SPEC
// §8.4): one request per name, with the same options but Name and Rand
// (TTL, Owner, Detach, Shared, LockDelay), each for a size-1 lock (Size 0
// or 1). When every name can be granted now — it fits the lock's holds and
// nobody is queued on it, or it re-enters a hold of the same owner (as
// Acquire would) — it grants them all and returns their keys in the order
// of reqs (Granted). Otherwise, if wait, the request joins every name's
// queue at one instant (Queued) and is granted, on all names in one step,
// when it heads all its queues and fits all its locks: a Grant with Names
// and Keys in the Events of whoever freed the last capacity. It never
// holds part of its names while it waits, and later requests for any of
// them queue behind it. Without wait nothing changes (Busy).
//
// The wait is s's one wait (ErrAlreadyWaiting); it counts as one per name
// against Config.MaxHoldsPerSession while waiting, and a grant as a hold
// per name it does not re-enter. A request is refused (ErrTooManyHolds) unless its
// grant fits the bound: granted at once, the names it does not re-enter;
// after waiting, every name (what it would re-enter may end meanwhile). Every leg counts against its lock's
// Config.MaxWaiters. CancelWaitAt and CloseSession withdraw every leg.
//
// Errors, and nothing changes (but the expiry of the names' due holds):
// ErrBadRequest (no names, a name twice or empty, options that differ, a
// Size over 1, or what Acquire refuses); ErrDetachNeedsTTL;
// ErrSessionClosed; a *SizeMismatchError for a lock of size > 1; the
// re-entry errors of Acquire; ErrAlreadyWaiting; ErrTooManyHolds;
// ErrTooManyWaiters; ErrTableFull (a grant at once only); a
// *DeadlockError when waiting would close a wait-for cycle (SPEC §8.5,
// see deadlock.go).
func (t *Table) AcquireMulti(ev *Events, s *Session, reqs []Request, now int64, wait bool) ([]Key, Outcome, error) {
	return decide(t, ev, now, func(detect, settleFirst bool) ([]Key, Outcome, error, *waitStart) {
		return t.acquireMulti(ev, s, reqs, now, wait, detect, settleFirst)
	})
}

// decide runs attempt, a request's critical section (Acquire's,
// AcquireMulti's, Upgrade's), until it decides: it settles the
// multi-locks that expiries left first when attempt asks
// (errSettleFirst, at most maxSettleFirst times), and when attempt would
// queue (a *waitStart) it walks the wait-for graph outside every shard's
// lock, failing with the *DeadlockError if a cycle closes, else trying
// again without detection. The deferred settle grants the multi-locks
// the operation's own releases left at queue heads.
func decide[K any](t *Table, ev *Events, now int64, attempt func(detect, settleFirst bool) (K, Outcome, error, *waitStart)) (K, Outcome, error) {
	defer t.settle(ev, now)
	detect := true
	for try := 0; ; try++ {
		k, out, err, st := attempt(detect, try < maxSettleFirst)
		switch {
		case err == errSettleFirst:
			t.settle(ev, now)
		case st != nil:
			if derr := t.findDeadlock(st); derr != nil {
				var none K
				return none, 0, derr
			}
			detect = false
		default:
			return k, out, err
		}
	}
}

// errSettleFirst: the expiries that an Acquire, AcquireMulti or Upgrade
// ran first left multi-locks to settle, one of which may head the
// request's queue and be granted ahead of it; the caller settles them and
// tries again (at most maxSettleFirst times: with concurrent operations
// the list may fill again), so that a request is never queued behind a
// multi-lock its own operation then grants (and granted in the same
// operation's events).
var errSettleFirst = errors.New("locktable: settle multi-locks first")

const maxSettleFirst = 3

// acquireMulti is AcquireMulti in the critical section of the names'
// shards. With detect, a request that would wait and whose wait has hold
// edges is not queued: its edges come back for the deadlock walk, to be
// run without the mutexes, and the caller calls again without detect.
func (t *Table) acquireMulti(ev *Events, s *Session, reqs []Request, now int64, wait, detect, settleFirst bool) ([]Key, Outcome, error, *waitStart) {
	if len(reqs) == 0 {
		return nil, 0, ErrBadRequest, nil
	}
	rs := slices.Clone(reqs)
	names := make(map[string]bool, len(rs)) // membership only
	for i := range rs {
		r := &rs[i]
		if r.Size == 0 {
			r.Size = 1
		}
		f := &rs[0]
		if r.Name == "" || r.Size != 1 || r.TTL < 0 || r.LockDelay < 0 || r.LockDelay > MaxLockDelay || names[r.Name] ||
			r.TTL != f.TTL || r.Owner != f.Owner || r.Detach != f.Detach || r.Shared != f.Shared || r.LockDelay != f.LockDelay {
			return nil, 0, ErrBadRequest, nil
		}
		names[r.Name] = true
	}
	if rs[0].Detach && rs[0].TTL == 0 {
		return nil, 0, ErrDetachNeedsTTL, nil
	}
	legs := make([]multiLeg, len(rs))
	shards := make([]*shard, 0, len(rs))
	for i := range rs {
		sh, hash := t.shardOf(rs[i].Name)
		legs[i] = multiLeg{sh: sh, hash: hash, bucket: t.bucketOf(hash)}
		shards = append(shards, sh)
	}
	slices.SortFunc(shards, func(a, b *shard) int { return int(a.idx) - int(b.idx) })
	shards = slices.Compact(shards)
	m := &multiWait{shards: shards}
	m.lock()
	defer m.unlock()
	for i := range legs {
		lg := &legs[i]
		lg.lid = lg.sh.expireLock(t, ev, lg.sh.find(rs[i].Name, lg.hash), rs[i].Name, now)
	}
	if settleFirst && t.settling.n.Load() != 0 {
		return nil, 0, errSettleFirst, nil
	}

	// As in Acquire, s.mu after the expiries.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, ErrSessionClosed, nil
	}
	canGrant := true
	newHolds := 0
	for i := range legs {
		lg := &legs[i]
		sh, lid := lg.sh, lg.lid
		if lid == 0 {
			newHolds++
			continue
		}
		if size := sh.lock(lid).size; size != 1 {
			return nil, 0, &SizeMismatchError{Have: size, Want: 1, Name: rs[i].Name}, nil
		}
		if id := sh.ownedHold(lid, rs[i].Owner); id != 0 {
			h := sh.hold(id)
			if h.is(shared) != rs[i].Shared {
				return nil, 0, ErrModeMismatch, nil
			}
			if h.is(detached) != rs[i].Detach {
				return nil, 0, ErrDetachMismatch, nil
			}
			if h.count == math.MaxUint32 {
				return nil, 0, ErrTooManyReentries, nil
			}
			lg.reentry = id
			continue
		}
		newHolds++
		if !sh.fits(lid, rs[i].Shared) || sh.queues[lid] != nil {
			canGrant = false
		}
	}
	if !canGrant && !wait {
		return nil, Busy, nil, nil
	}
	if s.waiting != nil && !canGrant {
		return nil, 0, ErrAlreadyWaiting, nil
	}
	if max := t.cfg.MaxHoldsPerSession; max > 0 && !rs[0].Detach {
		used := s.bound + s.waitHolds()
		need := newHolds // a grant now
		if !canGrant {
			// A grant later: a hold it would re-enter now may have
			// ended by then, and every name becomes a new hold.
			need = len(rs)
		}
		if need > 0 && used+need > max {
			return nil, 0, ErrTooManyHolds, nil
		}
	}
	if !canGrant && t.cfg.MaxWaiters > 0 {
		for _, lg := range legs {
			if q := lg.sh.queues[lg.lid]; lg.lid != 0 && q != nil && q.n >= t.cfg.MaxWaiters {
				return nil, 0, ErrTooManyWaiters, nil
			}
		}
	}
	if canGrant {
		for i, lg := range legs {
			if lg.reentry != 0 {
				continue
			}
			need := uint32(1)
			for _, o := range legs[:i] {
				if o.sh == lg.sh && o.bucket == lg.bucket && o.reentry == 0 {
					need++
				}
			}
			if lg.sh.buckets[lg.bucket]+need > t.bucketCap {
				return nil, 0, ErrTableFull, nil
			}
		}
		keys := make([]Key, len(rs))
		for i, lg := range legs {
			sh := lg.sh
			if id := lg.reentry; id != 0 {
				h := sh.hold(id)
				h.count++
				sh.restartTTL(id, rs[i].TTL, now)
				sh.journalPut(id, rs[i].Name)
				keys[i] = h.key
				continue
			}
			lid := lg.lid
			if lid == 0 {
				lid = sh.newLock(rs[i].Name, lg.hash, 1)
			}
			id := sh.newHold(t, lid, lg.bucket, rs[i], now)
			if !rs[i].Detach {
				s.link(t, sh.base|hid(id))
			}
			keys[i] = sh.hold(id).key
		}
		return keys, Granted, nil, nil
	}
	if detect {
		st := &waitStart{who: participantOf(rs[0].Owner, s)}
		for i, lg := range legs {
			if lg.lid != 0 && lg.reentry == 0 {
				st.edges = lg.sh.holdEdges(t, lg.lid, rs[i].Shared, 0, st.edges)
			}
		}
		if len(st.edges) > 0 {
			return nil, 0, nil, st
		}
	}
	m.legs = make([]*waiter, len(rs))
	for i, lg := range legs {
		sh, lid := lg.sh, lg.lid
		if lid == 0 {
			lid = sh.newLock(rs[i].Name, lg.hash, 1)
		}
		w := &waiter{sh: sh, lock: lid, bucket: lg.bucket, session: s, req: rs[i], enqueued: now, multi: m, owner: rs[i].Owner}
		sh.enqueue(lid, w)
		m.legs[i] = w
		sh.notify(NoticeContended, rs[i].Name, 0, 0, sh.queues[lid].n)
	}
	s.waiting = m.legs[0]
	return nil, Queued, nil, nil
}
