package locktable

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
)

// State is a table's whole state — sessions, holds (with their session
// binding) and waiters in queue order — for replication snapshots. Taken
// with State and loaded with LoadState, it gives a table that answers every
// later operation exactly as the original would (the Raft FSM contract).
type State struct {
	Fence    uint64         // the last fence issued
	Sessions []SessionState // by ID
	Locks    []LockState    // by name
}

// SessionState is an open session: its ID and its bound holds, newest
// first (the order CloseSession releases them in).
type SessionState struct {
	ID     uint64
	Fences []uint64
}

// LockState is one lock with its holds (and slots in lock-delay, marked
// Delayed) in grant order and waiters in queue order.
type LockState struct {
	Name    string
	Size    uint32
	Holds   []HoldState
	Waiters []WaiterState
}

// HoldState is a hold: its record plus what a record leaves out.
type HoldState struct {
	HoldRecord
	SessionID uint64 // 0: detached or orphaned
	Orphan    bool
}

// WaiterState is a queued request, or a waiting upgrade (Table.Upgrade).
type WaiterState struct {
	SessionID uint64
	// Request is the queued request; of an upgrade, only its Name and its
	// Rand (the new key's) are set.
	Request  Request
	Enqueued int64
	// Upgrade is, for a waiting upgrade, the fence of the shared hold it
	// is for, a hold of the same lock; 0: an ordinary request. An upgrade
	// is its lock's first waiter.
	Upgrade uint64 `json:",omitempty"`
	// Multi is, for a leg of a waiting multi-lock (Table.AcquireMulti),
	// the names of all its legs in request order (its own among them);
	// each of those locks lists a leg of the session with the same
	// options. nil: a single request.
	Multi []string `json:",omitempty"`
}

// State returns the table's state. It holds every shard mutex at once
// (taken in index order), so the state is consistent across shards; open
// sessions are those that hold something or wait, plus extra, which the
// caller names (sessions with nothing are otherwise invisible to the
// table).
func (t *Table) State(extra []*Session) State {
	for i := range t.shards {
		t.shards[i].mu.Lock()
	}
	defer func() {
		for i := range t.shards {
			t.shards[i].mu.Unlock()
		}
	}()
	st := State{Fence: t.fence.Load()}
	n := 0
	for i := range t.shards {
		n += t.shards[i].index.n
	}
	st.Locks = make([]LockState, 0, n)
	sessions := map[uint64]*Session{}
	for _, s := range extra {
		sessions[s.ID] = s
	}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.index.each(func(lid uint32) {
			ls := LockState{Name: sh.name(lid), Size: sh.lock(lid).size}
			for id := sh.lock(lid).first; id != 0; id = sh.hold(id).next {
				h := sh.hold(id)
				hs := HoldState{HoldRecord: sh.record(id, ls.Name), Orphan: h.is(orphan)}
				if h.session != 0 {
					s := t.sessions.get(h.session)
					hs.SessionID = s.ID
					sessions[s.ID] = s
				}
				ls.Holds = append(ls.Holds, hs)
			}
			if q := sh.queues[lid]; q != nil {
				for w := q.head; w != nil; w = w.next {
					ws := WaiterState{SessionID: w.session.ID, Request: w.req, Enqueued: w.enqueued}
					if w.upgrade != 0 {
						ws.Upgrade = sh.hold(w.upgrade).key.Fence
					}
					if w.multi != nil {
						ws.Multi = make([]string, len(w.multi.legs))
						for i, leg := range w.multi.legs {
							ws.Multi[i] = leg.req.Name
						}
					}
					ls.Waiters = append(ls.Waiters, ws)
					sessions[w.session.ID] = w.session
				}
			}
			st.Locks = append(st.Locks, ls)
		})
	}
	slices.SortFunc(st.Locks, func(a, b LockState) int { return strings.Compare(a.Name, b.Name) })
	for id, s := range sessions {
		s.mu.Lock()
		if !s.closed {
			ss := SessionState{ID: id}
			for h := s.head; h != 0; h = t.hold(h).snext {
				ss.Fences = append(ss.Fences, t.hold(h).key.Fence)
			}
			st.Sessions = append(st.Sessions, ss)
		}
		s.mu.Unlock()
	}
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].ID < st.Sessions[j].ID })
	return st
}

// LoadState fills an empty table with st and returns its sessions by ID
// (conn gives each its Conn). It checks what it loads: a hold or waiter
// naming a session st does not list, a session listing a hold bound to
// another, a lock over its size or listed twice, a hold that does not fit
// beside the lock's earlier ones (an exclusive hold beside another, a
// shared one on a semaphore), an exclusive request waiting at the head of
// a queue it fits, an upgrade that is not its lock's first waiter or does
// not name a shared hold of its lock is an error, and the table is then
// unusable.
func (t *Table) LoadState(st State, conn func(id uint64) any) (map[uint64]*Session, error) {
	for i := range t.shards {
		if t.shards[i].index.n != 0 {
			return nil, errors.New("locktable: LoadState needs an empty table")
		}
	}
	sessions := make(map[uint64]*Session, len(st.Sessions))
	for _, ss := range st.Sessions {
		var c any
		if conn != nil {
			c = conn(ss.ID)
		}
		sessions[ss.ID] = t.NewSession(ss.ID, c)
	}
	// boundTo is the session each bound hold names, until the sessions'
	// lists link them.
	boundTo := map[hid]*Session{}
	byFence := map[uint64]hid{}
	// multis are the multi-locks being put together, by session; each
	// leg goes to its place in legs as its lock is loaded.
	multis := map[*Session]*multiWait{}
	t.fence.Store(st.Fence)
	for _, ls := range st.Locks {
		sh, hash := t.shardOf(ls.Name)
		// A lock without holds exists only for a multi-lock waiting on it.
		if ls.Name == "" || ls.Size == 0 || (len(ls.Holds) == 0 && (len(ls.Waiters) == 0 || ls.Waiters[0].Multi == nil)) {
			return nil, fmt.Errorf("locktable: lock %q: bad size, holds or queue", ls.Name)
		}
		if sh.find(ls.Name, hash) != 0 {
			return nil, fmt.Errorf("locktable: lock %q twice", ls.Name)
		}
		bucket := t.bucketOf(hash)
		if sh.buckets[bucket]+uint32(len(ls.Holds)) > t.bucketCap {
			return nil, fmt.Errorf("locktable: lock %q: %w", ls.Name, ErrTableFull)
		}
		lid := sh.newLock(ls.Name, hash, ls.Size)
		for _, hs := range ls.Holds {
			if hs.LockDelay < 0 || hs.LockDelay > MaxLockDelay ||
				(hs.Delayed && (hs.SessionID != 0 || hs.Orphan || hs.Deadline == 0)) {
				return nil, fmt.Errorf("locktable: hold %d: bad lock-delay", hs.Key.Fence)
			}
			if !sh.fits(lid, hs.Shared) {
				return nil, fmt.Errorf("locktable: lock %q: hold %d does not fit beside the earlier ones (size %d, shared %v)", ls.Name, hs.Key.Fence, ls.Size, hs.Shared)
			}
			h := sh.base | hid(sh.loadHold(lid, bucket, hs, hs.Deadline))
			if hs.SessionID != 0 {
				s := sessions[hs.SessionID]
				if s == nil {
					return nil, fmt.Errorf("locktable: hold %d names unknown session %d", hs.Key.Fence, hs.SessionID)
				}
				boundTo[h] = s
			}
			if _, dup := byFence[hs.Key.Fence]; dup {
				return nil, fmt.Errorf("locktable: fence %d twice", hs.Key.Fence)
			}
			byFence[hs.Key.Fence] = h
		}
		for i, ws := range ls.Waiters {
			if ws.Request.LockDelay < 0 || ws.Request.LockDelay > MaxLockDelay || ws.Request.Name != ls.Name ||
				(ws.Request.Shared && ws.Request.Size > 1) {
				return nil, fmt.Errorf("locktable: waiter of session %d: bad request", ws.SessionID)
			}
			s := sessions[ws.SessionID]
			if s == nil || (s.waiting != nil && (ws.Multi == nil || multis[s] == nil)) {
				return nil, fmt.Errorf("locktable: waiter names unknown or busy session %d", ws.SessionID)
			}
			w := &waiter{sh: sh, lock: lid, bucket: bucket, session: s, req: ws.Request, enqueued: ws.Enqueued, owner: ws.Request.Owner}
			if ws.Multi != nil {
				if err := t.loadLeg(multis, s, w, ws); err != nil {
					return nil, err
				}
			}
			switch {
			case ws.Multi != nil:
				// A leg may head a queue it fits: its siblings wait.
			case ws.Upgrade != 0:
				h, ok := byFence[ws.Upgrade]
				hsh, id := t.holdAt(h)
				if i != 0 || !ok || hsh != sh || sh.hold(id).lock != lid || !sh.hold(id).is(shared) || sh.hold(id).is(delayed) {
					return nil, fmt.Errorf("locktable: lock %q: upgrade of session %d is not first or names no shared hold of it", ls.Name, ws.SessionID)
				}
				w.upgrade = id
				w.owner = sh.owner(id)
			case ws.Request.Shared && ls.Size != 1:
				return nil, fmt.Errorf("locktable: lock %q: shared waiter of session %d on a semaphore", ls.Name, ws.SessionID)
			case i == 0 && !ws.Request.Shared && sh.fits(lid, false):
				return nil, fmt.Errorf("locktable: lock %q: session %d waits for capacity the lock has", ls.Name, ws.SessionID)
			}
			sh.enqueue(lid, w)
			if s.waiting == nil {
				s.waiting = w
			}
		}
	}
	for s, m := range multis {
		for i, w := range m.legs {
			if w == nil {
				return nil, fmt.Errorf("locktable: multi-lock of session %d lacks its leg on %q", s.ID, m.legs[0].req.Name)
			}
			if i > 0 && w.req.Name == m.legs[0].req.Name {
				return nil, fmt.Errorf("locktable: multi-lock of session %d names %q twice", s.ID, w.req.Name)
			}
			m.shards = append(m.shards, w.sh)
		}
		slices.SortFunc(m.shards, func(a, b *shard) int { return int(a.idx) - int(b.idx) })
		m.shards = slices.Compact(m.shards)
		s.waiting = m.legs[0]
	}
	// Rebuild each session's list in its saved order (newest first), by
	// linking oldest first.
	for _, ss := range st.Sessions {
		s := sessions[ss.ID]
		for i := len(ss.Fences) - 1; i >= 0; i-- {
			h, ok := byFence[ss.Fences[i]]
			if !ok || boundTo[h] != s || t.hold(h).session != 0 {
				return nil, fmt.Errorf("locktable: session %d lists hold %d it does not have", ss.ID, ss.Fences[i])
			}
			s.link(t, h)
		}
	}
	// Reading records after t's last use would let t's cleanup unmap them
	// first, were the caller to drop t (other methods use the shard after
	// its records, to unlock it).
	defer runtime.KeepAlive(t)
	for h, s := range boundTo {
		if t.hold(h).session == 0 {
			return nil, fmt.Errorf("locktable: hold %d is bound to session %d, which does not list it", t.hold(h).key.Fence, s.ID)
		}
	}
	return sessions, nil
}

// loadLeg puts w, a leg of the multi-lock ws describes, in its place in
// the multi-lock of s being loaded, checking it against the legs loaded
// before it.
func (t *Table) loadLeg(multis map[*Session]*multiWait, s *Session, w *waiter, ws WaiterState) error {
	bad := func(what string) error {
		return fmt.Errorf("locktable: leg %q of the multi-lock of session %d: %s", ws.Request.Name, s.ID, what)
	}
	i := slices.Index(ws.Multi, ws.Request.Name)
	if i < 0 || ws.Upgrade != 0 || ws.Request.Size > 1 {
		return bad("not one of its names, an upgrade or a semaphore's")
	}
	m := multis[s]
	if m == nil {
		m = &multiWait{legs: make([]*waiter, len(ws.Multi))}
		multis[s] = m
	}
	if len(m.legs) != len(ws.Multi) || m.legs[i] != nil {
		return bad("names differ from its other legs', or twice")
	}
	for j, o := range m.legs {
		if o == nil {
			continue
		}
		a, b := o.req, ws.Request
		if o.req.Name != ws.Multi[j] || a.TTL != b.TTL || a.Owner != b.Owner || a.Detach != b.Detach ||
			a.Shared != b.Shared || a.LockDelay != b.LockDelay || o.enqueued != ws.Enqueued {
			return bad("options differ from its other legs'")
		}
	}
	w.multi = m
	m.legs[i] = w
	return nil
}

// OrphanSession ends s as if its server had stopped rather than its client
// disconnected (a Raft leader lost): its queued request leaves the queue,
// its bound holds become orphans whose deadline is now+grace (or their own,
// if sooner), to be adopted by the first Renew with their key, and s is
// closed. Waiters are not granted anything by this, not even a shared
// request that s's request kept waiting (it waits for the lock's next
// change): a failover orphans every session of the old leader, whose
// waiters would only be granted holds nobody could use.
func (t *Table) OrphanSession(ev *Events, s *Session, now, grace int64) {
	t.endSession(nil, s, now, func(sh *shard, id uint32) {
		s.unlink(t, sh.base|hid(id))
		h := sh.hold(id)
		h.session = 0
		h.set(orphan, true)
		if d := now + grace; sh.deadline(id) == 0 || d < sh.deadline(id) {
			sh.setDeadline(id, d)
		}
		sh.journalPut(id, "")
	})
}
