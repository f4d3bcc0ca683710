package locktable

import (
	"math"
	"slices"
	"sync"
)

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
// or moving it there. Caller holds sh.mu.
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
	} else {
		i := h.heapPos - 1
		sh.expiry.at(i).deadline = d
		if !sh.heapDown(i) {
			sh.heapUp(i)
		}
	}
	if b := sh.big[h.lock]; b != nil && d < b.due {
		b.due = d
	}
	// A new earliest hold must not be later than the shard's place in the
	// schedule. Deadlines mostly grow with time, so this is rare.
	if h.heapPos == 1 {
		if k := (dueKey{d, h.key.Fence}); !sh.scheduled || k.less(sh.due) {
			sh.sched.lower(sh, k)
		}
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
// deadline is at or before now, and ends its slots in lock-delay whose
// delay is over (granting waiters), earliest (deadline, fence) first, and
// returns lid, or 0 if the lock is gone. Every operation on a lock calls it
// first, so a hold past its deadline is never seen as held, whether or not
// the caller's expiry timer has fired yet. It touches only that lock, so
// results never depend on which names share a shard. Caller holds sh.mu.
//
// On a lock with fewer than bigLock records it scans them. On a big lock
// it costs O(1) while now is before the lock's bound of its deadlines
// (bigIndex.due), and otherwise O(min(the lock's records, the shard's due
// holds)) (dueHolds), after which the bound is past now again: never
// O(records) per operation on a lock with many holds.
func (sh *shard) expireLock(t *Table, ev *Events, lid uint32, name string, now int64) uint32 {
	if lid == 0 {
		return 0
	}
	b := sh.big[lid]
	if b != nil && now < b.due {
		return lid
	}
	// A release ends no other record of the lock and gives none a deadline
	// at or before now (a TTL or a lock-delay is positive; an upgrade of a
	// due hold is lost, not granted), so the order found holds throughout.
	for _, id := range sh.dueHolds(lid, b, now) {
		if d := sh.deadline(id); sh.hold(id).lock != lid || d == 0 || d > now {
			continue // defensive: see above
		}
		sh.release(t, ev, id, name, ReasonExpired, now)
		// Releases create no locks, so a freed record is this one dropped.
		if sh.lock(lid).size == 0 {
			return 0
		}
	}
	return lid
}

// dueHolds returns the holds and slots of lock lid due at now, earliest
// (deadline, fence) first. On a lock that is not big (b nil) it scans the
// lock's list. On a big one it walks the part of the shard's deadline
// heap that is due (the timer expires it, so it is small), unless that
// part is larger than the lock's list, which it scans then; and it raises
// b.due to a bound of the deadlines of the lock's other records: the
// earliest of them if it scanned the list, the shard's earliest deadline
// after now if it walked the heap. Caller holds sh.mu.
func (sh *shard) dueHolds(lid uint32, b *bigIndex, now int64) []uint32 {
	l := sh.lock(lid)
	var due []uint32
	next := int64(math.MaxInt64)
	budget := int(l.nholds)
	if b == nil || !sh.dueInHeap(0, lid, now, &budget, &due, &next) {
		due, next = due[:0], math.MaxInt64
		for id := l.first; id != 0; id = sh.hold(id).next {
			switch d := sh.deadline(id); {
			case d == 0:
			case d <= now:
				due = append(due, id)
			case d < next:
				next = d
			}
		}
	}
	if b != nil {
		b.due = next
	}
	if len(due) > 1 {
		slices.SortFunc(due, func(a, b uint32) int {
			switch {
			case a == b:
				return 0
			case earlier(sh, a, sh, b):
				return -1
			}
			return 1
		})
	}
	return due
}

// dueInHeap appends to due the holds of lock lid that are due at now in
// the subtree of the deadline heap at position i, and lowers next to the
// earliest deadline after now in it. It visits at most *budget entries,
// counting them off, and reports false if that was not enough.
func (sh *shard) dueInHeap(i, lid uint32, now int64, budget *int, due *[]uint32, next *int64) bool {
	if i >= sh.expiry.n {
		return true
	}
	if *budget == 0 {
		return false
	}
	*budget--
	e := sh.expiry.at(i)
	if e.deadline > now {
		// So is every deadline below it.
		*next = min(*next, e.deadline)
		return true
	}
	if sh.hold(e.hold).lock == lid {
		*due = append(*due, e.hold)
	}
	return sh.dueInHeap(2*i+1, lid, now, budget, due, next) && sh.dueInHeap(2*i+2, lid, now, budget, due, next)
}

// Expire releases every hold whose deadline is at or before now and
// returns the earliest deadline still pending (0: none); it is ExpireBatch
// without a bound.
func (t *Table) Expire(ev *Events, now int64) int64 {
	next, _ := t.ExpireBatch(ev, now, 0)
	return next
}

// ExpireBatch releases the holds whose deadline is at or before now, and
// ends the slots in lock-delay whose delay is over, earliest (deadline,
// fence) first across the whole table, granting waiters, until it has
// released (or ended) max of them (max ≤ 0: no bound). A hold with a
// lock-delay leaves a slot whose deadline is now plus its delay. It
// returns the earliest deadline of the holds and slots left (0: none), so
// that the caller's timer wakes for delays too, and whether
// some of them are due (then next ≤ now): the caller, having delivered
// this batch's events and served other work, calls again. Callers drive it
// from one timer; the table has none.
//
// Each release costs O(log holds) in its shard and O(log shards) in the
// table's schedule, and takes one shard mutex at a time, so a mass expiry
// neither stalls operations on other shards nor costs more with more
// shards. The order, and so the fences of the grants it makes, do not
// depend on the shard count; with no concurrent operations (the Raft FSM),
// a batch's releases and result are a function of the table's state.
func (t *Table) ExpireBatch(ev *Events, now int64, max int) (next int64, more bool) {
	released := 0
	for {
		sh := t.sched.first()
		if sh == nil {
			return 0, false
		}
		sh.mu.Lock()
		top, ok := sh.earliest()
		t.sched.mu.Lock()
		switch {
		case t.sched.top() != sh:
			// Another shard's place was lowered meanwhile.
		case !ok:
			t.sched.remove(sh)
		case top != sh.due:
			// Its earliest hold was released or moved since: the shard's
			// place was a lower bound; make it exact and look again.
			t.sched.raise(sh, top)
		default:
			// sh's earliest hold is the table's earliest.
			t.sched.mu.Unlock()
			if top.deadline > now || (max > 0 && released == max) {
				sh.mu.Unlock()
				return top.deadline, top.deadline <= now
			}
			sh.release(t, ev, sh.expiry.at(0).hold, "", ReasonExpired, now)
			released++
			sh.mu.Unlock()
			// Multi-locks this release let through are granted now, so
			// that their holds' deadlines count for the next one.
			t.settle(ev, now)
			continue
		}
		t.sched.mu.Unlock()
		sh.mu.Unlock()
	}
}

// earliest returns the (deadline, fence) of the shard's earliest hold, if
// it has a hold with a deadline. Caller holds sh.mu.
func (sh *shard) earliest() (dueKey, bool) {
	if sh.expiry.n == 0 {
		return dueKey{}, false
	}
	top := sh.expiry.at(0)
	return dueKey{top.deadline, sh.hold(top.hold).key.Fence}, true
}

// dueKey orders holds for expiry: by deadline, then fence.
type dueKey struct {
	deadline int64
	fence    uint64
}

func (a dueKey) less(b dueKey) bool {
	return a.deadline < b.deadline || (a.deadline == b.deadline && a.fence < b.fence)
}

// schedule is a binary min-heap of the shards that have (or recently had)
// holds with deadlines, by shard.due, so that ExpireBatch finds the
// table's earliest hold in O(log shards) without taking every shard mutex.
//
// A shard's due is a lower bound of its earliest hold: setDeadline lowers
// it when a hold becomes earlier than it, and only ExpireBatch raises it,
// to the exact value, or takes the shard out of the schedule when it has
// no deadline left. Releases and later deadlines leave it alone, so the
// hot path touches the schedule only when a deadline becomes a shard's
// earliest and earlier than any it had.
//
// A shard is in the schedule whenever its deadline heap is not empty.
type schedule struct {
	// mu guards heap and every shard's due, scheduled and dueAt. A
	// shard's due and scheduled are written only by a holder of both mu
	// and the shard's own mutex, so either suffices to read them; dueAt
	// (the position) moves as other shards do, under mu alone. Lock order:
	// shard, then mu.
	mu   sync.Mutex
	heap []*shard
}

// first returns the shard at the top of the schedule, or nil.
func (q *schedule) first() *shard {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.top()
}

// top returns the shard at the top of the schedule, or nil. Caller holds
// q.mu.
func (q *schedule) top() *shard {
	if len(q.heap) == 0 {
		return nil
	}
	return q.heap[0]
}

// lower gives sh the place k, earlier than its current one (if any).
// Caller holds sh.mu and not q.mu.
func (q *schedule) lower(sh *shard, k dueKey) {
	q.mu.Lock()
	defer q.mu.Unlock()
	sh.due = k
	if !sh.scheduled {
		sh.scheduled = true
		q.heap = append(q.heap, sh)
		sh.dueAt = uint32(len(q.heap))
	}
	q.up(int(sh.dueAt - 1))
}

// raise gives sh the place k, later than its current one. Caller holds
// sh.mu and q.mu.
func (q *schedule) raise(sh *shard, k dueKey) {
	sh.due = k
	i := int(sh.dueAt - 1)
	q.down(i)
	q.up(i) // were k earlier after all, it stays a heap
}

// remove takes sh out of the schedule. Caller holds sh.mu and q.mu.
func (q *schedule) remove(sh *shard) {
	i, last := int(sh.dueAt-1), len(q.heap)-1
	if i != last {
		q.swap(i, last)
	}
	q.heap[last] = nil
	q.heap = q.heap[:last]
	sh.dueAt = 0
	sh.due = dueKey{}
	sh.scheduled = false
	if i != last {
		q.down(i)
		q.up(i)
	}
}

func (q *schedule) less(i, j int) bool { return q.heap[i].due.less(q.heap[j].due) }

func (q *schedule) swap(i, j int) {
	q.heap[i], q.heap[j] = q.heap[j], q.heap[i]
	q.heap[i].dueAt = uint32(i + 1)
	q.heap[j].dueAt = uint32(j + 1)
}

func (q *schedule) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !q.less(j, i) {
			break
		}
		q.swap(i, j)
		j = i
	}
}

func (q *schedule) down(i int) {
	n := len(q.heap)
	for {
		j := 2*i + 1
		if j >= n {
			return
		}
		if r := j + 1; r < n && q.less(r, j) {
			j = r
		}
		if !q.less(j, i) {
			return
		}
		q.swap(i, j)
		i = j
	}
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
