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
	mu      sync.Mutex
	head    *Hold   // bound holds, an intrusive list through Hold.snext/sprev
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

// link binds h to s. Caller holds h's shard mutex and s.mu.
func (s *Session) link(h *Hold) {
	h.session = s
	h.sprev = nil
	h.snext = s.head
	if s.head != nil {
		s.head.sprev = h
	}
	s.head = h
	s.bound++
}

// unlink removes h from s's list if it is still there. Caller holds h's
// shard mutex and not s.mu.
func (s *Session) unlink(h *Hold) {
	s.mu.Lock()
	if h.sprev != nil || s.head == h {
		if h.sprev != nil {
			h.sprev.snext = h.snext
		} else {
			s.head = h.snext
		}
		if h.snext != nil {
			h.snext.sprev = h.sprev
		}
		s.bound--
	}
	h.snext, h.sprev = nil, nil
	s.mu.Unlock()
}

// CloseSession ends s: its queued request leaves the queue (and is never
// granted), and every hold bound to it is released with ReasonDisconnect,
// granting waiters as capacity frees. Detached holds are untouched.
// Closing a closed session does nothing.
func (t *Table) CloseSession(ev *Events, s *Session, now int64) {
	t.endSession(s, func(sh *shard, h *Hold) {
		sh.release(t, ev, h, ReasonDisconnect, now)
	})
}

// endSession marks s closed, takes its queued request out of the queue and
// runs each on every hold still bound to s (newest first), in the
// critical section of the hold's shard. A closed session is left alone.
func (t *Table) endSession(s *Session, each func(sh *shard, h *Hold)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	var holds []*Hold
	s.closed = true
	w := s.waiting
	for h := s.head; h != nil; h = h.snext {
		holds = append(holds, h)
	}
	s.mu.Unlock()

	if w != nil {
		sh := w.lock.shard
		sh.mu.Lock()
		// The waiter may have been granted or cancelled meanwhile;
		// cancelWaiter checks that it is still queued.
		sh.cancelWaiter(w)
		sh.mu.Unlock()
	}
	for _, h := range holds {
		sh := h.sh
		sh.mu.Lock()
		if h.lock != nil && h.session == s { // not released meanwhile
			each(sh, h)
		}
		sh.mu.Unlock()
	}
}
