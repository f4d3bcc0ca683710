package locktable

import (
	"sync"
	"sync/atomic"
)

// Config fixes a Table's shape and limits. The zero value is usable: one
// shard, no limits, fences starting at 1.
type Config struct {
	// Shards is the number of shards, rounded up to a power of two (≥ 1).
	Shards int
	// FenceStart is the first fence the table issues; later ones are larger.
	// Callers seed it with max(persisted high-water + 1, unix time in µs).
	FenceStart uint64
	// MaxWaiters bounds each lock's wait queue (0: no bound).
	MaxWaiters int
	// MaxHoldsPerSession bounds a session's bound holds plus its wait
	// (0: no bound). Re-entries and detached holds do not count.
	MaxHoldsPerSession int
}

// Table is the set of all locks. See the package doc for its contract.
type Table struct {
	cfg    Config
	shards []shard
	mask   uint64
	// fence is the last fence issued; grants take fence.Add(1).
	fence atomic.Uint64
}

// shard is one partition of the lock namespace.
type shard struct {
	// mu guards every field below and every lock, hold and waiter that
	// belongs to this shard.
	mu      sync.Mutex
	locks   map[string]*lock
	expiry  deadlineHeap
	holds   int // live holds (a re-entered hold counts once)
	waiters int
	// journaling: record changes in journal for a durable store.
	journaling bool
	journal    []Change
	_          [40]byte // keep neighbouring shards' mutexes off one cache line
}

// New returns an empty Table.
func New(cfg Config) *Table {
	n := 1
	for n < cfg.Shards {
		n <<= 1
	}
	if cfg.FenceStart == 0 {
		cfg.FenceStart = 1
	}
	t := &Table{cfg: cfg, shards: make([]shard, n), mask: uint64(n - 1)}
	for i := range t.shards {
		t.shards[i].locks = make(map[string]*lock)
	}
	t.fence.Store(cfg.FenceStart - 1)
	return t
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

// shardOf returns the shard of a lock name (FNV-1a, deterministic across
// processes so that replicas agree).
func (t *Table) shardOf(name string) *shard {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return &t.shards[h&t.mask]
}

// Stats are point-in-time counts.
type Stats struct {
	Locks   int // locks with holders or waiters
	Holds   int // live holds; a re-entered hold counts once
	Waiters int // queued requests
}

// Stats sums the shards' counts. Each shard is read consistently; the sum
// is not a snapshot across shards.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		st.Locks += len(sh.locks)
		st.Holds += sh.holds
		st.Waiters += sh.waiters
		sh.mu.Unlock()
	}
	return st
}
