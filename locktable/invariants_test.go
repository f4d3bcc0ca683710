package locktable

import (
	"fmt"
	"slices"
	"testing"
	"unsafe"
)

// checkInvariants walks every shard of tb (each under its mutex) and fails
// the test if the table's internal structures disagree with each other or
// with the package's promises:
//
//   - a lock in the index has holds or waiters, is found by its name, hashes
//     to its shard, and lists as many holds and slots as its count says; the
//     index counts its locks; it is big (has a bigIndex in shard.big)
//     when it has at least bigLock records, and only while it has at
//     least bigLock/2, and then its index names exactly its records by
//     fence and each but the first's predecessor, its last record, and a
//     bound at most the deadline of each record; every lock
//     record not in the index is free, and so is every hold record no lock
//     lists, and the free lists hold exactly those;
//   - every hold points back at its lock, has count ≥ 1, and its
//     fence lies in [FenceStart, LastFence]; fences rise along a lock's holds
//     (grant order); fences, and so keys, are unique across the table;
//   - a bound hold (neither detached nor orphaned) belongs to an open session
//     and sits in that session's list; a detached hold has a TTL and no
//     session;
//   - a hold has a deadline iff it has a TTL (an orphan always has one, its
//     restore grace), and then it is in the shard's heap at its heapPos;
//     the heap has nothing else and keeps its order;
//   - a slot in lock-delay counts against its lock's size (it is in the
//     lock's list and count), is never listed as a holder (Lock), has no
//     session, owner, TTL, orphan or detached mark, and has a deadline, in
//     the heap; lock-delays are kept in shard.delays exactly for the
//     records marked with one, each in (0, MaxLockDelay];
//   - the shard's hold and waiter counters match what is there;
//   - modes (SPEC §8.3): shared holds and slots only on size-1 locks and
//     only beside shared ones (an exclusive record of a size-1 lock is its
//     only one); a semaphore has at most size records;
//   - a waiter is queued on its own lock, its session is open and waits
//     for exactly it, and the queue's links and length agree; the head of
//     a queue does not fit the lock (nobody waits for what the lock could
//     grant; a shared request may when its bucket is full); a shared
//     waiter is on a size-1 lock; an upgrade waiter is its queue's head
//     (so at most one per lock) and names a live shared hold of its lock;
//   - every session seen (through holds and waiters, plus the ones passed
//     in) counts as bound exactly the holds linked to it, all live, and
//     its bound holds plus its wait are within MaxHoldsPerSession (Renew's
//     adoption of an orphan is exempt, and no test adopts past it); a closed
//     session has no holds, no wait and no slot, and a session's slot names
//     it;
//   - owners and long names are kept exactly for the holds and locks that
//     have them; a queue is kept exactly for each lock with waiters;
//   - the name order (a B-tree) lists exactly the index's locks, in strictly
//     increasing name order, with every leaf at one depth and every node
//     but the root at least half full; its free lists hold the other nodes;
//   - every hold counts in its name's bucket, and no bucket is over its cap;
//   - a shard with deadlines is in the expiry schedule, at a place no later
//     than its earliest hold, and the schedule keeps its heap order.
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
	var multis []*multiWait // the waiting multi-locks, once per leg
	seen := make(map[*Session]bool)
	for _, s := range sessions {
		seen[s] = true
	}

	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.Lock()
		holds, waiters, withDeadline, locks, owners, longNames, delayedSlots, delays := 0, 0, 0, 0, 0, 0, 0, 0
		var minGranted int64
		liveLocks := make(map[uint32]bool)
		liveHolds := make(map[uint32]bool)
		buckets := make([]uint32, len(sh.buckets))
		sh.index.each(func(lid uint32) {
			locks++
			l := sh.lock(lid)
			name := sh.name(lid)
			if liveLocks[lid] {
				fail("shard %d: lock %q twice in the index", i, name)
			}
			liveLocks[lid] = true
			if h := hashName(name); sh.find(name, h) != lid {
				fail("shard %d: lock %q not found by its name", i, name)
			}
			if got, _ := tb.shardOf(name); got != sh {
				fail("lock %q: in shard %d, but its hash says otherwise", name, i)
			}
			if l.nameOff == 0 {
				longNames++
			} else if len(name) > maxArenaName {
				fail("lock %q: a long name in the arena", name)
			}
			q := sh.queues[lid]
			if l.first == 0 && q == nil {
				fail("lock %q: empty but still in the index", name)
			}
			if l.size == 0 {
				fail("lock %q: size 0", name)
			}
			n, slots, sharedRecs := 0, 0, 0
			var prevFence uint64
			var prevID uint32
			big := sh.big[lid]
			for id := l.first; id != 0; id = sh.hold(id).next {
				n++
				if big != nil {
					checkBigRecord(fail, sh, big, name, id, prevID)
				}
				prevID = id
				if n > int(l.nholds)+1 {
					fail("lock %q: hold list longer than its count %d (cycle?)", name, l.nholds)
					break
				}
				liveHolds[id] = true
				h := sh.hold(id)
				if h.is(shared) {
					sharedRecs++
					if l.size != 1 {
						fail("lock %q: shared hold %v on a lock of size %d", name, h.key, l.size)
					}
				}
				if h.is(lockDelay) {
					delays++
					if d, ok := sh.delays[id]; !ok || d <= 0 || d > MaxLockDelay {
						fail("lock %q: hold %v marked with a lock-delay of %d (kept: %v)", name, h.key, d, ok)
					}
				}
				if h.is(delayed) {
					slots++
					delayedSlots++
					if h.is(detached) || h.is(orphan) || h.is(owned) || h.session != 0 || h.sprev != 0 || h.snext != 0 || h.ttl != 0 {
						fail("lock %q: slot in lock-delay %v has flags %b, session %d, links %d/%d, ttl %d", name, h.key, h.flags, h.session, h.sprev, h.snext, h.ttl)
					}
					if h.heapPos == 0 || sh.deadline(id) <= 0 {
						fail("lock %q: slot in lock-delay %v has no deadline in the heap", name, h.key)
					}
				} else {
					holds++
					if holds == 1 || h.granted < minGranted {
						minGranted = h.granted
					}
				}
				if h.lock != lid {
					fail("lock %q: hold %v points at another lock", name, h.key)
				}
				if b := tb.bucketOf(hashName(name)); h.bucket != b {
					fail("lock %q: hold %v counts in bucket %d, its name's is %d", name, h.key, h.bucket, b)
				} else {
					buckets[b]++
				}
				if h.is(owned) {
					owners++
					if sh.owners[id] == "" {
						fail("lock %q: hold %v has an empty owner", name, h.key)
					}
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
				deadline := sh.deadline(id)
				switch {
				case h.is(delayed):
					// Checked above.
				case h.is(orphan) && deadline <= 0:
					// Restore gives every orphan a grace deadline.
					fail("lock %q: orphaned hold %v without deadline", name, h.key)
				case !h.is(orphan) && (h.ttl > 0) != (deadline > 0):
					fail("lock %q: hold %v has ttl %d but deadline %d", name, h.key, h.ttl, deadline)
				}
				if h.heapPos != 0 {
					withDeadline++
					if h.heapPos > sh.expiry.n || sh.expiry.at(h.heapPos-1).hold != id {
						fail("lock %q: hold %v not at its heap position %d", name, h.key, h.heapPos)
					}
				}
				switch {
				case h.is(delayed):
				case h.is(detached):
					if h.session != 0 {
						fail("lock %q: detached hold %v bound to slot %d", name, h.key, h.session)
					}
					if h.ttl == 0 {
						fail("lock %q: detached hold %v without TTL", name, h.key)
					}
				case h.is(orphan):
					if h.session != 0 {
						fail("lock %q: orphaned hold %v bound to slot %d", name, h.key, h.session)
					}
				default:
					if h.session == 0 {
						fail("lock %q: bound hold %v has no session", name, h.key)
						break
					}
					s := tb.sessions.get(h.session)
					if s == nil {
						fail("lock %q: bound hold %v names empty slot %d", name, h.key, h.session)
						break
					}
					seen[s] = true
					linked[s]++
					s.mu.Lock()
					if s.closed {
						fail("lock %q: hold %v bound to closed session %d", name, h.key, s.ID)
					}
					if s.slot != h.session {
						fail("lock %q: hold %v names slot %d, its session has %d", name, h.key, h.session, s.slot)
					}
					if h.sprev == 0 && s.head != sh.base|hid(id) {
						fail("lock %q: hold %v not in session %d's list", name, h.key, s.ID)
					}
					s.mu.Unlock()
				}
			}
			if n != int(l.nholds) {
				fail("lock %q: %d holds and slots in lock-delay, count says %d", name, n, l.nholds)
			}
			switch {
			case big == nil && n >= int(sh.bigLock()):
				fail("lock %q: %d records but not big (from %d)", name, n, sh.bigLock())
			case big == nil:
			case n < int(sh.bigLock()/2):
				fail("lock %q: big with %d records (kept down to %d)", name, n, sh.bigLock()/2)
			case len(big.fences) != n || len(big.prev) != max(n-1, 0) || big.last != prevID:
				fail("lock %q: %d records, last %d; its index has %d fences, %d back links, last %d",
					name, n, prevID, len(big.fences), len(big.prev), big.last)
			}
			// A listing reads the holds' sessions: only once they are sound.
			if len(errs) == 0 {
				if li := sh.info(tb, lid, name, 0); len(li.Holds) != n-slots || li.Delayed != slots {
					fail("lock %q: listed with %d holds and %d delayed; has %d and %d", name, len(li.Holds), li.Delayed, n-slots, slots)
				}
			}
			// Modes: shared records coexist only with shared ones, an
			// exclusive record of a size-1 lock is its only record, and a
			// semaphore's records (all exclusive) are at most its size.
			if sharedRecs > 0 && sharedRecs != n {
				fail("lock %q: %d shared records beside %d exclusive ones", name, sharedRecs, n-sharedRecs)
			}
			if sharedRecs == 0 && n > int(l.size) {
				fail("lock %q: %d exclusive holds > size %d", name, n, l.size)
			}
			if q == nil {
				return
			}
			if q.n == 0 {
				fail("lock %q: empty wait queue kept", name)
			}
			// Nobody waits for what the lock could grant: the head does
			// not fit (but for shared requests when the bucket is full).
			if q.head != nil && q.head.multi == nil && sh.waiterFits(lid, q.head) && (q.head.upgrade != 0 || !q.head.req.Shared || !tb.bucketFull(sh, q.head.bucket)) {
				fail("lock %q: the head of its queue (session %d, shared %v, upgrade %v) fits the lock's %d records", name, q.head.session.ID, q.head.req.Shared, q.head.upgrade != 0, n)
			}
			n = 0
			var prev *waiter
			for w := q.head; w != nil; w = w.next {
				n++
				if n > q.n+1 {
					fail("lock %q: wait queue longer than its count %d (cycle?)", name, q.n)
					break
				}
				if w.prev != prev {
					fail("lock %q: waiter %d has a wrong prev link", name, n)
				}
				if w.sh != sh || w.lock != lid || !w.queued {
					fail("lock %q: waiter %d belongs elsewhere or is not marked queued", name, n)
				}
				if w.req.Shared && l.size != 1 {
					fail("lock %q: shared waiter %d on a lock of size %d", name, n, l.size)
				}
				if w.upgrade != 0 {
					// At most one upgrade per lock, at the head, for a
					// live shared hold of the lock.
					if n != 1 {
						fail("lock %q: upgrade waiting at place %d, not at the head", name, n)
					}
					if h := sh.hold(w.upgrade); !liveHolds[w.upgrade] || h.lock != lid || !h.is(shared) || h.is(delayed) {
						fail("lock %q: upgrade waits for hold record %d, not a live shared hold of the lock", name, w.upgrade)
					}
					if w.req.Shared || w.req.Name != name {
						fail("lock %q: upgrade waiter with request %+v", name, w.req)
					}
				}
				s := w.session
				seen[s] = true
				s.mu.Lock()
				if s.closed {
					fail("lock %q: waiter of closed session %d still queued", name, s.ID)
				}
				if m := w.multi; m != nil {
					multis = append(multis, m)
					if s.waiting != m.legs[0] || m.done || !slices.Contains(m.legs, w) {
						fail("lock %q: session %d does not know its multi-lock waits here (done %v)", name, s.ID, m.done)
					}
				} else if s.waiting != w {
					fail("lock %q: session %d does not know it waits here", name, s.ID)
				}
				s.mu.Unlock()
				prev = w
			}
			if q.tail != prev {
				fail("lock %q: wait queue tail is not its last waiter", name)
			}
			if n != q.n {
				fail("lock %q: wait queue has %d waiters, count says %d", name, n, q.n)
			}
			waiters += n
		})

		if sh.index.n != locks {
			fail("shard %d: index counts %d locks, has %d", i, sh.index.n, locks)
		}
		for b, n := range buckets {
			if sh.buckets[b] != n || n > tb.bucketCap {
				fail("shard %d: bucket %d counts %d holds, has %d (cap %d)", i, b, sh.buckets[b], n, tb.bucketCap)
			}
		}
		checkOrder(fail, i, sh, liveLocks)
		checkSchedule(fail, i, tb, sh)
		if holds > 0 && !sh.oldestStale && sh.oldest != minGranted {
			fail("shard %d: oldest grant %d, actual %d", i, sh.oldest, minGranted)
		}
		if holds > 0 && sh.oldestStale && sh.oldest > minGranted {
			fail("shard %d: stale oldest grant %d after the actual %d", i, sh.oldest, minGranted)
		}
		if sh.nholds != holds {
			fail("shard %d: hold counter %d, actual %d", i, sh.nholds, holds)
		}
		if sh.delayed != delayedSlots {
			fail("shard %d: lock-delay slot counter %d, actual %d", i, sh.delayed, delayedSlots)
		}
		if len(sh.delays) != delays {
			fail("shard %d: %d lock-delays kept, %d in use", i, len(sh.delays), delays)
		}
		if sh.waiters != waiters {
			fail("shard %d: waiter counter %d, actual %d", i, sh.waiters, waiters)
		}
		if len(sh.owners) != owners || len(sh.longNames) != longNames {
			fail("shard %d: %d owners and %d long names kept, %d and %d in use", i, len(sh.owners), len(sh.longNames), owners, longNames)
		}
		for lid := range sh.queues {
			if !liveLocks[lid] {
				fail("shard %d: queue kept for lock record %d, not a lock", i, lid)
			}
		}
		for lid := range sh.big {
			if !liveLocks[lid] {
				fail("shard %d: big-lock index kept for lock record %d, not a lock", i, lid)
			}
		}
		checkFree(fail, fmt.Sprintf("shard %d locks", i), &sh.locks, liveLocks, func(l *lockRec) bool { return l.size != 0 })
		checkFree(fail, fmt.Sprintf("shard %d holds", i), &sh.holds, liveHolds, func(h *holdRec) bool { return h.lock != 0 })
		if int(sh.expiry.n) != withDeadline {
			fail("shard %d: heap has %d entries, %d live holds have a deadline", i, sh.expiry.n, withDeadline)
		}
		for j := uint32(0); j < sh.expiry.n; j++ {
			id := sh.expiry.at(j).hold
			if sh.hold(id).heapPos != j+1 {
				fail("shard %d: heap[%d] says it is at %d", i, j, sh.hold(id).heapPos-1)
			}
			if !liveHolds[id] {
				fail("shard %d: heap[%d] is a released hold", i, j)
			}
			if j > 0 && sh.heapLess(j, (j-1)/2) {
				fail("shard %d: heap order broken at %d", i, j)
			}
		}
		sh.mu.Unlock()
	}

	// Multi-locks (SPEC §8.4): all legs queued, none granted, each on its
	// own lock, the shards listed in index order; and none is left that
	// heads all its queues and fits all its locks (settle grants those
	// before an operation returns), but when a bucket is full or its
	// session is closing.
	for _, m := range multis {
		if m != m.legs[0].multi {
			continue
		}
		m.lock()
		heads, full := true, false
		for i, w := range m.legs {
			if !w.queued || w.multi != m || w.session != m.legs[0].session || w.enqueued != m.legs[0].enqueued {
				fail("multi-lock of session %d: leg %q not queued with its siblings", w.session.ID, w.req.Name)
			}
			if !slices.Contains(m.shards, w.sh) || (i > 0 && w.req.Name == m.legs[0].req.Name) {
				fail("multi-lock of session %d: leg %q in a shard it does not list, or a name twice", w.session.ID, w.req.Name)
			}
			if q := w.sh.queues[w.lock]; q == nil || q.head != w || !w.sh.legFits(w.lock, w) {
				heads = false
			}
			if w.sh.reentry(w.lock, w) == 0 {
				need := uint32(1)
				for _, v := range m.legs[:i] {
					if v.sh == w.sh && v.bucket == w.bucket && v.sh.reentry(v.lock, v) == 0 {
						need++
					}
				}
				full = full || w.sh.buckets[w.bucket]+need > tb.bucketCap
			}
		}
		for i := 1; i < len(m.shards); i++ {
			if m.shards[i-1].idx >= m.shards[i].idx {
				fail("multi-lock of session %d: shards not in index order", m.legs[0].session.ID)
			}
		}
		s := m.legs[0].session
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if heads && !full && !closed {
			fail("multi-lock of session %d heads all its queues and fits all its locks, but waits", s.ID)
		}
		m.unlock()
	}

	for s := range seen {
		s.mu.Lock()
		n := 0
		for h := s.head; h != 0; h = tb.hold(h).snext {
			n++
			if n > s.bound+1 {
				fail("session %d: hold list longer than bound %d (cycle?)", s.ID, s.bound)
				break
			}
			if r := tb.hold(h); r.session != s.slot || r.lock == 0 || r.is(detached) {
				fail("session %d: list has hold %v that is not a live bound hold of it", s.ID, r.key)
			}
		}
		if s.slot != 0 && tb.sessions.get(s.slot) != s {
			fail("session %d: its slot %d names another session", s.ID, s.slot)
		}
		if n != s.bound {
			fail("session %d: list has %d holds, bound says %d", s.ID, n, s.bound)
		}
		if s.bound != linked[s] {
			fail("session %d: bound %d, but %d live holds are bound to it", s.ID, s.bound, linked[s])
		}
		if max := tb.cfg.MaxHoldsPerSession; max > 0 {
			if w := s.waitHolds(); s.bound+w > max {
				fail("session %d: %d bound holds and a wait for %d, over MaxHoldsPerSession %d", s.ID, s.bound, w, max)
			}
		}
		if s.closed && (s.bound != 0 || s.waiting != nil || s.slot != 0) {
			fail("session %d: closed with %d holds, waiting=%v, slot %d", s.ID, s.bound, s.waiting != nil, s.slot)
		}
		if w := s.waiting; w != nil && (!w.queued || w.session != s) {
			fail("session %d: waits on a request that is not queued for it", s.ID)
		}
		s.mu.Unlock()
	}
	return errs
}

// checkOrder checks shard i's name order against its live locks.
func checkOrder(fail func(string, ...any), i int, sh *shard, live map[uint32]bool) {
	o := &sh.order
	var ids []uint32
	leaves, inner := map[uint32]bool{}, map[uint32]bool{}
	var walk func(x uint32, h int, root bool)
	walk = func(x uint32, h int, root bool) {
		if len(ids) > len(live)+1 {
			return // a cycle, or keys not in the index: reported below
		}
		xk := o.node(x, h)
		if xk.n > btMaxKeys || xk.n == 0 || (!root && xk.n < btMinKeys) {
			fail("shard %d: order node %d (height %d) has %d keys", i, x, h, xk.n)
			return
		}
		if h == 0 {
			leaves[x] = true
			ids = append(ids, xk.keys[:xk.n]...)
			return
		}
		inner[x] = true
		in := o.inner.at(x)
		for k := range int(xk.n) + 1 {
			walk(in.kids[k], h-1, false)
			if k < int(xk.n) {
				ids = append(ids, xk.keys[k])
			}
		}
	}
	if o.root != 0 {
		walk(o.root, o.height, true)
	}
	if len(ids) != len(live) {
		fail("shard %d: order lists %d locks, the index %d", i, len(ids), len(live))
	}
	for k, id := range ids {
		if !live[id] {
			fail("shard %d: order lists lock record %d, not a lock", i, id)
			return
		}
		if k > 0 && keyName(sh, ids[k-1]) >= keyName(sh, id) {
			fail("shard %d: order has %q before %q", i, keyName(sh, ids[k-1]), keyName(sh, id))
		}
	}
	checkFree(fail, fmt.Sprintf("shard %d order leaves", i), &o.leaves, leaves, func(l *btLeaf) bool { return l.n != 0 })
	checkFree(fail, fmt.Sprintf("shard %d order nodes", i), &o.inner, inner, func(l *btInner) bool { return l.n != 0 })
}

// checkSchedule checks shard i's place in tb's expiry schedule. Caller
// holds sh.mu.
func checkSchedule(fail func(string, ...any), i int, tb *Table, sh *shard) {
	q := &tb.sched
	q.mu.Lock()
	defer q.mu.Unlock()
	if sh.scheduled != (sh.dueAt != 0) {
		fail("shard %d: scheduled=%v at position %d", i, sh.scheduled, sh.dueAt)
	}
	if sh.dueAt != 0 {
		if int(sh.dueAt) > len(q.heap) || q.heap[sh.dueAt-1] != sh {
			fail("shard %d: not at its schedule position %d", i, sh.dueAt)
		}
		if j := int(sh.dueAt - 1); j > 0 && q.less(j, (j-1)/2) {
			fail("shard %d: schedule order broken at %d", i, j)
		}
	}
	if top, ok := sh.earliest(); ok && (sh.dueAt == 0 || top.less(sh.due)) {
		fail("shard %d: earliest hold %+v, scheduled at %+v (in schedule: %v)", i, top, sh.due, sh.dueAt != 0)
	}
}

// checkBigRecord checks what the bigIndex b of big lock name says of its
// record id, which follows record prev in the lock's list (0: id is the
// first): its fence names it, its back link names prev, and b's bound of
// deadlines is not above its deadline.
func checkBigRecord(fail func(string, ...any), sh *shard, b *bigIndex, name string, id, prev uint32) {
	h := sh.hold(id)
	if got := b.fences[h.key.Fence]; got != id {
		fail("lock %q: fence %d indexed as record %d, is record %d", name, h.key.Fence, got, id)
	}
	if got, ok := b.prev[id]; prev == 0 && ok {
		fail("lock %q: first record %d has a back link to %d", name, id, got)
	} else if prev != 0 && got != prev {
		fail("lock %q: record %d's back link is %d, the record before it %d", name, id, got, prev)
	}
	if d := sh.deadline(id); d != 0 && d < b.due {
		fail("lock %q: record %d's deadline %d is below the lock's bound %d", name, id, d, b.due)
	}
}

// checkFree fails unless the records of r below its high-water mark are
// live (by live) exactly when listed in want, and its free list holds
// exactly the others, each once.
func checkFree[T any](fail func(string, ...any), what string, r *records[T], want map[uint32]bool, live func(*T) bool) {
	free := make(map[uint32]bool)
	for id := r.free; id != 0; id = *(*uint32)(unsafe.Pointer(r.at(id))) {
		if free[id] || want[id] {
			fail("%s: record %d on the free list twice or while in use", what, id)
			return
		}
		free[id] = true
	}
	for id := uint32(1); id < r.used; id++ {
		if live(r.at(id)) != want[id] && !free[id] {
			fail("%s: record %d is live=%v, in use=%v", what, id, live(r.at(id)), want[id])
		}
		if !want[id] && !free[id] {
			fail("%s: record %d neither in use nor free (leaked)", what, id)
		}
	}
}
