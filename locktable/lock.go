package locktable

// lock is one named lock. It exists while it has holds or waiters; all its
// fields are guarded by its shard's mutex.
type lock struct {
	name    string
	shard   *shard // never changes
	size    uint32
	holds   []*Hold // in grant order
	waiters waitQueue
}

// Request is one acquisition request (LOCK or TRYLOCK).
type Request struct {
	Name   string
	TTL    int64  // hold TTL in ns; 0: none
	Size   uint32 // 0 means 1
	Owner  string // re-entrancy id; empty: none
	Detach bool   // the hold survives its session; needs a TTL
	// Rand is the random part of the key, should this request be granted.
	Rand uint64
}

// Outcome of Acquire.
type Outcome uint8

const (
	Granted Outcome = iota + 1 // the returned Key holds the lock
	Queued                     // the session waits; a Grant will follow
	Busy                       // no capacity and wait was false
)

// Acquire asks for req.Name on behalf of s. With capacity (or a hold with
// the same non-empty owner, which is re-entered) it grants at once and
// returns the key. Otherwise, if wait, s is queued behind earlier waiters
// (Queued); if not, nothing changes (Busy).
func (t *Table) Acquire(ev *Events, s *Session, req Request, now int64, wait bool) (Key, Outcome, error) {
	if req.Size == 0 {
		req.Size = 1
	}
	if req.Name == "" || req.TTL < 0 {
		return Key{}, 0, ErrBadRequest
	}
	if req.Detach && req.TTL == 0 {
		return Key{}, 0, ErrDetachNeedsTTL
	}
	sh := t.shardOf(req.Name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expireLock(t, ev, req.Name, now)

	// A closed session takes nothing, not even a re-entry. s.mu is taken
	// after expireLock, whose releases lock the sessions they unbind.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Key{}, 0, ErrSessionClosed
	}

	l := sh.locks[req.Name]
	if l != nil {
		if l.size != req.Size {
			return Key{}, 0, &SizeMismatchError{Have: l.size, Want: req.Size}
		}
		if req.Owner != "" {
			for _, h := range l.holds {
				if h.owner == req.Owner {
					if h.detached != req.Detach {
						return Key{}, 0, ErrDetachMismatch
					}
					h.count++
					sh.restartTTL(h, req.TTL, now)
					sh.journalPut(h)
					return h.key, Granted, nil
				}
			}
		}
	}

	canGrant := l == nil || (len(l.holds) < int(l.size) && l.waiters.n == 0)
	if !canGrant && !wait {
		return Key{}, Busy, nil
	}
	if s.waiting != nil && !canGrant {
		return Key{}, 0, ErrAlreadyWaiting
	}
	if max := t.cfg.MaxHoldsPerSession; max > 0 && !req.Detach {
		used := s.bound
		if s.waiting != nil {
			used++
		}
		if used >= max {
			return Key{}, 0, ErrTooManyHolds
		}
	}
	if !canGrant && t.cfg.MaxWaiters > 0 && l.waiters.n >= t.cfg.MaxWaiters {
		return Key{}, 0, ErrTooManyWaiters
	}
	if l == nil {
		l = &lock{name: req.Name, shard: sh, size: req.Size}
		sh.locks[req.Name] = l
	}
	if canGrant {
		h := sh.newHold(t, l, req, now)
		if !h.detached {
			s.link(h)
		}
		return h.key, Granted, nil
	}
	w := &waiter{lock: l, session: s, req: req, enqueued: now}
	l.waiters.push(w)
	sh.waiters++
	s.waiting = w
	return Key{}, Queued, nil
}

// newHold grants req on l. Caller holds sh.mu and checked capacity.
func (sh *shard) newHold(t *Table, l *lock, req Request, now int64) *Hold {
	h := &Hold{
		sh:       sh,
		lock:     l,
		key:      Key{Fence: t.nextFence(), Rand: req.Rand},
		owner:    req.Owner,
		count:    1,
		detached: req.Detach,
		granted:  now,
		heapIdx:  -1,
	}
	l.holds = append(l.holds, h)
	sh.holds++
	sh.restartTTL(h, req.TTL, now)
	sh.journalPut(h)
	return h
}

// restartTTL sets h's TTL duration to ttl if ttl > 0 and restarts its
// deadline from now. A hold without a TTL keeps none. Caller holds sh.mu.
func (sh *shard) restartTTL(h *Hold, ttl int64, now int64) {
	if ttl > 0 {
		h.ttl = ttl
	}
	if h.ttl == 0 {
		return
	}
	h.deadline = now + h.ttl
	sh.expiry.set(h)
}

// findHold returns the live hold of name with key k, or nil. Caller holds
// sh.mu and has run expireLock.
func (sh *shard) findHold(name string, k Key) *Hold {
	l := sh.locks[name]
	if l == nil {
		return nil
	}
	for _, h := range l.holds {
		if h.key == k {
			return h
		}
	}
	return nil
}

// release ends h with the given reason, whatever its count, and grants
// waiters the capacity it frees. Caller holds sh.mu.
func (sh *shard) release(t *Table, ev *Events, h *Hold, why Reason, now int64) {
	l := h.lock
	for i, x := range l.holds {
		if x == h {
			copy(l.holds[i:], l.holds[i+1:])
			l.holds[len(l.holds)-1] = nil
			l.holds = l.holds[:len(l.holds)-1]
			break
		}
	}
	sh.holds--
	sh.expiry.remove(h)
	var sid uint64
	if s := h.session; s != nil {
		sid = s.ID
		s.unlink(h)
		h.session = nil
	}
	h.lock = nil
	sh.journalDelete(l.name, h.key.Fence)
	ev.Releases = append(ev.Releases, Release{
		Name: l.name, Fence: h.key.Fence, Owner: h.owner, SessionID: sid,
		Reason: why, Held: now - h.granted,
	})
	sh.grantWaiters(t, ev, l, now)
	sh.dropIfEmpty(l)
}

// dropIfEmpty deletes l from the shard when it has neither holds nor
// waiters, so that its memory returns. Caller holds sh.mu.
func (sh *shard) dropIfEmpty(l *lock) {
	if len(l.holds) == 0 && l.waiters.n == 0 && sh.locks[l.name] == l {
		delete(sh.locks, l.name)
	}
}

// Unlock counts down the hold of name with key k and releases it when the
// count reaches zero. ErrNotHeld if k does not hold name.
func (t *Table) Unlock(ev *Events, name string, k Key, now int64) error {
	return t.withHold(ev, name, k, now, func(sh *shard, h *Hold) {
		if h.count > 1 {
			h.count--
			sh.journalPut(h)
			return
		}
		sh.release(t, ev, h, ReasonUnlock, now)
	})
}

// withHold runs fn on the hold of name with key k in the critical section
// of its shard, after expiring that lock's due holds. ErrNotHeld if k does
// not hold name (then fn does not run).
func (t *Table) withHold(ev *Events, name string, k Key, now int64, fn func(sh *shard, h *Hold)) error {
	sh := t.shardOf(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expireLock(t, ev, name, now)
	h := sh.findHold(name, k)
	if h == nil {
		return ErrNotHeld
	}
	fn(sh, h)
	return nil
}

// Renew restarts the TTL of the hold of name with key k: with ttl > 0 the
// hold's TTL duration becomes ttl; with ttl == 0 the current duration
// restarts. It returns the duration now in force (0: none). An orphaned hold
// is adopted by s (bound to it), and a detached hold stays detached. It
// never re-acquires: ErrNotHeld if k does not hold name.
func (t *Table) Renew(ev *Events, s *Session, name string, k Key, ttl int64, now int64) (int64, error) {
	if ttl < 0 {
		return 0, ErrBadRequest
	}
	var set int64
	err := t.withHold(ev, name, k, now, func(sh *shard, h *Hold) {
		if h.orphan && s != nil {
			s.mu.Lock()
			if !s.closed {
				h.orphan = false
				s.link(h)
				if h.ttl == 0 {
					h.deadline = 0
					sh.expiry.remove(h)
				}
			}
			s.mu.Unlock()
		}
		sh.restartTTL(h, ttl, now)
		sh.journalPut(h)
		set = h.ttl
	})
	return set, err
}

// Check returns the remaining TTL of the hold of name with key k in ns
// (-1: no TTL), or ErrNotHeld.
func (t *Table) Check(ev *Events, name string, k Key, now int64) (int64, error) {
	var left int64
	err := t.withHold(ev, name, k, now, func(sh *shard, h *Hold) {
		left = -1
		if h.deadline != 0 {
			left = h.deadline - now
		}
	})
	return left, err
}

// ForceUnlock releases every hold of name (a re-entered hold counts once)
// and grants waiters. It returns the number of holds released.
func (t *Table) ForceUnlock(ev *Events, name string, now int64) int {
	sh := t.shardOf(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expireLock(t, ev, name, now)
	l := sh.locks[name]
	if l == nil {
		return 0
	}
	n := len(l.holds)
	victims := append([]*Hold(nil), l.holds...)
	for _, h := range victims {
		// Each release grants the capacity it frees to the next waiter;
		// holds granted that way are not among the victims.
		if h.lock != nil {
			sh.release(t, ev, h, ReasonForced, now)
		}
	}
	return n
}
