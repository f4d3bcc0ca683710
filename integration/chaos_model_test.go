package integration

import (
	"fmt"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The sequential specification the kill -9 campaign (chaos_test.go) checks
// its history against with porcupine: one mutex (size 1) per lock name,
// with keys, fences, TTL deadlines, release by disconnect, and restarts
// that turn bound holds into orphans (docs/protocol.md).
//
// Time. Expiry, restore grace and release by disconnect happen inside the
// server, not as operations of the history, and depend on time. The model
// makes them nondeterministic releases with deadlines, using the real
// interval [call, ret] of every operation (the test's monotonic clock, in
// ns since the campaign began; porcupine gets the same interval):
//
//   - A hold's deadline lies in a window [expMin, expMax]: a grant or RENEW
//     of TTL t over [call, ret] sets it to [call+t-clockMargin, ret+t]
//     (the server stamps the grant inside the interval; clockMargin allows
//     for its coarse clock). Just before an operation op, the hold MAY have
//     expired if expMin <= op.ret (op can be linearized at op.ret), and
//     MUST have expired if op.call > expMax+expirySlack (the server acts
//     within 10 ms of a deadline; the slack allows for a loaded machine).
//   - A client closing its connection (opDisconnect over [call, ret]) dooms
//     the non-detached hold bound to it: from then on the hold MAY be
//     released before any operation, and MUST be before an operation called
//     more than disconnectSlack after ret, unless a restart came first.
//   - A restart (opRestart: kill -9 at call, the new process listening at
//     ret) keeps every hold whose grant was acknowledged and which was not
//     released (nothing acknowledged is lost), and brings back nothing that
//     was released (free stays free: a release that a reply revealed was
//     committed; one that nobody saw may have been, so the model keeps
//     both branches until an operation tells them apart). A bound hold
//     comes back as an orphan, owned by no connection, whose deadline is
//     min(restore+grace, its own), restore happening within [call, ret]; a
//     detached hold keeps its deadline; a grant whose reply never came may
//     or may not come back.
//   - RESET releases the bound hold of its connection before it replies
//     (docs/protocol.md), as UNLOCK does.
//   - RENEW adopts an orphan to the renewing connection and restores its
//     own TTL duration (none: no deadline).
//
// Fences: a grant's fence must exceed every fence this lock granted before
// (in linearization order). Fences across locks and restarts (unique,
// increasing in real time) are checked outside the model, in
// checkFences.
//
// Outcomes: an operation whose reply never came (the server died, the
// connection broke) is unknown: it may or may not have taken effect, and
// the client then closes its connection (an opDisconnect follows).

// chaosOpKind is one kind of operation in the campaign's history.
type chaosOpKind uint8

const (
	opLock       chaosOpKind = iota // LOCK name [TTL t] WAIT w [DETACH]
	opTryLock                       // TRYLOCK name [TTL t] [DETACH]
	opUnlock                        // UNLOCK name key
	opCheck                         // CHECK name key
	opRenew                         // RENEW name key (adopts an orphan)
	opLocks                         // LOCKS: the lock's holders, by fence
	opReset                         // RESET: releases the connection's bound holds
	opDisconnect                    // a client closed its connection conn
	opRestart                       // kill -9, then a new server on the data dir
)

var chaosOpNames = [...]string{"LOCK", "TRYLOCK", "UNLOCK", "CHECK", "RENEW", "LOCKS", "RESET", "DISCONNECT", "RESTART"}

func (k chaosOpKind) String() string { return chaosOpNames[k] }

// Allowances of the model, in ns.
const (
	clockMargin     = int64(20e6)   // the server's clock against the test's
	expirySlack     = int64(1500e6) // a deadline is acted on by then
	disconnectSlack = int64(1500e6) // a closed connection's holds are released by then
)

// chaosInput is an operation as sent. Operations with no name (opRestart,
// opDisconnect) belong to every lock.
type chaosInput struct {
	op        chaosOpKind
	name      string
	conn      int    // the connection that sent it (opDisconnect: the one closed)
	key       string // UNLOCK, CHECK, RENEW
	ttl       int64  // LOCK, TRYLOCK: TTL in ns, 0: none
	detach    bool
	call, ret int64 // the operation's interval, as in its porcupine.Operation
	grace     int64 // opRestart: --restore-grace in ns
	round     int
}

// chaosOutput is what came back.
type chaosOutput struct {
	unknown bool // no reply: the outcome is unknown
	ok      bool // granted, :1, held, renewed
	key     string
	fence   int64
	ttlMs   int64   // CHECK: remaining TTL in ms, -1: none
	fences  []int64 // LOCKS: the lock's holders
}

// mutexState is one lock's state. Comparable, so porcupine's default
// equality works.
type mutexState struct {
	held      bool
	key       string // "": granted by an operation whose reply never came
	fence     int64  // 0: unknown (as key)
	conn      int    // the bound connection; 0: orphan or detached
	detached  bool
	doomed    bool  // its connection closed: may be released at any moment
	doomedAt  int64 // when (the close returned)
	ttl       int64 // TTL duration in ns; 0: none
	expMin    int64 // the deadline lies in [expMin, expMax]; 0: no deadline
	expMax    int64
	lastFence int64 // the largest fence this lock granted
}

func (s mutexState) free() mutexState { return mutexState{lastFence: s.lastFence} }

// mutexModel is the campaign's model, partitioned by lock name.
var mutexModel = porcupine.NondeterministicModel{
	Partition: partitionByLock,
	Init:      func() []any { return []any{mutexState{}} },
	Step: func(state, input, output any) []any {
		in, out := input.(chaosInput), output.(chaosOutput)
		var next []any
		for _, s := range possibleBefore(state.(mutexState), in) {
			for _, n := range applyOp(s, in, out) {
				next = append(next, n)
			}
		}
		return next
	},
	DescribeOperation: describeChaosOp,
	DescribeState: func(state any) string {
		s := state.(mutexState)
		if !s.held {
			return fmt.Sprintf("free (last fence %d)", s.lastFence)
		}
		return fmt.Sprintf("held by %s conn=%d detached=%v doomed=%v deadline=[%d,%d]ms", keyOrUnknown(s.key), s.conn, s.detached, s.doomed, s.expMin/1e6, s.expMax/1e6)
	},
}

// possibleBefore returns the states the lock may be in when op takes
// effect, given s after the previous operation: the server may have
// released the hold meanwhile (expiry, disconnect), or must have.
func possibleBefore(s mutexState, op chaosInput) []mutexState {
	if !s.held {
		return []mutexState{s}
	}
	mustExpire := s.expMax != 0 && op.call > s.expMax+expirySlack
	mustDrop := s.doomed && op.call > s.doomedAt+disconnectSlack
	if mustExpire || mustDrop {
		return []mutexState{s.free()}
	}
	if (s.expMin != 0 && op.ret >= s.expMin) || s.doomed {
		return []mutexState{s, s.free()}
	}
	return []mutexState{s}
}

// deadlineAfter is the deadline window of a TTL set by an operation over
// [call, ret].
func deadlineAfter(ttl, call, ret int64) (lo, hi int64) {
	if ttl == 0 {
		return 0, 0
	}
	return call + ttl - clockMargin, ret + ttl
}

// applyOp returns the states op with out can lead to from s (none: op
// cannot have happened in s).
func applyOp(s mutexState, op chaosInput, out chaosOutput) []mutexState {
	mine := s.held && s.key != "" && s.key == op.key
	switch op.op {
	case opLock, opTryLock:
		grant := func(key string, fence int64) mutexState {
			g := mutexState{held: true, key: key, fence: fence, conn: op.conn, detached: op.detach, ttl: op.ttl, lastFence: max(s.lastFence, fence)}
			if op.detach {
				g.conn = 0
			}
			g.expMin, g.expMax = deadlineAfter(op.ttl, op.call, op.ret)
			return g
		}
		switch {
		case out.unknown && s.held:
			return []mutexState{s}
		case out.unknown:
			return []mutexState{s, grant("", 0)}
		case out.ok && (s.held || out.fence <= s.lastFence):
			return nil
		case out.ok:
			return []mutexState{grant(out.key, out.fence)}
		case s.held: // nil: busy at some point of its wait
			return []mutexState{s}
		}
		return nil
	case opUnlock:
		switch {
		case out.unknown && mine:
			return []mutexState{s, s.free()}
		case out.unknown:
			return []mutexState{s}
		case out.ok != mine:
			return nil
		case mine:
			return []mutexState{s.free()}
		}
		return []mutexState{s}
	case opCheck:
		switch {
		case out.unknown:
			return []mutexState{s}
		case out.ok != mine:
			return nil
		case mine && (out.ttlMs < 0) != (s.expMin == 0):
			return nil // a deadline where none is, or none where one is
		}
		return []mutexState{s}
	case opRenew:
		adopted := s
		if !s.detached {
			adopted.conn = op.conn
		}
		adopted.doomed = false
		adopted.expMin, adopted.expMax = deadlineAfter(s.ttl, op.call, op.ret)
		switch {
		case out.unknown && mine:
			return []mutexState{s, adopted}
		case out.unknown:
			return []mutexState{s}
		case out.ok != mine:
			return nil
		case mine:
			return []mutexState{adopted}
		}
		return []mutexState{s}
	case opLocks:
		switch {
		case out.unknown:
			return []mutexState{s}
		case len(out.fences) == 0 && !s.held:
			return []mutexState{s}
		case len(out.fences) != 1 || !s.held:
			return nil
		case s.fence == 0: // the unknown grant's fence, now seen
			if out.fences[0] <= s.lastFence {
				return nil
			}
			n := s
			n.fence, n.lastFence = out.fences[0], max(s.lastFence, out.fences[0])
			return []mutexState{n}
		case s.fence != out.fences[0]:
			return nil
		}
		return []mutexState{s}
	case opReset:
		bound := s.held && !s.detached && s.conn != 0 && s.conn == op.conn
		switch {
		case bound && out.unknown:
			return []mutexState{s, s.free()}
		case bound:
			return []mutexState{s.free()}
		}
		return []mutexState{s}
	case opDisconnect:
		if s.held && !s.detached && s.conn != 0 && s.conn == op.conn && !s.doomed {
			n := s
			n.doomed, n.doomedAt = true, op.ret
			return []mutexState{n}
		}
		return []mutexState{s}
	case opRestart:
		if !s.held {
			return []mutexState{s} // nothing released comes back
		}
		n := s
		n.conn, n.doomed, n.doomedAt = 0, false, 0
		if !s.detached {
			// An orphan: its deadline is min(restore+grace, its own).
			lo, hi := op.call+op.grace, op.ret+op.grace
			if s.expMin != 0 {
				lo, hi = min(lo, s.expMin), min(hi, s.expMax)
			}
			n.expMin, n.expMax = lo, hi
		}
		if s.key == "" { // never acknowledged: maybe never committed
			return []mutexState{s.free(), n}
		}
		return []mutexState{n}
	}
	panic(fmt.Sprintf("unknown operation %v", op.op))
}

// partitionByLock splits a history by lock name; operations without a
// name (restarts, disconnects) go to every lock.
func partitionByLock(history []porcupine.Operation) [][]porcupine.Operation {
	var common []porcupine.Operation
	byName := map[string][]porcupine.Operation{}
	for _, op := range history {
		if n := op.Input.(chaosInput).name; n != "" {
			byName[n] = append(byName[n], op)
		} else {
			common = append(common, op)
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([][]porcupine.Operation, 0, len(names))
	for _, n := range names {
		out = append(out, append(slices.Clone(byName[n]), common...))
	}
	return out
}

func keyOrUnknown(k string) string {
	if k == "" {
		return "<unacknowledged grant>"
	}
	return k
}

func describeChaosOp(input, output any) string {
	in, out := input.(chaosInput), output.(chaosOutput)
	var b strings.Builder
	fmt.Fprintf(&b, "r%d c%d %v %s", in.round, in.conn, in.op, in.name)
	if in.key != "" {
		b.WriteString(" " + in.key)
	}
	if in.ttl != 0 {
		fmt.Fprintf(&b, " TTL %d", in.ttl/1e6)
	}
	if in.detach {
		b.WriteString(" DETACH")
	}
	b.WriteString(" -> ")
	switch {
	case out.unknown:
		b.WriteString("unknown")
	case in.op == opLocks:
		fmt.Fprint(&b, out.fences)
	case in.op == opRestart, in.op == opDisconnect, in.op == opReset:
		b.WriteString("done")
	case !out.ok && (in.op == opLock || in.op == opTryLock):
		b.WriteString("nil")
	case !out.ok:
		b.WriteString("NOTHELD")
	case in.op == opLock || in.op == opTryLock:
		b.WriteString(out.key)
	case in.op == opCheck:
		fmt.Fprintf(&b, "%d ms", out.ttlMs)
	default:
		b.WriteString("ok")
	}
	fmt.Fprintf(&b, " [%d, %d] ms", in.call/1e6, in.ret/1e6)
	return b.String()
}
