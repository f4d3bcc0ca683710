package clientlib

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors. Test for them with errors.Is: the errors clientlib
// returns wrap them together with the server's text (*ServerError) or the
// cause of a loss (*LostError).
var (
	// ErrNotHeld: the key does not hold the lock (never did, expired,
	// released, or force-unlocked). The server's NOTHELD.
	ErrNotHeld = errors.New("the key does not hold the lock")
	// ErrSizeMismatch: the lock exists with another size than requested.
	// The server's SIZEMISMATCH.
	ErrSizeMismatch = errors.New("the lock exists with another size")
	// ErrLimit: a server limit was hit (max-ttl, max-waiters,
	// max-holds-per-client, max-name-len, max-clients). The server's LIMIT.
	ErrLimit = errors.New("server limit reached")
	// ErrWaitTimeout: the lock was not granted. Lock returns it when its
	// Wait option (or the server's --default-wait) ran out; TryLock returns
	// it when the lock has no free capacity. The lock result is then nil.
	ErrWaitTimeout = errors.New("lock not granted within the wait")
	// ErrLost: a lock this client held is no longer held although it was
	// not unlocked through it: the server published its release (see
	// LostError.Reason) or answered NOTHELD to a renewal (expiry,
	// FORCEUNLOCK), the connection the hold was bound to closed
	// (in cluster mode: and the hold could not be re-attached on a leader
	// in time), renewals kept failing until the TTL deadline passed, or
	// the Client was closed. Lock.Err returns a *LostError that matches ErrLost and
	// its cause.
	ErrLost = errors.New("lock lost")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client closed")
	// ErrReleased is the cause (context.Cause) of a Lock's Context after
	// the lock was unlocked through it.
	ErrReleased = errors.New("lock released")
	// ErrConnClosed is the cause of a loss when the connection the hold was
	// bound to closed (server stopped, network failure, CLIENT KILL): the
	// server releases such a hold at once. In cluster mode it is the cause
	// when no leader re-attached the hold before its deadline; a hold the
	// server released shows as ErrNotHeld there.
	ErrConnClosed = errors.New("lock connection closed")
	// ErrExpired is the cause of a loss when the hold's TTL deadline passed
	// without a successful renewal.
	ErrExpired = errors.New("TTL deadline passed without renewal")
	// ErrDeadlock: the request would wait forever, so the server refused
	// it at once and changed nothing. A Lock, LockMany or Lock.Upgrade
	// whose wait would close a cycle of waits (this connection, or Owner,
	// holds a lock that a holder of what it asks for waits for, directly
	// or along a chain; the reply names the locks of the cycle), or a
	// second Lock.Upgrade of a lock while another upgrade of it waits
	// (each would wait for the other's shared hold, which the caller
	// keeps). Release something held and try again. The server's DEADLOCK.
	ErrDeadlock = errors.New("the request would deadlock")
	// ErrClusterDown: a cluster had no leader (an election) for longer
	// than the call could wait (Options.FailoverTimeout, its ctx). The
	// server's CLUSTERDOWN.
	ErrClusterDown = errors.New("the cluster has no leader")
)

// ServerError is an error reply from the server, e.g.
// "SIZEMISMATCH lock 'x' has size 3, requested 1". It matches ErrNotHeld,
// ErrSizeMismatch, ErrLimit, ErrDeadlock or ErrClusterDown when its code
// says so.
type ServerError struct {
	Op    string // the command, e.g. "LOCK"
	Name  string // the lock name, if the command has one
	Reply string // the server's error reply, code first
}

// Code returns the error code: the reply's first word ("NOTHELD", "ERR").
func (e *ServerError) Code() string {
	code, _, _ := strings.Cut(e.Reply, " ")
	return code
}

func (e *ServerError) Error() string {
	if e.Name == "" {
		return e.Op + ": " + e.Reply
	}
	return e.Op + " " + quote(e.Name) + ": " + e.Reply
}

// Unwrap returns the sentinel error for the reply's code, if there is one.
func (e *ServerError) Unwrap() error {
	switch e.Code() {
	case "NOTHELD":
		return ErrNotHeld
	case "SIZEMISMATCH":
		return ErrSizeMismatch
	case "LIMIT":
		return ErrLimit
	case "DEADLOCK":
		return ErrDeadlock
	case "CLUSTERDOWN":
		return ErrClusterDown
	}
	return nil
}

// LostError says why a lock was lost. It matches ErrLost and its Cause
// (e.g. ErrNotHeld, ErrConnClosed, ErrExpired, ErrClosed).
type LostError struct {
	Name  string
	Fence uint64
	Cause error
	// Reason is the server's reason when the loss was learnt from the
	// lock's "released" event (ReasonExpired, ReasonForced, ReasonKilled,
	// ReasonDisconnect, ReasonReset, ReasonUpgraded: an UPGRADE with its
	// key elsewhere, or ReasonUnlock: another client unlocked it with its
	// key); empty when it was learnt otherwise. The
	// Cause then matches ErrNotHeld, and also ErrExpired (expired) or
	// ErrConnClosed (disconnect, killed, for a hold bound to its
	// connection).
	Reason string
}

func (e *LostError) Error() string {
	return "lock " + quote(e.Name) + " lost: " + e.Cause.Error()
}

// Unwrap returns ErrLost and the cause, so that errors.Is matches both.
func (e *LostError) Unwrap() []error { return []error{ErrLost, e.Cause} }

// releasedError is the cause of a loss learnt from a "released" event.
type releasedError struct {
	reason string
	is     []error // the sentinels it matches
}

func (e *releasedError) Error() string {
	return "released by the server (" + e.reason + ")"
}

func (e *releasedError) Unwrap() []error { return e.is }

// serverError turns a go-redis error reply into a *ServerError; other
// errors (network, context) are returned as they are.
func serverError(op, name string, err error) error {
	var re redis.Error
	if errors.As(err, &re) && err != redis.Nil {
		return &ServerError{Op: op, Name: name, Reply: re.Error()}
	}
	return err
}

// isReply reports whether err is an error reply from the server (so the
// connection it came on is healthy).
func isReply(err error) bool {
	var se *ServerError
	return errors.As(err, &se)
}

// quote quotes a lock name for messages, keeping them on one line.
func quote(s string) string {
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return "'" + strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s) + "'"
}
