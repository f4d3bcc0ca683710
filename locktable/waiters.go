package locktable

// waiter is one queued request. It belongs to exactly one lock (which never
// changes) and one session; its fields are guarded by the lock's shard mutex.
type waiter struct {
	lock       *lock
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

// cancelWaiter removes w from its queue if it is still queued and clears the
// session's wait. It reports whether w was queued. Caller holds sh.mu.
func (sh *shard) cancelWaiter(w *waiter) bool {
	if !w.queued {
		return false
	}
	l := w.lock
	l.waiters.remove(w)
	sh.waiters--
	w.session.mu.Lock()
	if w.session.waiting == w {
		w.session.waiting = nil
	}
	w.session.mu.Unlock()
	sh.dropIfEmpty(l)
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
	sh := w.lock.shard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.cancelWaiter(w)
}

// grantWaiters grants queued requests of l in FIFO order while it has
// capacity. A waiter whose session has closed is dropped, never granted.
// Caller holds sh.mu.
func (sh *shard) grantWaiters(t *Table, ev *Events, l *lock, now int64) {
	for len(l.holds) < int(l.size) && l.waiters.head != nil {
		w := l.waiters.head
		l.waiters.remove(w)
		sh.waiters--
		s := w.session
		s.mu.Lock()
		if s.waiting == w {
			s.waiting = nil
		}
		if s.closed {
			s.mu.Unlock()
			continue
		}
		h := sh.newHold(t, l, w.req, now)
		if !h.detached {
			s.link(h)
		}
		s.mu.Unlock()
		ev.Grants = append(ev.Grants, Grant{Session: s, Name: l.name, Key: h.key, TTL: h.ttl, Deadline: h.deadline})
	}
}
