package locktable

import (
	"strconv"
	"strings"
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
	Shared    bool // a shared hold; false: exclusive
}

// WaiterInfo describes a queued request, in queue order.
type WaiterInfo struct {
	SessionID int64
	Owner     string // the request's; of an upgrade, its hold's
	Waited    int64  // ns since enqueued
	Shared    bool   // a shared request; false: exclusive (or an upgrade)
	// Upgrade: a waiting upgrade of a shared hold (Table.Upgrade), which
	// waits for exclusive mode ahead of every request: always listed
	// first.
	Upgrade bool
	// Multi is, for a leg of a waiting multi-lock (Table.AcquireMulti),
	// the number of its names (it waits on each of their queues); 0 for
	// a single request.
	Multi int
}

// LockInfo describes one lock. Keys are never part of it.
type LockInfo struct {
	Name    string
	Size    uint32
	Holds   []HoldInfo // the holds, not the slots in lock-delay
	Waiters []WaiterInfo
	// Delayed is the number of the lock's slots in lock-delay: capacity
	// that holds ended involuntarily keep taken (Request.LockDelay).
	Delayed int
	// MoreHolds and MoreWaiters count the holds and waiters past
	// Query.List that Holds and Waiters leave out (0 without a List).
	MoreHolds, MoreWaiters int
}

// Query selects locks for Locks and LocksPage.
type Query struct {
	Match  func(name string) bool // nil: all; it must not keep name
	Prefix string                 // only names that start with Prefix
	After  string                 // only names greater than After
	Count  int                    // at most Count locks (≤ 0: no bound)
	// Budget bounds the names LocksPage examines (≤ 0: no bound): every
	// name greater than After that starts with Prefix counts, whether
	// Match takes it or not. Locks ignores it.
	Budget int
	// Work bounds the work LocksPage does (≤ 0: no bound), in units of
	// about a nanosecond (see WorkOfName, WorkOfListed), so that a call
	// costs about as long whatever the names, the Match or the locks' holds
	// and waiters: names are not all alike, a glob against a long name
	// costs O(len(pattern)·len(name)), and a lock may have many holds. A
	// call examines at least one name. Locks ignores it.
	Work int
	// MatchCost is what Match costs per byte of a name, in work units: for
	// a glob, its length (globs run in O(len(pattern)·len(name))).
	MatchCost int
	// List bounds the holds, and the waiters, listed per lock (≤ 0: all);
	// the others are counted in LockInfo.MoreHolds and MoreWaiters.
	List int
}

// Work units (about a nanosecond each) that LocksPage counts against
// Query.Work.
const (
	// WorkOfName is the cost of examining a name, besides its bytes
	// (each costs 1 + Query.MatchCost): a seek in its shard's order, a
	// lookup, a merge step.
	WorkOfName = 256
	// WorkOfListed is the cost of describing a hold or waiter that the
	// lock's LockInfo lists, and of the caller's encoding it;
	// WorkOfSkipped of one it only counts.
	WorkOfListed  = 512
	WorkOfSkipped = 8
)

// Page is one page of locks.
type Page struct {
	Locks []LockInfo
	// Resume is set when the page ended because it had examined
	// Query.Budget names or done Query.Work before it found Count locks,
	// and more names may remain: every name up to Resume has been examined, and a query
	// alike but with After = Resume goes on where this one stopped. It is
	// "" when the page is complete: Count locks, or no more to find.
	Resume string
}

// Locks returns the locks selected by q, sorted by name: LocksPage
// without a budget of names or work.
func (t *Table) Locks(q Query, now int64) []LockInfo {
	q.Budget, q.Work = 0, 0
	return t.LocksPage(q, now).Locks
}

// LocksPage returns the locks selected by q, sorted by name, examining at
// most q.Budget names and doing about q.Work (see Page.Resume). Each lock
// is read consistently; the page is not a snapshot across shards.
//
// It merges the shards' name orders: it seeks every shard once (O(shards ×
// log locks), one shard mutex at a time), then reads the names in order,
// each costing O(log locks + log shards), and only the names past After
// with the Prefix: a page costs nothing for the locks before or after it.
// Without a Prefix, a Match that takes few names makes a page read many;
// Budget and Work bound that. Work counts a name's bytes and its Match
// (q.MatchCost per byte) and the holds and waiters of the locks found, so
// a call's cost is bounded by q.Work plus one name's and one lock's (at
// most q.List holds and waiters described, the others only counted).
func (t *Table) LocksPage(q Query, now int64) Page {
	var page Page
	var next nameCursors
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		if name, ok := sh.nextName(q.Prefix, q.After); ok {
			next.push(nameCursor{sh, name})
		}
		sh.mu.Unlock()
	}
	var last string // the last name examined
	work := 0
	for examined := 0; len(next) > 0; examined++ {
		if q.Count > 0 && len(page.Locks) == q.Count {
			break
		}
		if examined > 0 && (q.Budget > 0 && examined >= q.Budget || q.Work > 0 && work >= q.Work) {
			page.Resume = last
			break
		}
		cur := next.pop()
		last = cur.name
		work += WorkOfName + len(cur.name)
		sh := cur.sh
		sh.mu.Lock()
		if lid := sh.find(cur.name, hashName(cur.name)); lid != 0 {
			matched := true
			if q.Match != nil {
				work += len(cur.name) * max(q.MatchCost, 0)
				matched = q.Match(cur.name)
			}
			if matched {
				li := sh.infoList(t, lid, cur.name, now, q.List)
				listed := len(li.Holds) + len(li.Waiters)
				work += WorkOfListed*listed + WorkOfSkipped*(li.MoreHolds+li.MoreWaiters+li.Delayed)
				page.Locks = append(page.Locks, li)
			}
		}
		if name, ok := sh.nextName(q.Prefix, cur.name); ok {
			next.push(nameCursor{sh, name})
		}
		sh.mu.Unlock()
	}
	return page
}

// nextName returns the least name in sh greater than after that starts
// with prefix, if there is one. Caller holds sh.mu.
func (sh *shard) nextName(prefix, after string) (string, bool) {
	var id uint32
	if prefix > after {
		id = sh.order.seek(sh, prefix, true)
	} else {
		id = sh.order.seek(sh, after, false)
	}
	if id == 0 || !hasPrefix(sh, id, prefix) {
		return "", false
	}
	return sh.name(id), true
}

// nameCursor is a shard's least name not yet examined by a LocksPage.
type nameCursor struct {
	sh   *shard
	name string
}

// nameCursors is a binary min-heap of cursors by name.
type nameCursors []nameCursor

func (c *nameCursors) push(x nameCursor) {
	*c = append(*c, x)
	h := *c
	for j := len(h) - 1; j > 0; {
		i := (j - 1) / 2
		if h[i].name <= h[j].name {
			break
		}
		h[i], h[j] = h[j], h[i]
		j = i
	}
}

func (c *nameCursors) pop() nameCursor {
	h := *c
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = nameCursor{}
	h = h[:last]
	for i := 0; ; {
		j := 2*i + 1
		if j >= len(h) {
			break
		}
		if r := j + 1; r < len(h) && h[r].name < h[j].name {
			j = r
		}
		if h[i].name <= h[j].name {
			break
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
	*c = h
	return top
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
	return sh.info(t, lid, name, now), true
}

// info describes lock lid, named name. Caller holds sh.mu.
func (sh *shard) info(t *Table, lid uint32, name string, now int64) LockInfo {
	return sh.infoList(t, lid, name, now, 0)
}

// infoList is info listing at most list holds and list waiters (≤ 0:
// all), counting the others. Caller holds sh.mu.
func (sh *shard) infoList(t *Table, lid uint32, name string, now int64, list int) LockInfo {
	l := sh.lock(lid)
	n := int(l.nholds)
	if list > 0 {
		n = min(n, list)
	}
	li := LockInfo{Name: name, Size: l.size, Holds: make([]HoldInfo, 0, n)}
	for id := l.first; id != 0; id = sh.hold(id).next {
		h := sh.hold(id)
		if h.is(delayed) {
			li.Delayed++
			continue
		}
		if list > 0 && len(li.Holds) == list {
			li.MoreHolds++
			continue
		}
		hi := HoldInfo{
			Fence: h.key.Fence, Owner: sh.owner(id), SessionID: -1, TTL: -1,
			Age: now - h.granted, Detached: h.is(detached), Orphan: h.is(orphan), Count: h.count,
			Shared: h.is(shared),
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
			if list > 0 && len(li.Waiters) == list {
				li.MoreWaiters++
				continue
			}
			wi := WaiterInfo{
				SessionID: int64(w.session.ID), Owner: w.req.Owner, Waited: now - w.enqueued,
				Shared: w.req.Shared, Upgrade: w.upgrade != 0,
			}
			if w.multi != nil {
				wi.Multi = len(w.multi.legs)
			}
			if w.upgrade != 0 {
				wi.Owner = sh.owner(w.upgrade)
			}
			li.Waiters = append(li.Waiters, wi)
		}
	}
	return li
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
			if h.is(delayed) {
				b.WriteString(" delayed{" + h.key.String() + " deadline=" + strconv.FormatInt(sh.deadline(id), 10))
				if h.is(shared) {
					b.WriteString(" shared")
				}
				b.WriteString("}")
				continue
			}
			b.WriteString(" hold{")
			b.WriteString(h.key.String())
			b.WriteString(" owner=" + sh.owner(id) + " count=" + strconv.FormatInt(int64(h.count), 10) +
				" deadline=" + strconv.FormatInt(sh.deadline(id), 10) + " ttl=" + strconv.FormatInt(h.ttl, 10))
			if d := sh.delayOf(id); d != 0 {
				b.WriteString(" delay=" + strconv.FormatInt(d, 10))
			}
			if h.session != 0 {
				b.WriteString(" session=" + strconv.FormatInt(int64(t.sessions.get(h.session).ID), 10))
			}
			if h.is(detached) {
				b.WriteString(" detached")
			}
			if h.is(shared) {
				b.WriteString(" shared")
			}
			b.WriteString("}")
		}
		if q := sh.queues[lid]; q != nil {
			for w := q.head; w != nil; w = w.next {
				b.WriteString(" wait{session=" + strconv.FormatInt(int64(w.session.ID), 10) + " owner=" + w.req.Owner)
				if w.req.Shared {
					b.WriteString(" shared")
				}
				if w.upgrade != 0 {
					b.WriteString(" upgrade=" + sh.hold(w.upgrade).key.String())
				}
				if w.multi != nil {
					b.WriteString(" multi=")
					for i, leg := range w.multi.legs {
						if i > 0 {
							b.WriteString(",")
						}
						b.WriteString(leg.req.Name)
					}
				}
				b.WriteString("}")
			}
		}
		b.WriteString("\n")
		sh.mu.Unlock()
	}
	b.WriteString("fence=" + strconv.FormatUint(t.fence.Load(), 10) + "\n")
	return b.String()
}
