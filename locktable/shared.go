package locktable

// Shared and exclusive holds (SPEC §8.3).
//
// A hold is exclusive unless marked shared. Shared holds exist only on
// size-1 locks, where any number of them coexist (a lock's nholds may then
// exceed its size); an exclusive hold is its lock's only record, a shared
// slot in lock-delay included. So the first record of a size-1 lock tells
// its mode (shard.fits). One FIFO queue serves both modes: a request is
// granted at once only when it fits and nobody waits, and grantWaiters
// grants from the head while the head fits, so that a shared request
// behind a waiting exclusive one waits (writers never starve). A waiting
// upgrade heads its lock's queue, ahead of every request, and names the
// shared hold it is for (waiter.upgrade); a lock has at most one.

// Upgrade makes k's shared hold of name exclusive, atomically: no other
// hold is ever granted in between. When the hold is its lock's only record
// (no other hold, no slot in lock-delay) it becomes exclusive at once: a
// new fence, above every fence granted before, and the key {fence, rnd},
// which it returns (Granted); the old key holds nothing any more. The hold
// keeps its binding (session, detached or orphan), owner, count, TTL,
// deadline and lock-delay.
//
// Otherwise s waits for it (Queued), ahead of every queued request, and
// the upgrade is granted, as a Grant with Upgrade set and the new key, in
// the Events of whoever frees the lock of the other holds and slots. If
// the hold ends first (UNLOCK, expiry, FORCEUNLOCK, its session closing),
// the upgrade is lost: a Grant with Lost set, and s waits no more.
// CancelWaitAt withdraws the upgrade and keeps the shared hold. The wait
// is s's one wait (ErrAlreadyWaiting, as with Acquire); it counts against
// neither Config.MaxWaiters nor Config.MaxHoldsPerSession (it is a hold
// already counted, changing its mode).
//
// Errors, in this order, and nothing changes: ErrSessionClosed;
// ErrNotHeld if k does not hold name; ErrNotShared if the hold is
// exclusive; ErrDeadlock if another upgrade of the lock waits (each would
// wait for the other's hold to end); ErrAlreadyWaiting; a *DeadlockError
// if another holder of the lock waits, along a chain, for a hold of the
// upgrade's participant (the hold's owner, else s; SPEC §8.5,
// deadlock.go).
func (t *Table) Upgrade(ev *Events, s *Session, name string, k Key, rnd uint64, now int64) (Key, Outcome, error) {
	return decide(t, ev, now, func(detect, settleFirst bool) (Key, Outcome, error, *waitStart) {
		return t.upgrade(ev, s, name, k, rnd, now, detect, settleFirst)
	})
}

// upgrade is Upgrade in the critical section of the name's shard; detect
// as in acquire.
func (t *Table) upgrade(ev *Events, s *Session, name string, k Key, rnd uint64, now int64, detect, settleFirst bool) (Key, Outcome, error, *waitStart) {
	sh, hash := t.shardOf(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lid := sh.expireLock(t, ev, sh.find(name, hash), name, now)
	if settleFirst && t.settling.n.Load() != 0 {
		return Key{}, 0, errSettleFirst, nil
	}

	// As in Acquire, s.mu after expireLock.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Key{}, 0, ErrSessionClosed, nil
	}
	id := sh.findHold(lid, k)
	if id == 0 {
		return Key{}, 0, ErrNotHeld, nil
	}
	if !sh.hold(id).is(shared) {
		return Key{}, 0, ErrNotShared, nil
	}
	if sh.lock(lid).nholds == 1 {
		nk := sh.upgradeHold(t, id, name, rnd)
		// A multi-lock leg of the hold's owner heading the queue may
		// re-enter the hold now that it is exclusive.
		sh.grantWaiters(t, ev, lid, name, now)
		return nk, Granted, nil, nil
	}
	if sh.upgradeWaiter(lid) != nil {
		return Key{}, 0, ErrDeadlock, nil
	}
	if s.waiting != nil {
		return Key{}, 0, ErrAlreadyWaiting, nil
	}
	owner := sh.owner(id)
	if detect {
		if edges := sh.holdEdges(t, lid, false, id, nil); len(edges) > 0 {
			return Key{}, 0, nil, &waitStart{who: participantOf(owner, s), edges: edges}
		}
	}
	w := &waiter{
		sh: sh, lock: lid, bucket: t.bucketOf(hash), session: s,
		req: Request{Name: name, Rand: rnd}, enqueued: now, upgrade: id, owner: owner,
	}
	sh.enqueue(lid, w)
	s.waiting = w
	sh.notify(NoticeContended, name, 0, 0, sh.queues[lid].n)
	return Key{}, Queued, nil, nil
}

// upgradeHold makes shared hold id, its lock's only record, exclusive
// under a new fence and the key {fence, rnd}, which it returns. To a
// durable store the old fence's record is gone and the new one's put; to
// watchers the old fence is released (ReasonUpgraded) and the new one
// acquired. Caller holds sh.mu.
func (sh *shard) upgradeHold(t *Table, id uint32, name string, rnd uint64) Key {
	h := sh.hold(id)
	old := h.key.Fence
	sh.journalDelete(name, old)
	h.key = Key{Fence: t.nextFence(), Rand: rnd}
	if b := sh.big[h.lock]; b != nil {
		delete(b.fences, old)
		b.fences[h.key.Fence] = id
	}
	h.set(shared, false)
	if h.heapPos != 0 {
		// The heap orders by (deadline, fence): the fence moved later.
		sh.setDeadline(id, sh.deadline(id))
	}
	sh.journalPut(id, name)
	sh.notify(NoticeReleased, name, old, ReasonUpgraded, 0)
	sh.notify(NoticeAcquired, name, h.key.Fence, 0, 0)
	return h.key
}

// doomed reports whether hold id is about to end: its deadline has passed
// (the next expiry releases it), or it is bound to a session that has
// closed (CloseSession is releasing its holds). Caller holds sh.mu and not
// the hold's session's mutex.
func (sh *shard) doomed(t *Table, id uint32, now int64) bool {
	if d := sh.deadline(id); d != 0 && d <= now {
		return true
	}
	h := sh.hold(id)
	if h.session == 0 {
		return false
	}
	s := t.sessions.get(h.session)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Downgrade makes k's exclusive hold of name shared, with the same key
// and fence, and grants at once, in ev, the shared requests at the head
// of the lock's queue (none if an exclusive request heads it). Watchers
// are told nothing: no hold began or ended.
//
// Errors, and nothing changes: ErrNotHeld if k does not hold name; a
// *SizeMismatchError (Have: the lock's size, Want: 1) if the lock is a
// semaphore (size > 1), whose holds cannot be shared, as a SHARED request
// on it cannot; ErrNotExclusive if the hold is shared already.
func (t *Table) Downgrade(ev *Events, name string, k Key, now int64) error {
	var err error
	if herr := t.withHold(ev, name, k, now, func(sh *shard, id uint32) {
		h := sh.hold(id)
		lid := h.lock
		if size := sh.lock(lid).size; size != 1 {
			err = &SizeMismatchError{Have: size, Want: 1}
			return
		}
		if h.is(shared) {
			err = ErrNotExclusive
			return
		}
		h.set(shared, true)
		sh.journalPut(id, name)
		sh.grantWaiters(t, ev, lid, name, now)
	}); herr != nil {
		return herr
	}
	return err
}
