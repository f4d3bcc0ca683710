package replica

import (
	"encoding/json"
	"fmt"

	"github.com/relock/relock/locktable"
)

// Kind names an operation.
type Kind string

const (
	OpOpen     Kind = "open"     // a session starts
	OpClose    Kind = "close"    // a session's connection closed (Reason: how)
	OpAcquire  Kind = "acquire"  // LOCK / TRYLOCK
	OpUnlock   Kind = "unlock"   // UNLOCK
	OpRenew    Kind = "renew"    // RENEW
	OpCheck    Kind = "check"    // CHECK (it may expire holds, so it is logged)
	OpForce    Kind = "force"    // FORCEUNLOCK
	OpCancel   Kind = "cancel"   // a WAIT ran out
	OpExpire   Kind = "expire"   // the leader's expiry timer
	OpFailover Kind = "failover" // a new leader orphans the old leader's sessions
	// OpUpgrade: UPGRADE (Session upgrades Name's shared hold of Key,
	// Rand the new key's random part).
	OpUpgrade Kind = "upgrade"
	// OpDowngrade: DOWNGRADE (Name's exclusive hold of Key).
	OpDowngrade Kind = "downgrade"
	// OpAcquireMulti: MLOCK / MTRYLOCK (Session asks for every request
	// of Requests at once; Wait as for an acquire).
	OpAcquireMulti Kind = "mlock"
)

// Op is one log entry. Now is the proposing leader's clock; Session is the
// acting session's ID. An entry is JSON; fields added since (Max, Reason,
// Rand, Request.LockDelay, Request.Shared, Requests) are left out when
// zero, so entries written before them decode as they were meant.
type Op struct {
	Kind    Kind              `json:"k"`
	Now     int64             `json:"now"`
	Session uint64            `json:"s,omitempty"`
	Request locktable.Request `json:"req,omitzero"`
	// Requests (mlock) are the multi-lock's requests, one per name in
	// the client's order, each with the random part of its key.
	Requests []locktable.Request `json:"reqs,omitempty"`
	Wait     bool                `json:"wait,omitempty"`
	Name     string              `json:"name,omitempty"`
	Key      locktable.Key       `json:"key,omitzero"`
	TTL      int64               `json:"ttl,omitempty"`
	Grace    int64               `json:"grace,omitempty"`
	// Max bounds the holds an expire op releases (0: no bound, as in
	// entries written before it existed): part of the entry, so that every
	// replica releases the same batch.
	Max int `json:"max,omitempty"`
	// Reason (close) is why the session ends: locktable.ReasonDisconnect
	// (also when 0, as in entries written before it existed),
	// ReasonKilled or ReasonReset. It decides the releases' reason and so
	// whether the holds' lock-delays apply (not after a RESET).
	Reason locktable.Reason `json:"reason,omitempty"`
	// Rand (upgrade) is the random part of the upgraded hold's new key,
	// drawn by the proposing leader (as Request.Rand is for an acquire):
	// every replica must give the hold the same key.
	Rand uint64 `json:"rand,omitempty"`
	// Leader and LeaderAddr (failover): the new leader's Raft ID and the
	// address its clients use, for followers' -MOVED replies.
	Leader     string `json:"leader,omitempty"`
	LeaderAddr string `json:"leader_addr,omitempty"`
	// MaxWaiters and MaxHolds (failover) are the new leader's
	// --max-waiters and --max-holds-per-client: every replica's table
	// enforces them from this entry on, whatever its own flags say, so
	// that replicas refuse alike (0: no bound, as in entries written
	// before they existed).
	MaxWaiters int `json:"max_waiters,omitempty"`
	MaxHolds   int `json:"max_holds,omitempty"`
}

// Encode returns the op's log entry bytes.
func (o *Op) Encode() ([]byte, error) { return json.Marshal(o) }

// DecodeOp parses a log entry.
func DecodeOp(b []byte) (Op, error) {
	var o Op
	if err := json.Unmarshal(b, &o); err != nil {
		return Op{}, fmt.Errorf("replica: bad log entry: %w", err)
	}
	return o, nil
}

// Result is what applying an op returned. Events carry the grants to
// waiting sessions and the releases the op caused; the node that proposed
// the op delivers the grants to its connections.
//
// Err is the table's error value as the FSM returned it on this node: a
// *locktable.DeadlockError (errors.Is ErrDeadlock) with its cycle's lock
// names, like every error, is the same on every node that applies the
// entry, since the table decides it from the replicated state alone.
type Result struct {
	Key     locktable.Key     // Acquire, Upgrade: the key granted at once
	Keys    []locktable.Key   // AcquireMulti: the keys granted at once, in request order
	Outcome locktable.Outcome // Acquire, Upgrade
	Int     int64             // Renew: TTL now set; Check: time left; Force: holds released
	Bool    bool              // Cancel: whether the request (or upgrade) was still queued; Expire: whether due holds remain
	Err     error
	Events  locktable.Events
}
