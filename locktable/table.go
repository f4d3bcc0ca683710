package locktable

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
)

// Config fixes a Table's shape and limits. The zero value is usable: one
// shard, no limits, fences starting at 1.
type Config struct {
	// Shards is the number of shards, rounded up to a power of two (≥ 1)
	// and at most maxShards.
	Shards int
	// FenceStart is the first fence the table issues; later ones are larger.
	// Callers seed it with max(persisted high-water + 1, unix time in µs).
	FenceStart uint64
	// MaxWaiters bounds each lock's wait queue (0: no bound).
	MaxWaiters int
	// MaxHoldsPerSession bounds a session's bound holds plus its wait
	// (0: no bound). Re-entries and detached holds do not count.
	MaxHoldsPerSession int
	// Notify, when set, receives a Notice for every change of a lock, in
	// the critical section of the change (lock events). It must be quick
	// and must not call back into the table.
	Notify func(Notice)
	// Watched, when set, reports whether anyone watches at all: while it
	// is false no notice is built.
	Watched func() bool

	// bucketCap replaces maxBucketHolds (0: keep it), for tests.
	bucketCap uint32
	// bigLock replaces the constant of the same name (0: keep it), for
	// tests: the model test takes the paths of locks with many records
	// with few.
	bigLock uint32
}

// A name's bucket is the low bucketBits bits of its hash. A shard is the
// union of 2^bucketBits / shards buckets, whatever the shard count, since
// shards are chosen by the hash's low bits too.
const (
	bucketBits = 12
	// maxShards leaves 20 bits of a hid to the holds of each shard.
	maxShards = 1 << bucketBits
	// maxBucketHolds bounds the live holds of each bucket (ErrTableFull),
	// which keeps every shard, at any shard count, within the 2^32/shards
	// - 1 holds its hids can name: refusing by bucket rather than by shard
	// makes the refusal independent of the shard count, as replicas with
	// different shard counts must agree.
	maxBucketHolds = 1<<(32-bucketBits) - 1
)

// Table is the set of all locks. See the package doc for its contract.
type Table struct {
	cfg    Config
	shards []shard
	mask   uint64
	// localBits is the width of the per-shard part of a hid.
	localBits uint
	// shardBits is log2(len(shards)): a bucket's index within its shard is
	// the bucket >> shardBits.
	shardBits uint
	bucketCap uint32
	sessions  sessionSlots
	sched     schedule
	mem       *offheap
	// fence is the last fence issued; grants take fence.Add(1).
	fence atomic.Uint64
	// journaled counts the changes ever journaled (see JournalSeq).
	journaled atomic.Uint64
	// settling lists the multi-locks releases may have made grantable
	// (multi.go); ownerWaits the queued requests of each owner
	// (deadlock.go).
	settling   settleList
	ownerWaits ownerWaits
}

// shard is one partition of the lock namespace. Locks and holds are
// pointer-free records in off-heap stores, found by name through index;
// what few locks and holds need beyond a record (owners, waiters, very long
// names) lives in maps keyed by record id.
type shard struct {
	// mu guards every field below and every lock, hold and waiter that
	// belongs to this shard.
	mu     sync.Mutex
	idx    uint32 // this shard's index in Table.shards
	base   hid    // idx, shifted into a hid's shard bits
	mem    *offheap
	sched  *schedule
	index  nameIndex
	order  nameOrder
	names  nameArena
	locks  records[lockRec]
	holds  records[holdRec]
	expiry deadlineHeap
	// due, scheduled and dueAt place the shard in the table's expiry
	// schedule; see schedule for who may read and write them.
	due       dueKey
	scheduled bool
	dueAt     uint32
	// buckets counts the live holds of each of the shard's buckets, by
	// bucket >> Table.shardBits.
	buckets []uint32
	// owners are the owners of holds with one, by hold id.
	owners map[uint32]string
	// delays are the lock-delays of holds (and slots in lock-delay) with
	// one, by hold id: most holds have none and pay nothing for it.
	delays map[uint32]int64
	// queues are the wait queues of locks with waiters, by lock id.
	queues map[uint32]*waitQueue
	// longNames are names longer than maxArenaName, by lock id.
	longNames map[uint32]string
	// big are the indexes of locks with many records (see bigLock), by
	// lock id.
	big     map[uint32]*bigIndex
	nholds  int // live holds (a re-entered hold counts once)
	delayed int // slots in lock-delay
	waiters int
	// oldest is the earliest grant time of the shard's live holds, when
	// nholds > 0 and !oldestStale. Keeping it costs a compare per grant
	// and per release; releasing the oldest hold marks it stale, and
	// OldestGrant rescans the shard's holds only then.
	oldest      int64
	oldestStale bool
	// journaling: record changes in journal for a durable store.
	journaling bool
	journal    []Change
	journaled  *atomic.Uint64 // the table's count of journaled changes
	cfg        *Config        // the table's (Notify)
	ownerWaits *ownerWaits    // the table's
	_          [64]byte       // keep neighbouring shards' mutexes off one cache line
}

// New returns an empty Table.
func New(cfg Config) *Table {
	n := 1
	for n < cfg.Shards && n < maxShards {
		n <<= 1
	}
	if cfg.FenceStart == 0 {
		cfg.FenceStart = 1
	}
	t := &Table{cfg: cfg, shards: make([]shard, n), mask: uint64(n - 1), mem: newOffheap()}
	t.shardBits = uint(bits.TrailingZeros(uint(n)))
	t.localBits = 32 - t.shardBits
	t.bucketCap = maxBucketHolds
	if cfg.bucketCap != 0 {
		t.bucketCap = cfg.bucketCap
	}
	t.sched.heap = make([]*shard, 0, n)
	for i := range t.shards {
		sh := &t.shards[i]
		sh.idx = uint32(i)
		sh.base = hid(i) << t.localBits
		sh.mem = t.mem
		sh.sched = &t.sched
		sh.holds.limit = 1<<t.localBits - 1
		sh.journaled = &t.journaled
		sh.cfg = &t.cfg
		sh.ownerWaits = &t.ownerWaits
		sh.buckets = make([]uint32, maxShards/n)
		sh.owners = make(map[uint32]string)
		sh.delays = make(map[uint32]int64)
		sh.queues = make(map[uint32]*waitQueue)
		sh.longNames = make(map[uint32]string)
		sh.big = make(map[uint32]*bigIndex)
	}
	// The shards' records live as long as the shards: every access to them
	// goes through a *shard, which keeps the shards' array reachable.
	runtime.AddCleanup(&t.shards[0], (*offheap).freeAll, t.mem)
	t.fence.Store(cfg.FenceStart - 1)
	return t
}

// SetLimits replaces Config.MaxWaiters and Config.MaxHoldsPerSession
// (0: no bound) for later requests; what is queued or held stays. Not
// concurrently with Acquire, AcquireMulti or Upgrade (a replica's FSM
// runs them all under one mutex).
func (t *Table) SetLimits(maxWaiters, maxHoldsPerSession int) {
	t.cfg.MaxWaiters, t.cfg.MaxHoldsPerSession = maxWaiters, maxHoldsPerSession
}

// Limits returns the bounds SetLimits (or the Config) set.
func (t *Table) Limits() (maxWaiters, maxHoldsPerSession int) {
	return t.cfg.MaxWaiters, t.cfg.MaxHoldsPerSession
}

// Shards returns the number of shards.
func (t *Table) Shards() int { return len(t.shards) }

// LastFence returns the largest fence issued so far (FenceStart-1 if none).
func (t *Table) LastFence() uint64 { return t.fence.Load() }

// AdvanceFence makes every later fence larger than f. It never lowers the
// counter. Restore uses it to stay above persisted fences.
func (t *Table) AdvanceFence(f uint64) {
	for {
		cur := t.fence.Load()
		if cur >= f || t.fence.CompareAndSwap(cur, f) {
			return
		}
	}
}

func (t *Table) nextFence() uint64 { return t.fence.Add(1) }

// shardOf returns the shard of a lock name and the name's hash.
func (t *Table) shardOf(name string) (*shard, uint64) {
	h := hashName(name)
	return &t.shards[h&t.mask], h
}

// bucketOf returns the index, within its shard, of the bucket of a name
// whose hash is h.
func (t *Table) bucketOf(h uint64) uint16 {
	return uint16(h&(maxShards-1)) >> t.shardBits
}

// bucketFull reports whether bucket b of sh has no room for another hold.
// Caller holds sh.mu.
func (t *Table) bucketFull(sh *shard, b uint16) bool { return sh.buckets[b] >= t.bucketCap }

// holdAt returns the shard and record id of hold h.
func (t *Table) holdAt(h hid) (*shard, uint32) {
	return &t.shards[h>>t.localBits], uint32(h) & (1<<t.localBits - 1)
}

// hold returns the record of hold h. Its fields are guarded by its shard's
// mutex but sprev/snext, which the session's guards.
func (t *Table) hold(h hid) *holdRec {
	sh, id := t.holdAt(h)
	return sh.hold(id)
}

// Stats are point-in-time counts.
type Stats struct {
	Locks   int // locks with holders, waiters or slots in lock-delay
	Holds   int // live holds; a re-entered hold counts once
	Waiters int // queued requests
	Delayed int // slots in lock-delay (not among Holds)
}

// Stats sums the shards' counts. Each shard is read consistently; the sum
// is not a snapshot across shards.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		st.Locks += sh.index.n
		st.Holds += sh.nholds
		st.Waiters += sh.waiters
		st.Delayed += sh.delayed
		sh.mu.Unlock()
	}
	return st
}

// OldestGrant returns the earliest grant time (the clock of the table's
// callers) of the live holds; ok is false when there are none. It costs
// one lock and compare per shard, plus a scan of the hold records of each
// shard whose oldest hold was released since the last call: it is meant
// for a metrics scrape, not for a hot path.
func (t *Table) OldestGrant() (oldest int64, ok bool) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		if sh.nholds > 0 {
			if sh.oldestStale {
				sh.rescanOldest()
			}
			if !ok || sh.oldest < oldest {
				oldest, ok = sh.oldest, true
			}
		}
		sh.mu.Unlock()
	}
	return oldest, ok
}

// rescanOldest recomputes sh.oldest from the live hold records. Caller
// holds sh.mu; sh.nholds > 0.
func (sh *shard) rescanOldest() {
	first := true
	for id := uint32(1); id < sh.holds.used; id++ {
		h := sh.hold(id)
		if h.lock == 0 || h.is(delayed) { // free, or no hold
			continue
		}
		if first || h.granted < sh.oldest {
			sh.oldest, first = h.granted, false
		}
	}
	sh.oldestStale = false
}

// sessionSlots numbers the sessions that have bound holds, so that a hold
// record can name its session with a uint32. A session takes a slot when
// it binds its first hold and gives it back when it closes.
//
// Lookups take no lock: slots only ever grow by appending in place or by
// publishing a copy, and a slot is read only by who learnt its number from
// a hold bound to the session, which happens after the slot was filled and
// before it is emptied.
type sessionSlots struct {
	mu   sync.Mutex
	dir  atomic.Pointer[[]*Session] // slot 0 is never used
	free []uint32
}

func (x *sessionSlots) get(slot uint32) *Session { return (*x.dir.Load())[slot] }

func (x *sessionSlots) add(s *Session) uint32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	var dir []*Session
	if p := x.dir.Load(); p != nil {
		dir = *p
	}
	if k := len(x.free); k > 0 {
		slot := x.free[k-1]
		x.free = x.free[:k-1]
		dir[slot] = s
		return slot
	}
	if len(dir) == cap(dir) {
		grown := make([]*Session, len(dir), max(16, 2*cap(dir)))
		copy(grown, dir)
		dir = grown
	}
	if len(dir) == 0 {
		dir = append(dir, nil)
	}
	dir = append(dir, s)
	x.dir.Store(&dir)
	return uint32(len(dir) - 1)
}

func (x *sessionSlots) remove(slot uint32) {
	x.mu.Lock()
	defer x.mu.Unlock()
	(*x.dir.Load())[slot] = nil
	x.free = append(x.free, slot)
}
