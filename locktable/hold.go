package locktable

// Hold is one granted acquisition of a lock. All fields are guarded by the
// mutex of the shard the hold belongs to (sh, which never changes), except
// sprev/snext.
type Hold struct {
	// 112 bytes: with the lock (80), its name, its map slot and heap
	// slot, about 264 bytes of live heap per held lock.
	sh    *shard
	lock  *lock // nil once released
	key   Key
	owner string
	count uint32 // re-entries + 1
	// heapIdx is the index in the shard's deadline heap; -1: not there.
	heapIdx int32
	session *Session // nil when detached or orphaned
	// sprev/snext link the hold into session's list; guarded by session.mu.
	sprev, snext *Hold
	granted      int64 // time of grant
	ttl          int64 // TTL duration in ns; 0: none
	deadline     int64 // expiry time; 0: none
	detached     bool
	// orphan: bound to a connection that no longer exists (restored after a
	// restart); the first RENEW by key adopts it.
	orphan bool
}

// Reason says why a hold was released.
type Reason uint8

const (
	ReasonUnlock     Reason = iota + 1 // UNLOCK by key
	ReasonExpired                      // TTL deadline passed
	ReasonDisconnect                   // its connection closed
	ReasonForced                       // FORCEUNLOCK
)

func (r Reason) String() string {
	switch r {
	case ReasonUnlock:
		return "unlock"
	case ReasonExpired:
		return "expired"
	case ReasonDisconnect:
		return "disconnect"
	case ReasonForced:
		return "forced"
	}
	return "unknown"
}

// Grant tells that a queued request was granted.
type Grant struct {
	Session  *Session // the waiting session
	Name     string
	Key      Key
	TTL      int64 // the hold's TTL duration in ns; 0: none
	Deadline int64 // the hold's expiry time; 0: none
}

// Release tells that a hold ended.
type Release struct {
	Name      string
	Fence     uint64
	Owner     string
	SessionID uint64 // 0: detached or orphaned
	Reason    Reason
	Held      int64 // ns from grant to release
}

// Events collects what an operation did beyond its direct result. Callers
// reuse one Events per goroutine and Reset it before each operation.
type Events struct {
	Grants   []Grant
	Releases []Release
}

// Reset empties e, keeping its capacity.
func (e *Events) Reset() {
	clear(e.Grants)
	clear(e.Releases)
	e.Grants = e.Grants[:0]
	e.Releases = e.Releases[:0]
}
