package locktable

// heapEntry is a hold in its shard's deadline heap. The deadline lives
// here rather than in the hold so that holds without one do not pay for it.
type heapEntry struct {
	deadline int64
	hold     uint32
}

// deadlineHeap is a binary min-heap of holds by (deadline, fence), one per
// shard, so that expiry costs O(log n) per hold and nothing while nothing
// is due. Each hold in it knows its position (holdRec.heapPos), so its
// methods are the shard's.
type deadlineHeap struct {
	chunked[heapEntry]
	n uint32
}

// deadline returns hold id's expiry time (0: none).
func (sh *shard) deadline(id uint32) int64 {
	if p := sh.hold(id).heapPos; p != 0 {
		return sh.expiry.at(p - 1).deadline
	}
	return 0
}

func (sh *shard) heapLess(i, j uint32) bool {
	a, b := sh.expiry.at(i), sh.expiry.at(j)
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return sh.hold(a.hold).key.Fence < sh.hold(b.hold).key.Fence
}

func (sh *shard) heapSwap(i, j uint32) {
	a, b := sh.expiry.at(i), sh.expiry.at(j)
	*a, *b = *b, *a
	sh.hold(a.hold).heapPos = i + 1
	sh.hold(b.hold).heapPos = j + 1
}

func (sh *shard) heapUp(j uint32) {
	for j > 0 {
		i := (j - 1) / 2
		if !sh.heapLess(j, i) {
			break
		}
		sh.heapSwap(i, j)
		j = i
	}
}

func (sh *shard) heapDown(i uint32) bool {
	i0 := i
	n := sh.expiry.n
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && sh.heapLess(r, j) {
			j = r
		}
		if !sh.heapLess(j, i) {
			break
		}
		sh.heapSwap(i, j)
		i = j
	}
	return i > i0
}

// setDeadline gives hold id the deadline d > 0, inserting it into the heap
// or moving it there.
func (sh *shard) setDeadline(id uint32, d int64) {
	h := sh.hold(id)
	if h.heapPos == 0 {
		q := &sh.expiry
		if q.n == q.cap {
			q.grow(sh.mem)
		}
		*q.at(q.n) = heapEntry{deadline: d, hold: id}
		q.n++
		h.heapPos = q.n
		sh.heapUp(q.n - 1)
		return
	}
	i := h.heapPos - 1
	sh.expiry.at(i).deadline = d
	if !sh.heapDown(i) {
		sh.heapUp(i)
	}
}

// clearDeadline takes hold id out of the heap if it is there.
func (sh *shard) clearDeadline(id uint32) {
	h := sh.hold(id)
	if h.heapPos == 0 {
		return
	}
	i, last := h.heapPos-1, sh.expiry.n-1
	if i != last {
		sh.heapSwap(i, last)
	}
	sh.expiry.n--
	h.heapPos = 0
	if i != last && !sh.heapDown(i) {
		sh.heapUp(i)
	}
}

// expireLock releases the holds of lock lid (named name; 0: none) whose
// deadline is at or before now, earliest (deadline, fence) first, and
// returns lid, or 0 if the lock is gone. Every operation on a lock calls it
// first, so a hold past its deadline is never seen as held, whether or not
// the caller's expiry timer has fired yet. It touches only that lock, so
// results never depend on which names share a shard. Caller holds sh.mu.
func (sh *shard) expireLock(t *Table, ev *Events, lid uint32, name string, now int64) uint32 {
	for lid != 0 {
		var due uint32
		for id := sh.lock(lid).first; id != 0; id = sh.hold(id).next {
			if d := sh.deadline(id); d != 0 && d <= now && (due == 0 || earlier(sh, id, sh, due)) {
				due = id
			}
		}
		if due == 0 {
			return lid
		}
		sh.release(t, ev, due, name, ReasonExpired, now)
		// Releases create no locks, so a freed record is this one dropped.
		if sh.lock(lid).size == 0 {
			return 0
		}
	}
	return 0
}

// Expire releases every hold whose deadline is at or before now, earliest
// (deadline, fence) first across the whole table, granting waiters, and
// returns the earliest deadline still pending (0: none). It holds every
// shard mutex (taken in index order; nothing else holds two) so that the
// order, and so the fences of the grants it makes, do not depend on the
// number of shards. Callers drive it from one timer; the table has none.
func (t *Table) Expire(ev *Events, now int64) int64 {
	for i := range t.shards {
		t.shards[i].mu.Lock()
	}
	defer func() {
		for i := range t.shards {
			t.shards[i].mu.Unlock()
		}
	}()
	for {
		var due *shard
		var dueID uint32
		for i := range t.shards {
			sh := &t.shards[i]
			if sh.expiry.n == 0 {
				continue
			}
			top := sh.expiry.at(0)
			if top.deadline > now {
				continue
			}
			if due == nil || earlier(sh, top.hold, due, dueID) {
				due, dueID = sh, top.hold
			}
		}
		if due == nil {
			break
		}
		due.release(t, ev, dueID, "", ReasonExpired, now)
	}
	var next int64
	for i := range t.shards {
		sh := &t.shards[i]
		if sh.expiry.n > 0 {
			if d := sh.expiry.at(0).deadline; next == 0 || d < next {
				next = d
			}
		}
	}
	return next
}

// earlier orders hold a of shard sa and hold b of shard sb by (deadline,
// fence); both have deadlines.
func earlier(sa *shard, a uint32, sb *shard, b uint32) bool {
	da, db := sa.deadline(a), sb.deadline(b)
	if da != db {
		return da < db
	}
	return sa.hold(a).key.Fence < sb.hold(b).key.Fence // deterministic tie-break
}
