// Package locktable is relock's lock state machine: a sharded table of named
// locks with their holds, FIFO waiters, TTL deadlines and fences.
//
// It is the one room where lock semantics live, and it may not touch the
// outside world: no I/O, no goroutines, no logging, no clock and no random
// source of its own. The caller passes the current time (nanoseconds on any
// monotonic scale) and the random part of each key into every operation, and
// gets back what happened (grants to waiters, releases) as values in an
// [Events] buffer. Given the same calls with the same arguments, a Table
// reaches the same state and returns the same results; the Raft FSM
// (package replica) relies on this.
//
// Modes: a hold is exclusive or, on a size-1 lock, shared (SPEC §8.3); one
// FIFO queue per lock serves both, and a shared hold may be upgraded to
// exclusive (waiting ahead of the queue) or an exclusive one downgraded
// (shared.go).
//
// Multi-locks (SPEC §8.4, multi.go) queue one leg per name at one
// instant and are granted on all names at once; a request that would wait
// and close a wait-for cycle fails with a *DeadlockError (SPEC §8.5,
// deadlock.go).
//
// Concurrency: a Table is safe for concurrent use. An operation takes
// several shard mutexes only in shard-index order (AcquireMulti, the
// grant of a multi-lock, State). Every check-and-act on a
// lock happens in one critical section of the lock's shard. A [Session]'s
// own mutex is only ever taken while its caller holds a shard mutex or no
// mutex at all (lock order: shard, then session), never the other way round.
//
// Memory: a held lock is a few pointer-free records — lock, hold, name in an
// arena, index slot, name-order B-tree slot, deadline-heap entry, about 140
// bytes — in chunks that on Linux come from mmap (all but a shard's first
// few small ones), outside the Go heap, so the GC neither scans them nor
// lets its pacing double them in RSS. Records refer to each other by uint32
// ids; what only some locks need (owners, lock-delays, waiters, names
// over 256 bytes, the index of a lock with many holds) lives in Go maps
// by id. Freed records, names and index space are reused, not
// returned to the system (but for the index, which shrinks).
//
// Cost: no operation's cost grows with the number of shards or of
// unrelated locks beyond O(log): expiry finds the table's earliest
// deadline through a schedule of the shards' earliest ones (expiry.go), and
// listings seek in per-shard name orders (btree.go) merged by name. A
// listing page pays one seek per shard, and nothing else per shard. Nor
// does acquiring, releasing, renewing or lazily expiring a hold cost more
// with the number of holds of its lock (shared, or of a semaphore): a
// lock of 32 records or more (bigLock) keeps, in a Go map beside its
// record, its records by fence, their back links and last, and a bound
// of their deadlines for expireLock; a smaller one walks its few records,
// so that the common lock, with one hold, pays nothing. What still walks a
// lock's holds: listing it, FORCEUNLOCK, a request with an owner (looking
// for its hold to re-enter) and the deadlock check of a request that
// would wait.
//
// Limits: the live holds of names sharing a hash bucket are bounded
// (ErrTableFull), which keeps every shard within the ids its holds can
// have whatever names a client picks, by a rule that does not depend on
// the shard count. No input makes the table panic.
package locktable
