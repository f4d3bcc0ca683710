package locktable

// deadlineHeap is a binary min-heap of holds by deadline, one per shard, so
// that expiry costs O(log n) per hold and nothing while nothing is due.
type deadlineHeap []*Hold

func (q deadlineHeap) less(i, j int) bool {
	if q[i].deadline != q[j].deadline {
		return q[i].deadline < q[j].deadline
	}
	return q[i].key.Fence < q[j].key.Fence // deterministic tie-break
}

func (q deadlineHeap) swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].heapIdx = int32(i)
	q[j].heapIdx = int32(j)
}

func (q deadlineHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !q.less(j, i) {
			break
		}
		q.swap(i, j)
		j = i
	}
}

func (q deadlineHeap) down(i int) bool {
	i0 := i
	n := len(q)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && q.less(r, j) {
			j = r
		}
		if !q.less(j, i) {
			break
		}
		q.swap(i, j)
		i = j
	}
	return i > i0
}

// set inserts h or moves it to its new deadline.
func (q *deadlineHeap) set(h *Hold) {
	if h.heapIdx < 0 {
		h.heapIdx = int32(len(*q))
		*q = append(*q, h)
		q.up(int(h.heapIdx))
		return
	}
	i := int(h.heapIdx)
	if !q.down(i) {
		q.up(i)
	}
}

// remove takes h out of the heap if it is there.
func (q *deadlineHeap) remove(h *Hold) {
	i := int(h.heapIdx)
	if i < 0 {
		return
	}
	old := *q
	n := len(old) - 1
	if i != n {
		old.swap(i, n)
	}
	old[n] = nil
	*q = old[:n]
	if i != n {
		if !q.down(i) {
			q.up(i)
		}
	}
	h.heapIdx = -1
}

// expireLock releases the holds of lock name whose deadline is at or
// before now, earliest (deadline, fence) first. Every operation on a lock
// calls it first, so a hold past its deadline is never seen as held,
// whether or not the caller's expiry timer has fired yet. It touches only
// that lock, so results never depend on which names share a shard.
// Caller holds sh.mu.
func (sh *shard) expireLock(t *Table, ev *Events, name string, now int64) {
	l := sh.locks[name]
	for l != nil && len(l.holds) > 0 {
		var due *Hold
		for _, h := range l.holds {
			if h.deadline != 0 && h.deadline <= now && (due == nil || earlier(h, due)) {
				due = h
			}
		}
		if due == nil {
			return
		}
		sh.release(t, ev, due, ReasonExpired, now)
	}
}

// earlier orders holds by (deadline, fence).
func earlier(a, b *Hold) bool {
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return a.key.Fence < b.key.Fence
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
		var due *Hold
		for i := range t.shards {
			if q := t.shards[i].expiry; len(q) > 0 && q[0].deadline <= now && (due == nil || earlier(q[0], due)) {
				due = q[0]
			}
		}
		if due == nil {
			break
		}
		due.sh.release(t, ev, due, ReasonExpired, now)
	}
	var next int64
	for i := range t.shards {
		if q := t.shards[i].expiry; len(q) > 0 && (next == 0 || q[0].deadline < next) {
			next = q[0].deadline
		}
	}
	return next
}
