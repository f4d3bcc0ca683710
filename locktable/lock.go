package locktable

import (
	"math"
	"unsafe"
)

// lockRec is one named lock: a pointer-free record in its shard's off-heap
// store. It exists while it has holds or waiters; its fields are guarded by
// its shard's mutex. A record is free when size is 0.
type lockRec struct {
	// nameOff is the name's offset in the shard's arena; 0: the name is in
	// shard.longNames (longer than maxArenaName, or the arena was full).
	nameOff uint32
	nameLen uint32
	size    uint32
	first   uint32 // first hold in grant order, linked through next; 0: none
	// nholds counts the records in the lock's list: its holds and its
	// slots in lock-delay, which take capacity alike.
	nholds uint32
	// A lock with many records has more in shard.big (see bigLock): 20
	// bytes are what every lock pays.
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
	// LockDelay is the hold's lock-delay in ns (0: none; at most
	// MaxLockDelay): when the hold ends involuntarily (ReasonDisconnect,
	// ReasonKilled, ReasonExpired), its capacity stays taken that long
	// after, as a slot in lock-delay that no key holds. It is fixed by
	// the request that grants the hold; a re-entry does not change it.
	LockDelay int64 `json:",omitempty"`
	// Shared asks for a shared hold (SPEC §8.3): shared holds of a lock
	// coexist, an exclusive one (Shared false) excludes every other hold.
	// Only a size-1 lock has shared holds: Size must be 0 or 1
	// (ErrBadRequest), and the lock, if it exists, of size 1
	// (*SizeMismatchError).
	Shared bool `json:",omitempty"`
}

// MaxLockDelay is the largest Request.LockDelay: 60 s, in ns.
const MaxLockDelay = 60_000_000_000

// Outcome of Acquire.
type Outcome uint8

const (
	Granted Outcome = iota + 1 // the returned Key holds the lock
	Queued                     // the session waits; a Grant will follow
	Busy                       // no capacity and wait was false
)

func (sh *shard) lock(id uint32) *lockRec { return sh.locks.at(id) }

func (sh *shard) hold(id uint32) *holdRec { return sh.holds.at(id) }

// nameBytes returns lock id's name, in the arena: read it under sh.mu and
// do not keep it.
func (sh *shard) nameBytes(id uint32) []byte {
	l := sh.lock(id)
	if l.nameOff == 0 {
		s := sh.longNames[id]
		return unsafe.Slice(unsafe.StringData(s), len(s))
	}
	return sh.names.block(l.nameOff, int(l.nameLen))
}

// name returns lock id's name as a string of its own.
func (sh *shard) name(id uint32) string { return string(sh.nameBytes(id)) }

// find returns the lock named name (hash h), or 0.
func (sh *shard) find(name string, h uint64) uint32 { return sh.index.lookup(sh, name, h) }

// newLock creates the lock name (hash h), which does not exist. A shard
// has fewer locks than holds (a lock without holds has no waiters either),
// so the bucket limits bound lock ids too.
func (sh *shard) newLock(name string, h uint64, size uint32) uint32 {
	id := sh.locks.alloc(sh.mem)
	l := sh.lock(id)
	l.size = size
	l.nameLen = uint32(len(name))
	if len(name) > maxArenaName || !sh.names.fits(len(name)) {
		sh.longNames[id] = name
	} else {
		l.nameOff = sh.names.alloc(sh.mem, name)
	}
	sh.index.insert(sh.mem, id, h, sh)
	sh.order.insert(sh, id)
	return id
}

// dropIfEmpty deletes lock id when it has neither holds, nor slots in
// lock-delay, nor waiters, so that its memory is reused. Caller holds
// sh.mu.
func (sh *shard) dropIfEmpty(id uint32) {
	l := sh.lock(id)
	if l.size == 0 || l.first != 0 || sh.queues[id] != nil {
		return
	}
	if sh.cfg.Notify != nil {
		sh.notify(NoticeFree, sh.name(id), 0, 0, 0)
	}
	sh.index.remove(sh.mem, sh.index.slotOf(id, hashName(sh.nameBytes(id))), sh)
	sh.order.delete(sh, id)
	if l.nameOff == 0 {
		delete(sh.longNames, id)
	} else {
		sh.names.release(l.nameOff, int(l.nameLen))
	}
	sh.locks.release(id)
}

// Acquire asks for req.Name on behalf of s. When the request fits the
// lock's holds (see Request.Shared) and nobody waits, or a hold with the
// same non-empty owner exists (it is re-entered, in its own mode only:
// ErrModeMismatch), it grants at once and returns the key. Otherwise, if
// wait, s is queued behind earlier waiters of either mode (Queued); if
// not, nothing changes (Busy). A request that would wait on a size-1 lock
// whose holders wait, along a chain, for a hold of the request's
// participant (its Owner, else s) fails with a *DeadlockError instead,
// and nothing changes (SPEC §8.5, deadlock.go).
func (t *Table) Acquire(ev *Events, s *Session, req Request, now int64, wait bool) (Key, Outcome, error) {
	return decide(t, ev, now, func(detect, settleFirst bool) (Key, Outcome, error, *waitStart) {
		return t.acquire(ev, s, req, now, wait, detect, settleFirst)
	})
}

// acquire is Acquire in the critical section of the name's shard. With
// detect, a request that would wait on holds is not queued: its edges come
// back for the deadlock walk, which runs without the mutex, and the
// caller calls again without detect.
func (t *Table) acquire(ev *Events, s *Session, req Request, now int64, wait, detect, settleFirst bool) (Key, Outcome, error, *waitStart) {
	if req.Size == 0 {
		req.Size = 1
	}
	if req.Name == "" || req.TTL < 0 || req.LockDelay < 0 || req.LockDelay > MaxLockDelay || (req.Shared && req.Size != 1) {
		return Key{}, 0, ErrBadRequest, nil
	}
	if req.Detach && req.TTL == 0 {
		return Key{}, 0, ErrDetachNeedsTTL, nil
	}
	sh, hash := t.shardOf(req.Name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lid := sh.expireLock(t, ev, sh.find(req.Name, hash), req.Name, now)
	if settleFirst && t.settling.n.Load() != 0 {
		return Key{}, 0, errSettleFirst, nil
	}

	// A closed session takes nothing, not even a re-entry. s.mu is taken
	// after expireLock, whose releases lock the sessions they unbind.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Key{}, 0, ErrSessionClosed, nil
	}

	var l *lockRec
	if lid != 0 {
		l = sh.lock(lid)
		if l.size != req.Size {
			return Key{}, 0, &SizeMismatchError{Have: l.size, Want: req.Size}, nil
		}
		if id := sh.ownedHold(lid, req.Owner); id != 0 {
			h := sh.hold(id)
			if h.is(shared) != req.Shared {
				return Key{}, 0, ErrModeMismatch, nil
			}
			if h.is(detached) != req.Detach {
				return Key{}, 0, ErrDetachMismatch, nil
			}
			if h.count == math.MaxUint32 {
				return Key{}, 0, ErrTooManyReentries, nil
			}
			h.count++
			sh.restartTTL(id, req.TTL, now)
			sh.journalPut(id, req.Name)
			return h.key, Granted, nil, nil
		}
	}

	canGrant := lid == 0 || (sh.fits(lid, req.Shared) && sh.queues[lid] == nil)
	if !canGrant && !wait {
		return Key{}, Busy, nil, nil
	}
	if s.waiting != nil && !canGrant {
		return Key{}, 0, ErrAlreadyWaiting, nil
	}
	if max := t.cfg.MaxHoldsPerSession; max > 0 && !req.Detach {
		if s.bound+s.waitHolds() >= max {
			return Key{}, 0, ErrTooManyHolds, nil
		}
	}
	if q := sh.queues[lid]; !canGrant && t.cfg.MaxWaiters > 0 && q != nil && q.n >= t.cfg.MaxWaiters {
		return Key{}, 0, ErrTooManyWaiters, nil
	}
	bucket := t.bucketOf(hash)
	if canGrant && t.bucketFull(sh, bucket) {
		return Key{}, 0, ErrTableFull, nil
	}
	if lid == 0 {
		lid = sh.newLock(req.Name, hash, req.Size)
	}
	if canGrant {
		id := sh.newHold(t, lid, bucket, req, now)
		if !req.Detach {
			s.link(t, sh.base|hid(id))
		}
		return sh.hold(id).key, Granted, nil, nil
	}
	if detect && lid != 0 {
		if edges := sh.holdEdges(t, lid, req.Shared, 0, nil); len(edges) > 0 {
			return Key{}, 0, nil, &waitStart{who: participantOf(req.Owner, s), edges: edges}
		}
	}
	w := &waiter{sh: sh, lock: lid, bucket: bucket, session: s, req: req, enqueued: now, owner: req.Owner}
	sh.enqueue(lid, w)
	s.waiting = w
	sh.notify(NoticeContended, req.Name, 0, 0, sh.queues[lid].n)
	return Key{}, Queued, nil, nil
}

// ownedHold returns the hold of lock lid whose owner is owner, or 0 (also
// for an empty owner, which re-enters nothing).
func (sh *shard) ownedHold(lid uint32, owner string) uint32 {
	if owner == "" {
		return 0
	}
	for id := sh.lock(lid).first; id != 0; id = sh.hold(id).next {
		if sh.hold(id).is(owned) && sh.owners[id] == owner {
			return id
		}
	}
	return 0
}

// newHold grants req on lock lid, of bucket b. Caller holds sh.mu and
// checked capacity, the lock's and the bucket's.
func (sh *shard) newHold(t *Table, lid uint32, b uint16, req Request, now int64) uint32 {
	id := sh.allocHold(b)
	h := sh.hold(id)
	h.key = Key{Fence: t.nextFence(), Rand: req.Rand}
	h.count = 1
	h.granted = now
	h.lock = lid
	h.set(detached, req.Detach)
	h.set(shared, req.Shared)
	if req.Owner != "" {
		h.set(owned, true)
		sh.owners[id] = req.Owner
	}
	if req.LockDelay > 0 {
		h.set(lockDelay, true)
		sh.delays[id] = req.LockDelay
	}
	sh.appendHold(lid, id)
	sh.restartTTL(id, req.TTL, now)
	sh.journalPut(id, req.Name)
	sh.notify(NoticeAcquired, req.Name, h.key.Fence, 0, 0)
	return id
}

// allocHold returns a zeroed hold record counted in bucket b, which has
// room (Table.bucketFull). Caller holds sh.mu.
func (sh *shard) allocHold(b uint16) uint32 {
	id := sh.holds.alloc(sh.mem)
	sh.hold(id).bucket = b
	sh.buckets[b]++
	return id
}

// freeHold gives back the record of hold id, which is out of its lock's
// list, the deadline heap, its session and shard.owners, and takes it out
// of its bucket's count and of shard.delays. Caller holds sh.mu.
func (sh *shard) freeHold(id uint32) {
	h := sh.hold(id)
	sh.buckets[h.bucket]--
	if h.is(lockDelay) {
		delete(sh.delays, id)
	}
	sh.holds.release(id)
}

// delayOf returns hold id's lock-delay (0: none).
func (sh *shard) delayOf(id uint32) int64 {
	if sh.hold(id).is(lockDelay) {
		return sh.delays[id]
	}
	return 0
}

// appendHold adds hold id, the newest, to lock lid's holds (or, marked
// delayed, its slots in lock-delay, as Restore and LoadState bring them
// back): in O(1) on a big lock (its bigIndex knows the last record), in
// O(records) < bigLock on another.
func (sh *shard) appendHold(lid, id uint32) {
	l := sh.lock(lid)
	h := sh.hold(id)
	b := sh.big[lid]
	if b != nil {
		if b.last == 0 {
			l.first = id
		} else {
			sh.hold(b.last).next = id
			b.prev[id] = b.last
		}
		b.last = id
		b.fences[h.key.Fence] = id
		if d := sh.deadline(id); d != 0 {
			b.due = min(b.due, d)
		}
	} else if l.first == 0 {
		l.first = id
	} else {
		last := l.first
		for sh.hold(last).next != 0 {
			last = sh.hold(last).next
		}
		sh.hold(last).next = id
	}
	l.nholds++
	if b == nil && l.nholds >= sh.bigLock() {
		sh.indexLock(lid)
	}
	if h.is(delayed) {
		sh.delayed++
		return
	}
	if g := h.granted; sh.nholds == 0 {
		sh.oldest, sh.oldestStale = g, false
	} else if g < sh.oldest {
		sh.oldest = g // a stale oldest stays stale: the rescan will see g
	}
	sh.nholds++
}

// bigLock is the number of records from which a lock is big: it keeps a
// bigIndex (shard.big) until it has fewer than half as many again. Maps
// cost more memory than the records, but acquiring, releasing, renewing
// or expiring one of thousands of shared holds must not walk them all;
// below bigLock, walking the list is cheaper than keeping an index.
const bigLock = 32

// bigLock returns the number of records from which a lock is big: bigLock
// but in tests (Config.bigLock).
func (sh *shard) bigLock() uint32 {
	if b := sh.cfg.bigLock; b != 0 {
		return b
	}
	return bigLock
}

// bigIndex is what a big lock (see bigLock) keeps beside its record, so
// that no operation on one of its records walks the others: the links and
// the bound that every lock would otherwise pay for in its records (the
// common lock has one hold).
type bigIndex struct {
	// fences are the lock's records by fence (findHold).
	fences map[uint64]uint32
	// prev is the record before each of the lock's records but the first,
	// by id (removeHold).
	prev map[uint32]uint32
	last uint32 // the lock's last record (appendHold)
	// due is a lower bound of the deadlines of the lock's records
	// (math.MaxInt64: none has one), so that expireLock costs nothing
	// while none of them can be due. setDeadline and appendHold lower it;
	// only dueHolds raises it, to a bound it has made sure of.
	due int64
}

// indexLock makes lock lid, which has just reached bigLock records, big:
// it builds its bigIndex in one walk of its list, which the records
// appended since it last was (at least bigLock/2 of them) pay for.
func (sh *shard) indexLock(lid uint32) {
	l := sh.lock(lid)
	b := &bigIndex{
		fences: make(map[uint64]uint32, l.nholds),
		prev:   make(map[uint32]uint32, l.nholds),
		due:    math.MaxInt64,
	}
	for id := l.first; id != 0; id = sh.hold(id).next {
		h := sh.hold(id)
		b.fences[h.key.Fence] = id
		if id != l.first {
			b.prev[id] = b.last
		}
		b.last = id
		if d := sh.deadline(id); d != 0 {
			b.due = min(b.due, d)
		}
	}
	sh.big[lid] = b
}

// removeHold takes hold (or slot in lock-delay) id out of its lock's list:
// in O(1) on a big lock, in O(records) < bigLock on another.
func (sh *shard) removeHold(id uint32) {
	h := sh.hold(id)
	lid := h.lock
	l := sh.lock(lid)
	b := sh.big[lid]
	if b != nil {
		p := b.prev[id] // 0: id is the first
		delete(b.prev, id)
		if p == 0 {
			l.first = h.next
		} else {
			sh.hold(p).next = h.next
		}
		switch {
		case h.next == 0:
			b.last = p
		case p == 0:
			delete(b.prev, h.next) // the new first
		default:
			b.prev[h.next] = p
		}
		delete(b.fences, h.key.Fence)
	} else if l.first == id {
		l.first = h.next
	} else {
		p := l.first
		for sh.hold(p).next != id {
			p = sh.hold(p).next
		}
		sh.hold(p).next = h.next
	}
	h.next = 0
	l.nholds--
	if b != nil && l.nholds < sh.bigLock()/2 {
		delete(sh.big, lid)
	}
	if h.is(delayed) {
		sh.delayed--
		return
	}
	sh.holdEnded(id)
}

// holdEnded counts hold id out of the shard's live holds.
func (sh *shard) holdEnded(id uint32) {
	if sh.hold(id).granted == sh.oldest {
		sh.oldestStale = true
	}
	sh.nholds--
}

// restartTTL sets hold id's TTL duration to ttl if ttl > 0 and restarts
// its deadline from now. A hold without a TTL keeps none. Caller holds
// sh.mu.
func (sh *shard) restartTTL(id uint32, ttl int64, now int64) {
	h := sh.hold(id)
	if ttl > 0 {
		h.ttl = ttl
	}
	if h.ttl == 0 {
		return
	}
	sh.setDeadline(id, now+h.ttl)
}

// findHold returns the live hold of lock lid with key k, or 0: a slot in
// lock-delay keeps its key for its fence, but the key holds nothing.
// Caller holds sh.mu and has run expireLock.
func (sh *shard) findHold(lid uint32, k Key) uint32 {
	if lid == 0 {
		return 0
	}
	if b := sh.big[lid]; b != nil {
		if id := b.fences[k.Fence]; id != 0 {
			if h := sh.hold(id); h.key == k && !h.is(delayed) {
				return id
			}
		}
		return 0
	}
	for id := sh.lock(lid).first; id != 0; id = sh.hold(id).next {
		if h := sh.hold(id); h.key == k && !h.is(delayed) {
			return id
		}
	}
	return 0
}

// release ends hold id with the given reason, whatever its count, and
// grants waiters the capacity it frees. A hold with a lock-delay that ends
// involuntarily (Reason.involuntary) frees nothing yet: it becomes a slot
// in lock-delay until now+delay (startDelay). id may also be such a slot,
// whose delay is over: then the slot ends (endDelay). A waiting upgrade of
// the hold is lost (dropUpgrade). name is its lock's name, or "" to read
// it from the arena. Caller holds sh.mu.
func (sh *shard) release(t *Table, ev *Events, id uint32, name string, why Reason, now int64) {
	h := sh.hold(id)
	lid := h.lock
	if name == "" {
		name = sh.name(lid)
	}
	if h.is(delayed) {
		sh.endDelay(t, ev, id, name, now)
		return
	}
	var sid uint64
	if h.session != 0 {
		s := t.sessions.get(h.session)
		sid = s.ID
		s.unlink(t, sh.base|hid(id))
		h.session = 0
	}
	var owner string
	if h.is(owned) {
		owner = sh.owners[id]
		delete(sh.owners, id)
		h.set(owned, false)
	}
	rel := Release{
		Name: name, Fence: h.key.Fence, Owner: owner, SessionID: sid,
		Reason: why, Held: now - h.granted,
	}
	if delay := sh.delayOf(id); delay > 0 && why.involuntary() {
		rel.DelayedUntil = now + delay
		sh.startDelay(id, rel.DelayedUntil)
		sh.journalPut(id, name)
		sh.notify(NoticeReleased, name, rel.Fence, why, 0)
		ev.Releases = append(ev.Releases, rel)
		if w := sh.upgradeWaiter(lid); w != nil && w.upgrade == id {
			// The slot frees nothing, but the lost upgrade no longer
			// heads the queue: the shared requests behind it may fit.
			sh.dropUpgrade(ev, w, name)
			sh.grantWaiters(t, ev, lid, name, now)
		}
		return
	}
	sh.removeHold(id)
	sh.clearDeadline(id)
	sh.journalDelete(name, rel.Fence)
	sh.notify(NoticeReleased, name, rel.Fence, why, 0)
	ev.Releases = append(ev.Releases, rel)
	if w := sh.upgradeWaiter(lid); w != nil && w.upgrade == id {
		sh.dropUpgrade(ev, w, name)
	}
	sh.freeHold(id)
	sh.grantWaiters(t, ev, lid, name, now)
	sh.dropIfEmpty(lid)
}

// startDelay turns hold id, which has just ended (no session, no owner
// left), into a slot in lock-delay until the deadline until: in place in
// its lock's list, so that it keeps the capacity, and in the deadline heap,
// so that expiry ends it like a TTL. Caller holds sh.mu.
func (sh *shard) startDelay(id uint32, until int64) {
	h := sh.hold(id)
	sh.holdEnded(id)
	h.flags = h.flags&(lockDelay|shared) | delayed
	h.ttl = 0
	sh.delayed++
	sh.setDeadline(id, until)
}

// endDelay ends slot id of lock-delay: its capacity goes to waiters, in
// FIFO order, and the lock is deleted if nothing else is left. name is
// its lock's name. Caller holds sh.mu.
func (sh *shard) endDelay(t *Table, ev *Events, id uint32, name string, now int64) {
	h := sh.hold(id)
	lid, fence := h.lock, h.key.Fence
	sh.removeHold(id)
	sh.clearDeadline(id)
	sh.journalDelete(name, fence)
	sh.freeHold(id)
	sh.grantWaiters(t, ev, lid, name, now)
	sh.dropIfEmpty(lid)
}

// Unlock counts down the hold of name with key k and releases it when the
// count reaches zero. ErrNotHeld if k does not hold name.
func (t *Table) Unlock(ev *Events, name string, k Key, now int64) error {
	return t.withHold(ev, name, k, now, func(sh *shard, id uint32) {
		if h := sh.hold(id); h.count > 1 {
			h.count--
			sh.journalPut(id, name)
			return
		}
		sh.release(t, ev, id, name, ReasonUnlock, now)
	})
}

// withHold runs fn on the hold of name with key k in the critical section
// of its shard, after expiring that lock's due holds. ErrNotHeld if k does
// not hold name (then fn does not run).
func (t *Table) withHold(ev *Events, name string, k Key, now int64, fn func(sh *shard, id uint32)) error {
	defer t.settle(ev, now) // after the unlock
	sh, hash := t.shardOf(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lid := sh.expireLock(t, ev, sh.find(name, hash), name, now)
	id := sh.findHold(lid, k)
	if id == 0 {
		return ErrNotHeld
	}
	fn(sh, id)
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
	err := t.withHold(ev, name, k, now, func(sh *shard, id uint32) {
		h := sh.hold(id)
		if h.is(orphan) && s != nil {
			s.mu.Lock()
			if !s.closed {
				h.set(orphan, false)
				s.link(t, sh.base|hid(id))
				if h.ttl == 0 {
					sh.clearDeadline(id)
				}
			}
			s.mu.Unlock()
		}
		sh.restartTTL(id, ttl, now)
		sh.journalPut(id, name)
		set = h.ttl
	})
	return set, err
}

// Check returns the remaining TTL of the hold of name with key k in ns
// (-1: no TTL), or ErrNotHeld. It is never more than the hold's TTL: a
// Check stamped before the renewal it is applied after (clocks read on
// two loops, or two ops of one Raft entry) sees the full TTL left.
func (t *Table) Check(ev *Events, name string, k Key, now int64) (int64, error) {
	var left int64
	err := t.withHold(ev, name, k, now, func(sh *shard, id uint32) {
		left = -1
		if d := sh.deadline(id); d != 0 {
			left = d - now
			if ttl := sh.hold(id).ttl; ttl > 0 && left > ttl {
				left = ttl
			}
		}
	})
	return left, err
}

// ForceUnlock releases every hold of name (a re-entered hold counts once),
// ends its slots in lock-delay (an admin wants the lock free now), and
// grants waiters. It returns the number of holds released, slots not
// counted.
func (t *Table) ForceUnlock(ev *Events, name string, now int64) int {
	defer t.settle(ev, now) // after the unlock
	sh, hash := t.shardOf(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lid := sh.expireLock(t, ev, sh.find(name, hash), name, now)
	if lid == 0 {
		return 0
	}
	// Each release grants the capacity it frees to the next waiter; holds
	// granted that way are not among the victims, which are the holds and
	// slots before the first release, all ended here in grant order. A
	// waiting upgrade is of a victim: it is lost first, so that the
	// releases never grant it midway.
	if w := sh.upgradeWaiter(lid); w != nil {
		sh.dropUpgrade(ev, w, name)
	}
	l := sh.lock(lid)
	victims := make([]uint32, 0, l.nholds)
	n := 0
	for id := l.first; id != 0; id = sh.hold(id).next {
		victims = append(victims, id)
		if !sh.hold(id).is(delayed) {
			n++
		}
	}
	for _, id := range victims {
		sh.release(t, ev, id, name, ReasonForced, now)
	}
	return n
}
