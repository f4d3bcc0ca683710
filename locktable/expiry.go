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

// expireDue releases every hold of the shard whose deadline is at or before
// now. Every operation calls it first, so a hold past its deadline is never
// seen as held, whether or not the caller's expiry timer has fired yet.
// Caller holds sh.mu.
func (sh *shard) expireDue(t *Table, ev *Events, now int64) {
	for len(sh.expiry) > 0 && sh.expiry[0].deadline <= now {
		sh.release(t, ev, sh.expiry[0], ReasonExpired, now)
	}
}

// Expire releases every hold whose deadline is at or before now, granting
// waiters, and returns the earliest deadline still pending (0: none).
// Callers drive it from one timer; the table has none of its own.
func (t *Table) Expire(ev *Events, now int64) int64 {
	var next int64
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.expireDue(t, ev, now)
		if len(sh.expiry) > 0 {
			if d := sh.expiry[0].deadline; next == 0 || d < next {
				next = d
			}
		}
		sh.mu.Unlock()
	}
	return next
}
