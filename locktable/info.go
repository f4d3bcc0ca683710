package locktable

import (
	"sort"
	"strconv"
	"strings"
	"unsafe"
)

// HoldInfo describes a hold without its key.
type HoldInfo struct {
	Fence     uint64
	Owner     string
	SessionID int64 // -1: detached or orphaned
	TTL       int64 // remaining ns; -1: none
	Age       int64 // ns since grant
	Detached  bool
	Orphan    bool
	Count     uint32
}

// WaiterInfo describes a queued request, in queue order.
type WaiterInfo struct {
	SessionID int64
	Owner     string
	Waited    int64 // ns since enqueued
}

// LockInfo describes one lock. Keys are never part of it.
type LockInfo struct {
	Name    string
	Size    uint32
	Holds   []HoldInfo
	Waiters []WaiterInfo
}

// Query selects locks for Locks.
type Query struct {
	Match func(name string) bool // nil: all; it must not keep name
	After string                 // only names greater than After
	Count int                    // at most Count locks (≤ 0: no bound)
}

// Locks returns the locks selected by q, sorted by name. Each lock is read
// consistently; the list is not a snapshot across shards.
func (t *Table) Locks(q Query, now int64) []LockInfo {
	var names []string
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.index.each(func(lid uint32) {
			// A view of the arena, copied only if selected.
			b := sh.nameBytes(lid)
			name := unsafe.String(unsafe.SliceData(b), len(b))
			if name > q.After && (q.Match == nil || q.Match(name)) {
				names = append(names, strings.Clone(name))
			}
		})
		sh.mu.Unlock()
	}
	sort.Strings(names)
	if q.Count > 0 && len(names) > q.Count {
		names = names[:q.Count]
	}
	out := make([]LockInfo, 0, len(names))
	for _, name := range names {
		if li, ok := t.Lock(name, now); ok {
			out = append(out, li)
		}
	}
	return out
}

// Lock describes the lock name, if it exists.
func (t *Table) Lock(name string, now int64) (LockInfo, bool) {
	sh, hash := t.shardOf(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lid := sh.find(name, hash)
	if lid == 0 {
		return LockInfo{}, false
	}
	l := sh.lock(lid)
	li := LockInfo{Name: name, Size: l.size, Holds: make([]HoldInfo, 0, l.nholds)}
	for id := l.first; id != 0; id = sh.hold(id).next {
		h := sh.hold(id)
		hi := HoldInfo{
			Fence: h.key.Fence, Owner: sh.owner(id), SessionID: -1, TTL: -1,
			Age: now - h.granted, Detached: h.is(detached), Orphan: h.is(orphan), Count: h.count,
		}
		if h.session != 0 {
			hi.SessionID = int64(t.sessions.get(h.session).ID)
		}
		if d := sh.deadline(id); d != 0 {
			hi.TTL = max(d-now, 0)
		}
		li.Holds = append(li.Holds, hi)
	}
	if q := sh.queues[lid]; q != nil {
		for w := q.head; w != nil; w = w.next {
			li.Waiters = append(li.Waiters, WaiterInfo{
				SessionID: int64(w.session.ID), Owner: w.req.Owner, Waited: now - w.enqueued,
			})
		}
	}
	return li, true
}

// Dump renders the whole table state, keys included, in a canonical text
// form: equal states give equal dumps. It is for tests (determinism, model
// checks) and debugging, not for clients.
func (t *Table) Dump(now int64) string {
	var b strings.Builder
	for _, li := range t.Locks(Query{}, now) {
		sh, hash := t.shardOf(li.Name)
		sh.mu.Lock()
		lid := sh.find(li.Name, hash)
		if lid == 0 { // deleted since Locks listed it
			sh.mu.Unlock()
			continue
		}
		l := sh.lock(lid)
		b.WriteString(li.Name)
		b.WriteString(" size=")
		b.WriteString(strconv.FormatInt(int64(l.size), 10))
		for id := l.first; id != 0; id = sh.hold(id).next {
			h := sh.hold(id)
			b.WriteString(" hold{")
			b.WriteString(h.key.String())
			b.WriteString(" owner=" + sh.owner(id) + " count=" + strconv.FormatInt(int64(h.count), 10) +
				" deadline=" + strconv.FormatInt(sh.deadline(id), 10) + " ttl=" + strconv.FormatInt(h.ttl, 10))
			if h.session != 0 {
				b.WriteString(" session=" + strconv.FormatInt(int64(t.sessions.get(h.session).ID), 10))
			}
			if h.is(detached) {
				b.WriteString(" detached")
			}
			b.WriteString("}")
		}
		if q := sh.queues[lid]; q != nil {
			for w := q.head; w != nil; w = w.next {
				b.WriteString(" wait{session=" + strconv.FormatInt(int64(w.session.ID), 10) + " owner=" + w.req.Owner + "}")
			}
		}
		b.WriteString("\n")
		sh.mu.Unlock()
	}
	b.WriteString("fence=" + strconv.FormatUint(t.fence.Load(), 10) + "\n")
	return b.String()
}
