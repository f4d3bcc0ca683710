package locktable

// hid names a hold table-wide: its shard's index in the high bits
// (Table.localBits and up), its record's id in that shard below. 0: none.
// Session lists link holds of every shard through hids.
type hid uint32

// holdRec is one granted acquisition of a lock: a pointer-free record in
// its shard's off-heap store (see records). Its fields are guarded by the
// shard's mutex, except sprev/snext. A record is free when lock is 0.
type holdRec struct {
	// 64 bytes: with its lock's record (20), name (the length rounded up
	// to 8), index slot (4 at 1/2 to 3/4 load), name-order slot (4 in a
	// B-tree leaf about 2/3 full) and heap entry (16), about 140 bytes per
	// held lock, none of it on the Go heap. A lock with many holds keeps
	// their back links in shard.big rather than here (see bigLock).
	key     Key
	granted int64 // time of grant
	ttl     int64 // TTL duration in ns; 0: none
	count   uint32
	// heapPos is 1 + the index in the shard's deadline heap, which holds
	// the deadline; 0: no deadline.
	heapPos uint32
	lock    uint32 // its lock's record; 0: this record is free
	next    uint32 // the lock's next hold in grant order; 0: last
	// session is the slot (Table.sessions) of the session the hold is
	// bound to; 0: detached or orphaned.
	session uint32
	// sprev/snext link the hold into its session's list; guarded by the
	// session's mutex.
	sprev, snext hid
	flags        holdFlags
	// bucket is the hold's bucket in its shard (Table.bucketOf), whose
	// count it is in; it fits in what was padding.
	bucket uint16
}

type holdFlags uint8

const (
	detached holdFlags = 1 << iota
	// orphan: bound to a connection that no longer exists (restored after
	// a restart); the first RENEW by key adopts it.
	orphan
	owned // has an owner, in shard.owners
	// lockDelay: has a lock-delay, in shard.delays.
	lockDelay
	// delayed: no longer a hold but a slot in lock-delay (SPEC §8.2): the
	// capacity of a hold that ended involuntarily, kept until its
	// deadline. It stays in its lock's list, counts in the lock's nholds
	// and in its bucket, and has no session, owner, TTL or orphan or
	// detached mark; no key matches it.
	delayed
	// shared: a shared hold (SPEC §8.3), of a size-1 lock, beside which
	// other shared holds may be; without it a hold is exclusive. A slot in
	// lock-delay keeps its hold's mode: a shared slot blocks exclusive
	// requests only.
	shared
)

func (h *holdRec) is(f holdFlags) bool { return h.flags&f != 0 }

func (h *holdRec) set(f holdFlags, on bool) {
	if on {
		h.flags |= f
	} else {
		h.flags &^= f
	}
}

// Reason says why a hold was released.
type Reason uint8

const (
	ReasonUnlock     Reason = iota + 1 // UNLOCK by key
	ReasonExpired                      // TTL deadline passed
	ReasonDisconnect                   // its connection closed
	ReasonForced                       // FORCEUNLOCK
	ReasonKilled                       // its connection was killed (CLIENT KILL)
	ReasonReset                        // its connection sent RESET
	// ReasonUpgraded: the hold became exclusive under a new fence
	// (Table.Upgrade). It is only ever the Reason of a NoticeReleased for
	// the old fence, never of a Release: the hold goes on.
	ReasonUpgraded
)

// involuntary reports whether a release for r starts the hold's
// lock-delay: the hold's connection went away (closed or killed) or its
// TTL ran out, rather than its holder or an admin letting it go.
func (r Reason) involuntary() bool {
	return r == ReasonExpired || r == ReasonDisconnect || r == ReasonKilled
}

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
	case ReasonKilled:
		return "killed"
	case ReasonReset:
		return "reset"
	case ReasonUpgraded:
		return "upgraded"
	}
	return "unknown"
}

// Grant tells that a queued request was granted, or, with Lost, that a
// queued upgrade never will be.
type Grant struct {
	Session *Session // the waiting session
	// Name and Key are a single request's (Acquire, Upgrade); "" and zero
	// for a multi-lock's.
	Name string
	Key  Key
	// Names and Keys are a multi-lock's (Table.AcquireMulti), granted on
	// all its names at once: its names and their keys in request order
	// (a re-entered hold's key is its own). nil for a single request.
	Names []string
	Keys  []Key
	// TTL and Deadline are the hold's (a multi-lock's: its first name's;
	// a re-entered hold may keep a longer TTL).
	TTL      int64 // the hold's TTL duration in ns; 0: none
	Deadline int64 // the hold's expiry time; 0: none
	// Upgrade: the grant is of a waiting Table.Upgrade: Key is the
	// upgraded hold's new key (the old one holds nothing any more), and
	// the hold keeps its binding, owner and count.
	Upgrade bool
	// Lost: the shared hold a waiting Table.Upgrade was for ended (UNLOCK,
	// expiry, FORCEUNLOCK, its session closing) before the upgrade could
	// be granted; the session waits no more, and Key, TTL and Deadline are
	// zero. The server answers the UPGRADE with -NOTHELD.
	Lost bool
}

// Release tells that a hold ended. A hold with a lock-delay that ends
// involuntarily (see Request.LockDelay) is released all the same: its
// Release and its notice come now, only its capacity stays taken.
type Release struct {
	Name      string
	Fence     uint64
	Owner     string
	SessionID uint64 // 0: detached or orphaned
	Reason    Reason
	Held      int64 // ns from grant to release
	// DelayedUntil is when the lock-delay this release started ends and
	// the hold's capacity is freed (0: none, the capacity was freed now):
	// a deadline the caller's expiry timer must wake for, like a TTL's.
	DelayedUntil int64
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
