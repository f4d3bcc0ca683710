package locktable

import "errors"

// Sentinel errors returned by Table operations. They carry no lock names or
// keys; callers (package commands) turn them into RESP error codes.
var (
	// ErrNotHeld: the key does not hold the lock (never did, expired,
	// released, or the lock does not exist).
	ErrNotHeld = errors.New("locktable: key does not hold the lock")
	// ErrSizeMismatch: the lock exists with another size than requested.
	ErrSizeMismatch = errors.New("locktable: lock exists with another size")
	// ErrDetachMismatch: a re-entry asked for another DETACH mode than the
	// hold it re-enters.
	ErrDetachMismatch = errors.New("locktable: re-entry must match the hold's detach mode")
	// ErrDetachNeedsTTL: a detached hold must have a TTL.
	ErrDetachNeedsTTL = errors.New("locktable: a detached hold needs a TTL")
	// ErrTooManyWaiters: the lock's wait queue is full (Config.MaxWaiters).
	ErrTooManyWaiters = errors.New("locktable: too many waiters on this lock")
	// ErrTooManyHolds: the session has as many bound holds and waits as
	// Config.MaxHoldsPerSession allows.
	ErrTooManyHolds = errors.New("locktable: too many holds for this session")
	// ErrAlreadyWaiting: the session already waits for a lock; a session
	// waits for at most one lock at a time.
	ErrAlreadyWaiting = errors.New("locktable: session is already waiting")
	// ErrSessionClosed: the session was closed; it can take nothing.
	ErrSessionClosed = errors.New("locktable: session is closed")
	// ErrTableFull: granting would take the table past a capacity limit: the
	// names that share this name's hash bucket (the low 12 bits of its hash)
	// have maxBucketHolds (about a million) live holds. Nothing changed. The
	// limit depends only on the table's state and the name, never on the
	// shard count, so every replica refuses alike; it keeps a shard within
	// the ids its holds can have, whatever names an attacker picks.
	ErrTableFull = errors.New("locktable: too many live holds on names that hash like this one")
	// ErrTooManyReentries: the hold has been re-entered 2^32-1 times and
	// cannot count one more. Nothing changed.
	ErrTooManyReentries = errors.New("locktable: hold re-entered too many times")
	// ErrModeMismatch: an OWNER re-entry asked for the other mode (shared
	// or exclusive) than the hold it re-enters; UPGRADE and DOWNGRADE
	// change a hold's mode.
	ErrModeMismatch = errors.New("locktable: re-entry must match the hold's mode (shared or exclusive)")
	// ErrNotShared: UPGRADE of a hold that is already exclusive.
	ErrNotShared = errors.New("locktable: the hold is not shared")
	// ErrNotExclusive: DOWNGRADE of a hold that is already shared.
	ErrNotExclusive = errors.New("locktable: the hold is not exclusive")
	// ErrDeadlock: the request would wait forever: an UPGRADE while another
	// upgrade of the same lock waits (each would wait for the other's
	// shared hold to end). Nothing changed.
	ErrDeadlock = errors.New("locktable: the request would deadlock")
	// ErrBadRequest: a request outside the table's contract (empty name,
	// negative TTL, a lock-delay out of range, a shared request with a
	// size > 1).
	ErrBadRequest = errors.New("locktable: invalid request")
)

// SizeMismatchError is the error for a request whose size differs from the
// lock's (a shared request wants size 1), and for a Downgrade of a
// semaphore's hold (Want 1). It matches ErrSizeMismatch with errors.Is.
type SizeMismatchError struct {
	Have, Want uint32
	// Name is the lock's, set when the request named several
	// (AcquireMulti); "" otherwise (the request's one name).
	Name string
}

func (e *SizeMismatchError) Error() string { return ErrSizeMismatch.Error() }

// Is makes errors.Is(err, ErrSizeMismatch) true.
func (e *SizeMismatchError) Is(target error) bool { return target == ErrSizeMismatch }
