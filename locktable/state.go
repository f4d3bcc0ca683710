package locktable

import (
	"errors"
	"fmt"
	"sort"
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

// LockState is one lock with its holds in grant order and waiters in
// queue order.
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

// WaiterState is a queued request.
type WaiterState struct {
	SessionID uint64
	Request   Request
	Enqueued  int64
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
	sessions := map[uint64]*Session{}
	for _, s := range extra {
		sessions[s.ID] = s
	}
	for i := range t.shards {
		for _, l := range t.shards[i].locks {
			ls := LockState{Name: l.name, Size: l.size}
			for _, h := range l.holds {
				hs := HoldState{HoldRecord: h.record(), Orphan: h.orphan}
				if h.session != nil {
					hs.SessionID = h.session.ID
					sessions[h.session.ID] = h.session
				}
				ls.Holds = append(ls.Holds, hs)
			}
			for w := l.waiters.head; w != nil; w = w.next {
				ls.Waiters = append(ls.Waiters, WaiterState{SessionID: w.session.ID, Request: w.req, Enqueued: w.enqueued})
				sessions[w.session.ID] = w.session
			}
			st.Locks = append(st.Locks, ls)
		}
	}
	sort.Slice(st.Locks, func(i, j int) bool { return st.Locks[i].Name < st.Locks[j].Name })
	for id, s := range sessions {
		s.mu.Lock()
		if !s.closed {
			ss := SessionState{ID: id}
			for h := s.head; h != nil; h = h.snext {
				ss.Fences = append(ss.Fences, h.key.Fence)
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
// another, or a lock over its size is an error, and the table is then
// unusable.
func (t *Table) LoadState(st State, conn func(id uint64) any) (map[uint64]*Session, error) {
	for i := range t.shards {
		if len(t.shards[i].locks) != 0 {
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
	byFence := map[uint64]*Hold{}
	t.fence.Store(st.Fence)
	for _, ls := range st.Locks {
		sh := t.shardOf(ls.Name)
		if ls.Size == 0 || len(ls.Holds) > int(ls.Size) || (len(ls.Waiters) > 0 && len(ls.Holds) != int(ls.Size)) {
			return nil, fmt.Errorf("locktable: lock %q: bad size or queue", ls.Name)
		}
		l := &lock{name: ls.Name, shard: sh, size: ls.Size}
		sh.locks[ls.Name] = l
		for _, hs := range ls.Holds {
			h := &Hold{
				sh: sh, lock: l, key: hs.Key, owner: hs.Owner, count: hs.Count, detached: hs.Detached,
				orphan: hs.Orphan, granted: hs.Granted, ttl: hs.TTL, deadline: hs.Deadline, heapIdx: -1,
			}
			if hs.SessionID != 0 {
				s := sessions[hs.SessionID]
				if s == nil {
					return nil, fmt.Errorf("locktable: hold %d names unknown session %d", hs.Key.Fence, hs.SessionID)
				}
				h.session = s
			}
			if byFence[h.key.Fence] != nil {
				return nil, fmt.Errorf("locktable: fence %d twice", h.key.Fence)
			}
			byFence[h.key.Fence] = h
			l.holds = append(l.holds, h)
			sh.holds++
			if h.deadline != 0 {
				sh.expiry.set(h)
			}
		}
		for _, ws := range ls.Waiters {
			s := sessions[ws.SessionID]
			if s == nil || s.waiting != nil {
				return nil, fmt.Errorf("locktable: waiter names unknown or busy session %d", ws.SessionID)
			}
			w := &waiter{lock: l, session: s, req: ws.Request, enqueued: ws.Enqueued}
			l.waiters.push(w)
			sh.waiters++
			s.waiting = w
		}
	}
	// Rebuild each session's list in its saved order (newest first), by
	// linking oldest first.
	for _, ss := range st.Sessions {
		s := sessions[ss.ID]
		for i := len(ss.Fences) - 1; i >= 0; i-- {
			h := byFence[ss.Fences[i]]
			if h == nil || h.session != s {
				return nil, fmt.Errorf("locktable: session %d lists hold %d it does not have", ss.ID, ss.Fences[i])
			}
			s.link(h)
		}
	}
	for _, h := range byFence {
		if h.session != nil && !(h.sprev != nil || h.session.head == h) {
			return nil, fmt.Errorf("locktable: hold %d is bound to session %d, which does not list it", h.key.Fence, h.session.ID)
		}
	}
	return sessions, nil
}

// OrphanSession ends s as if its server had stopped rather than its client
// disconnected (a Raft leader lost): its queued request leaves the queue,
// its bound holds become orphans whose deadline is now+grace (or their own,
// if sooner), to be adopted by the first Renew with their key, and s is
// closed. Waiters are not granted anything by this.
func (t *Table) OrphanSession(ev *Events, s *Session, now, grace int64) {
	t.endSession(s, func(sh *shard, h *Hold) {
		s.unlink(h)
		h.session = nil
		h.orphan = true
		if d := now + grace; h.deadline == 0 || d < h.deadline {
			h.deadline = d
			sh.expiry.set(h)
		}
		sh.journalPut(h)
	})
}
