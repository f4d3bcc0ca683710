package locktable

// waiter is one queued request. It belongs to exactly one lock (which never
// changes, and lives while the waiter is queued) and one session; its
// fields are guarded by the lock's shard mutex.
type waiter struct {
	sh       *shard
	lock     uint32 // the lock's record in sh
	bucket   uint16 // the lock's bucket (Table.bucketOf)
	session  *Session
	req      Request
	enqueued int64
	// upgrade is, for a waiting Table.Upgrade, the shared hold (its record
	// in sh) that is to become exclusive; 0: an ordinary request. Only
	// req.Name and req.Rand (the new key's) of its req are set. It is
	// always its queue's head, and removed when that hold ends.
	upgrade uint32
	// multi is, for a leg of a multi-lock (Table.AcquireMulti), the
	// request it is one leg of; nil: a single request. It is immutable.
	multi *multiWait
	// owner is the waiter's participant when it is an owner (SPEC §8.5):
	// the request's Owner, or an upgrade's hold's; "": its session.
	owner      string
	queued     bool
	prev, next *waiter
	// oprev/onext link a waiter with an owner into Table.ownerWaits;
	// guarded by its mutex.
	oprev, onext *waiter
}

// waitQueue is a FIFO of waiters with O(1) removal from anywhere.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) push(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	w.queued = true
	q.n++
}

// pushFront queues w ahead of every waiter (an upgrade).
func (q *waitQueue) pushFront(w *waiter) {
	w.prev, w.next = nil, q.head
	if q.head != nil {
		q.head.prev = w
	} else {
		q.tail = w
	}
	q.head = w
	w.queued = true
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if !w.queued {
		return
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	q.n--
}

// enqueue queues w on lock lid: at the tail, or at the head for an
// upgrade. The caller makes it its session's wait (Session.waiting; a
// multi-lock's first leg). Caller holds sh.mu and the session's mutex.
func (sh *shard) enqueue(lid uint32, w *waiter) {
	q := sh.queues[lid]
	if q == nil {
		q = &waitQueue{}
		sh.queues[lid] = q
	}
	if w.upgrade != 0 {
		q.pushFront(w)
	} else {
		q.push(w)
	}
	sh.waiters++
	if w.owner != "" {
		sh.ownerWaits.add(w)
	}
}

// upgradeWaiter returns lock lid's waiting upgrade, or nil. Caller holds
// sh.mu.
func (sh *shard) upgradeWaiter(lid uint32) *waiter {
	if q := sh.queues[lid]; q != nil && q.head.upgrade != 0 {
		return q.head
	}
	return nil
}

// dropUpgrade takes w, a waiting upgrade whose hold has ended or is about
// to (see grantWaiters), out of its queue and tells its session, unless
// closed, with a Lost grant. The caller grants the waiters behind it if
// they may fit now, and deletes the lock if it is left empty. Caller holds
// sh.mu.
func (sh *shard) dropUpgrade(ev *Events, w *waiter, name string) {
	sh.dequeue(w)
	s := w.session
	s.mu.Lock()
	if s.waiting == w {
		s.waiting = nil
	}
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		ev.Grants = append(ev.Grants, Grant{Session: s, Name: name, Lost: true})
	}
}

// dequeue takes w, which is queued, out of its lock's queue, and the
// queue out of sh.queues once empty. Caller holds sh.mu.
func (sh *shard) dequeue(w *waiter) {
	q := sh.queues[w.lock]
	q.remove(w)
	if q.n == 0 {
		delete(sh.queues, w.lock)
	}
	sh.waiters--
	if w.owner != "" {
		sh.ownerWaits.remove(w)
	}
}

// cancelWaiter removes w from its queue if it is still queued and clears the
// session's wait. It reports whether w was queued. With ev, it then grants
// the waiters that w kept waiting (a shared request behind an exclusive
// or upgrading one that left may fit now); with ev nil it grants nothing,
// and they wait for the lock's next change. Caller holds sh.mu.
func (sh *shard) cancelWaiter(t *Table, ev *Events, w *waiter, now int64) bool {
	if !w.queued {
		return false
	}
	sh.dequeue(w)
	w.session.mu.Lock()
	if w.session.waiting == w {
		w.session.waiting = nil
	}
	w.session.mu.Unlock()
	if ev != nil && sh.queues[w.lock] != nil {
		sh.grantWaiters(t, ev, w.lock, sh.name(w.lock), now)
	}
	sh.dropIfEmpty(w.lock)
	return true
}

// CancelWait is CancelWaitAt without events: it grants nothing. A request
// the cancelled one kept waiting (a shared request behind it, SPEC §8.3)
// then waits for the lock's next change, though it may fit now.
//
// Deprecated: use CancelWaitAt, which grants such requests at once.
func (t *Table) CancelWait(s *Session) bool {
	return t.cancelWait(nil, s, 0)
}

// CancelWaitAt takes s's queued request (or waiting upgrade, which keeps
// its shared hold) out of its queue, and grants, in ev, the requests
// behind it that fit once it is gone: shared requests behind an exclusive
// request or an upgrade. It reports false if s had none, which after a
// wait timeout means the request was granted in the meantime (or, for an
// upgrade, lost): the Grant is in the Events of whoever freed capacity.
func (t *Table) CancelWaitAt(ev *Events, s *Session, now int64) bool {
	return t.cancelWait(ev, s, now)
}

func (t *Table) cancelWait(ev *Events, s *Session, now int64) bool {
	s.mu.Lock()
	w := s.waiting
	s.mu.Unlock()
	if w == nil {
		return false
	}
	if w.multi != nil {
		ok := t.cancelMulti(ev, w.multi, now)
		t.settle(ev, now)
		return ok
	}
	sh := w.sh
	sh.mu.Lock()
	ok := sh.cancelWaiter(t, ev, w, now)
	sh.mu.Unlock()
	t.settle(ev, now)
	return ok
}

// fits reports whether a request of the given mode fits lock lid's holds
// and slots in lock-delay: an exclusive one while they are fewer than the
// lock's size, a shared one on a size-1 lock whose records are all shared
// (an exclusive record is its lock's only one, so the first tells). The
// queue is the caller's to consider. Caller holds sh.mu.
func (sh *shard) fits(lid uint32, isShared bool) bool {
	l := sh.lock(lid)
	if isShared {
		return l.size == 1 && (l.first == 0 || sh.hold(l.first).is(shared))
	}
	return l.nholds < l.size
}

// waiterFits reports whether w, queued on lock lid, fits the lock's holds:
// an upgrade when its hold is the lock's only record.
func (sh *shard) waiterFits(lid uint32, w *waiter) bool {
	if w.upgrade != 0 {
		l := sh.lock(lid)
		return l.nholds == 1 && l.first == w.upgrade
	}
	return sh.fits(lid, w.req.Shared)
}

// grantWaiters grants queued requests of lock lid (named name) from the
// head of its queue, in FIFO order, while the head fits (waiterFits): the
// consecutive shared requests at the head together, an exclusive one or
// an upgrade alone, and nothing behind a head that does not fit (writers
// never starve). A waiter whose session has closed is dropped, never
// granted. An upgrade whose hold is doomed — past its deadline, or bound
// to a closed session, whose holds are being released — is lost rather
// than granted a key that would be released right after. A new hold needs
// room in its bucket: a release frees one, but one release may grant
// several shared requests, and a downgrade frees none; when the bucket is
// full the rest wait for the lock's next change (never ErrTableFull).
// Caller holds sh.mu.
func (sh *shard) grantWaiters(t *Table, ev *Events, lid uint32, name string, now int64) {
	for {
		q := sh.queues[lid]
		if q == nil {
			return
		}
		w := q.head
		if w.multi != nil {
			// A multi-lock is granted on all its locks at once, which
			// takes all their shards: Table.settle does it once this
			// operation lets go of sh. Nothing behind it goes first.
			if sh.legFits(lid, w) {
				t.toSettle(w.multi)
			}
			return
		}
		if !sh.waiterFits(lid, w) {
			return
		}
		s := w.session
		if w.upgrade != 0 && sh.doomed(t, w.upgrade, now) {
			sh.dropUpgrade(ev, w, name)
			continue
		}
		if w.upgrade == 0 && t.bucketFull(sh, w.bucket) {
			return
		}
		sh.dequeue(w)
		s.mu.Lock()
		if s.waiting == w {
			s.waiting = nil
		}
		if s.closed {
			s.mu.Unlock()
			continue
		}
		if w.upgrade != 0 {
			id := w.upgrade
			sh.upgradeHold(t, id, name, w.req.Rand)
			s.mu.Unlock()
			h := sh.hold(id)
			ev.Grants = append(ev.Grants, Grant{Session: s, Name: name, Key: h.key, TTL: h.ttl, Deadline: sh.deadline(id), Upgrade: true})
			continue
		}
		id := sh.newHold(t, lid, w.bucket, w.req, now)
		if !w.req.Detach {
			s.link(t, sh.base|hid(id))
		}
		s.mu.Unlock()
		h := sh.hold(id)
		ev.Grants = append(ev.Grants, Grant{Session: s, Name: name, Key: h.key, TTL: h.ttl, Deadline: sh.deadline(id)})
	}
}
