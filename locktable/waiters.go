package locktable

// waiter is one queued request. It belongs to exactly one lock (which never
// changes, and lives while the waiter is queued) and one session; its
// fields are guarded by the lock's shard mutex.
type waiter struct {
	sh         *shard
	lock       uint32 // the lock's record in sh
	bucket     uint16 // the lock's bucket (Table.bucketOf)
	session    *Session
	req        Request
	enqueued   int64
	queued     bool
	prev, next *waiter
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

// enqueue queues w on lock lid, as its session's wait. Caller holds sh.mu
// and the session's mutex.
func (sh *shard) enqueue(lid uint32, w *waiter) {
	q := sh.queues[lid]
	if q == nil {
		q = &waitQueue{}
		sh.queues[lid] = q
	}
	q.push(w)
	sh.waiters++
	w.session.waiting = w
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
}

// cancelWaiter removes w from its queue if it is still queued and clears the
// session's wait. It reports whether w was queued. Caller holds sh.mu.
func (sh *shard) cancelWaiter(w *waiter) bool {
	if !w.queued {
		return false
	}
	sh.dequeue(w)
	w.session.mu.Lock()
	if w.session.waiting == w {
		w.session.waiting = nil
	}
	w.session.mu.Unlock()
	sh.dropIfEmpty(w.lock)
	return true
}

// CancelWait takes s's queued request out of its queue. It reports false if
// s had none, which after a wait timeout means the request was granted in
// the meantime: the Grant is in the Events of whoever freed capacity.
func (t *Table) CancelWait(s *Session) bool {
	s.mu.Lock()
	w := s.waiting
	s.mu.Unlock()
	if w == nil {
		return false
	}
	sh := w.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.cancelWaiter(w)
}

// grantWaiters grants queued requests of lock lid (named name) in FIFO
// order while it has capacity. A waiter whose session has closed is
// dropped, never granted. Caller holds sh.mu.
func (sh *shard) grantWaiters(t *Table, ev *Events, lid uint32, name string, now int64) {
	l := sh.lock(lid)
	for l.nholds < l.size {
		q := sh.queues[lid]
		if q == nil {
			return
		}
		w := q.head
		sh.dequeue(w)
		s := w.session
		s.mu.Lock()
		if s.waiting == w {
			s.waiting = nil
		}
		if s.closed {
			s.mu.Unlock()
			continue
		}
		// The hold just released freed a place in this bucket, and a
		// release grants at most one waiter per hold it ends (a queue
		// exists only while the lock is full): never ErrTableFull here.
		id := sh.newHold(t, lid, w.bucket, w.req, now)
		if !w.req.Detach {
			s.link(t, sh.base|hid(id))
		}
		s.mu.Unlock()
		h := sh.hold(id)
		ev.Grants = append(ev.Grants, Grant{Session: s, Name: name, Key: h.key, TTL: h.ttl, Deadline: sh.deadline(id)})
	}
}
