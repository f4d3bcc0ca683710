package locktable

import "sync"

// Session is the table's view of one client connection: the holds bound to
// it (released when it closes) and the one request it may be waiting on.
// Create it with NewSession and end it with CloseSession.
type Session struct {
	// ID identifies the session in listings (LOCKS client-id) and events.
	ID uint64
	// Conn is opaque to the table: the caller's handle for the connection,
	// carried back in Grant.Session so that grants can be delivered.
	Conn any

	// mu guards the fields below. Taken after a shard mutex, never before.
	mu sync.Mutex
	// slot numbers the session in its table's sessions (0: none yet), for
	// the records of the holds bound to it; it stays until CloseSession.
	slot    uint32
	head    hid     // bound holds, an intrusive list through holdRec.snext/sprev
	bound   int     // number of bound holds
	waiting *waiter // the queued request, if any
	closed  bool
}

// NewSession returns a new open session with the given id. Ids are the
// caller's to choose; the table does not require them to be unique, but
// listings are clearer when they are.
func (t *Table) NewSession(id uint64, conn any) *Session {
	return &Session{ID: id, Conn: conn}
}

// waitHolds is what s's wait counts against Config.MaxHoldsPerSession:
// the bound holds its grant may add, one per name; nothing for a detached
// request, which the bound does not cover, nor for an upgrade (its hold
// counts already). Caller holds s.mu.
func (s *Session) waitHolds() int {
	w := s.waiting
	switch {
	case w == nil || w.req.Detach || w.upgrade != 0:
		return 0
	case w.multi != nil:
		return len(w.multi.legs)
	}
	return 1
}

// Bound returns the number of holds bound to the session.
func (s *Session) Bound() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bound
}

// Waiting reports whether the session has a queued request.
func (s *Session) Waiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting != nil
}

// link binds hold h to s. Caller holds h's shard mutex and s.mu.
func (s *Session) link(t *Table, h hid) {
	if s.slot == 0 {
		s.slot = t.sessions.add(s)
	}
	r := t.hold(h)
	r.session = s.slot
	r.sprev = 0
	r.snext = s.head
	if s.head != 0 {
		t.hold(s.head).sprev = h
	}
	s.head = h
	s.bound++
}

// unlink removes hold h from s's list if it is still there. Caller holds
// h's shard mutex and not s.mu.
func (s *Session) unlink(t *Table, h hid) {
	s.mu.Lock()
	r := t.hold(h)
	if r.sprev != 0 || s.head == h {
		if r.sprev != 0 {
			t.hold(r.sprev).snext = r.snext
		} else {
			s.head = r.snext
		}
		if r.snext != 0 {
			t.hold(r.snext).sprev = r.sprev
		}
		s.bound--
	}
	r.snext, r.sprev = 0, 0
	s.mu.Unlock()
}

// CloseSession ends s: its queued request leaves the queue (and is never
// granted), and every hold bound to it is released with ReasonDisconnect,
// granting waiters as capacity frees (a hold with a lock-delay frees its
// capacity only when the delay ends). Detached holds are untouched.
// Closing a closed session does nothing.
func (t *Table) CloseSession(ev *Events, s *Session, now int64) {
	t.CloseSessionFor(ev, s, ReasonDisconnect, now)
}

// CloseSessionFor is CloseSession releasing with reason why
// (ReasonDisconnect, ReasonKilled or ReasonReset; a RESET starts no
// lock-delay).
func (t *Table) CloseSessionFor(ev *Events, s *Session, why Reason, now int64) {
	t.endSession(ev, s, now, func(sh *shard, id uint32) {
		sh.release(t, ev, id, "", why, now)
	})
	t.settle(ev, now)
}

// endSession marks s closed, takes its queued request out of the queue
// (granting, with ev, the requests it kept waiting; see cancelWaiter) and
// runs each on every hold still bound to s (newest first), in the
// critical section of the hold's shard, then gives back s's slot. A closed
// session is left alone.
func (t *Table) endSession(ev *Events, s *Session, now int64, each func(sh *shard, id uint32)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	var holds []hid
	s.closed = true
	w := s.waiting
	for h := s.head; h != 0; h = t.hold(h).snext {
		holds = append(holds, h)
	}
	slot := s.slot
	s.mu.Unlock()

	if w != nil && w.multi != nil {
		t.cancelMulti(ev, w.multi, now)
	} else if w != nil {
		sh := w.sh
		sh.mu.Lock()
		// The waiter may have been granted or cancelled meanwhile;
		// cancelWaiter checks that it is still queued.
		sh.cancelWaiter(t, ev, w, now)
		sh.mu.Unlock()
	}
	for _, h := range holds {
		sh, id := t.holdAt(h)
		sh.mu.Lock()
		// Not released meanwhile: a record freed since is free or, reused,
		// bound to another session (s, closed, binds nothing new).
		if r := sh.hold(id); r.lock != 0 && r.session == slot {
			each(sh, id)
		}
		sh.mu.Unlock()
	}
	// Every hold that named the slot is gone, and s binds no more.
	if slot != 0 {
		s.mu.Lock()
		s.slot = 0
		s.mu.Unlock()
		t.sessions.remove(slot)
	}
}
