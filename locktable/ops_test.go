package locktable

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// This file holds what the model and determinism tests share: operations as
// values, a runner that applies them to a real Table, and a generator of
// random operation sequences.

type opKind uint8

const (
	opAcquire opKind = iota
	opUnlock
	opRenew
	opCheck
	opForceUnlock
	opCancelWait
	opCloseSession
	opExpire
	opAdvance
	opUpgrade
	opDowngrade
	opAcquireMulti
)

// op is one call on a Table. Sessions are named by their index in the
// runner's list; closing a session appends a fresh one to the list.
type op struct {
	kind opKind
	sess int // session index; -1: nil (Renew only)
	req  Request
	wait bool
	name string
	key  Key
	ttl  int64
	dt   int64     // opAdvance: how far the clock moves
	max  int       // opExpire: the batch bound (0: none)
	why  Reason    // opCloseSession: the reason (0: CloseSession's)
	rnd  uint64    // opUpgrade: the new key's random part
	reqs []Request // opAcquireMulti
}

func (o op) String() string {
	// Session ids are indexes + 1 (see runner.addSession); print ids.
	sess := fmt.Sprint("s", o.sess+1)
	if o.sess < 0 {
		sess = "nil"
	}
	switch o.kind {
	case opAcquire:
		r := o.req
		return fmt.Sprintf("Acquire(%s, %q ttl=%d size=%d owner=%q detach=%v delay=%d shared=%v rand=%x, wait=%v)",
			sess, r.Name, r.TTL, r.Size, r.Owner, r.Detach, r.LockDelay, r.Shared, r.Rand, o.wait)
	case opUnlock:
		return fmt.Sprintf("Unlock(%q, %v)", o.name, o.key)
	case opRenew:
		return fmt.Sprintf("Renew(%s, %q, %v, ttl=%d)", sess, o.name, o.key, o.ttl)
	case opCheck:
		return fmt.Sprintf("Check(%q, %v)", o.name, o.key)
	case opForceUnlock:
		return fmt.Sprintf("ForceUnlock(%q)", o.name)
	case opCancelWait:
		return "CancelWait(" + sess + ")"
	case opCloseSession:
		if o.why != 0 {
			return fmt.Sprintf("CloseSessionFor(%s, %v)", sess, o.why)
		}
		return "CloseSession(" + sess + ")"
	case opExpire:
		return fmt.Sprintf("ExpireBatch(max=%d)", o.max)
	case opAdvance:
		return fmt.Sprintf("Advance(%d)", o.dt)
	case opUpgrade:
		return fmt.Sprintf("Upgrade(%s, %q, %v, rand=%x)", sess, o.name, o.key, o.rnd)
	case opDowngrade:
		return fmt.Sprintf("Downgrade(%q, %v)", o.name, o.key)
	case opAcquireMulti:
		var names []string
		for _, r := range o.reqs {
			names = append(names, fmt.Sprintf("%q/%x", r.Name, r.Rand))
		}
		var r Request
		if len(o.reqs) > 0 {
			r = o.reqs[0]
		}
		return fmt.Sprintf("AcquireMulti(%s, %s ttl=%d size=%d owner=%q detach=%v delay=%d shared=%v, wait=%v)",
			sess, strings.Join(names, ","), r.TTL, r.Size, r.Owner, r.Detach, r.LockDelay, r.Shared, o.wait)
	}
	return "?"
}

// grantRec is a Grant with the session named by id, so that grants of
// different Tables (or of the model) compare with ==.
type grantRec struct {
	SessionID uint64
	Name      string
	Key       Key
	TTL       int64
	Deadline  int64
	Upgrade   bool
	Lost      bool
	// Names and Keys are a multi-lock grant's, rendered.
	Names string
	Keys  string
}

// multiRec renders a multi-lock grant's names and keys for a grantRec.
func multiRec(names []string, keys []Key) (string, string) {
	if names == nil {
		return "", ""
	}
	return strings.Join(names, ","), fmt.Sprint(keys)
}

// result is what one op returned and the events it caused.
type result struct {
	key      Key
	out      Outcome
	err      error
	keys     []Key // AcquireMulti's
	n        int64 // Renew's TTL, Check's remaining time, ForceUnlock's count, Expire's next deadline, CancelWait's 0/1
	more     bool  // ExpireBatch: due holds remain
	grants   []grantRec
	releases []Release
}

func (a result) equal(b result) bool {
	sameErr := (a.err == nil) == (b.err == nil) && (a.err == nil || a.err.Error() == b.err.Error())
	return a.key == b.key && slices.Equal(a.keys, b.keys) && a.out == b.out && sameErr && a.n == b.n && a.more == b.more &&
		slices.Equal(a.grants, b.grants) && slices.Equal(a.releases, b.releases)
}

// format renders r for the op log; kind says which fields mean something.
func (r result) format(kind opKind) string {
	var b strings.Builder
	switch kind {
	case opAcquire, opUpgrade:
		fmt.Fprintf(&b, "%v %s %s", r.key, outcomeName(r.out), errName(r.err))
	case opAcquireMulti:
		fmt.Fprintf(&b, "%v %s %s", r.keys, outcomeName(r.out), errName(r.err))
	case opUnlock, opDowngrade:
		b.WriteString(errName(r.err))
	case opRenew, opCheck:
		fmt.Fprintf(&b, "%d %s", r.n, errName(r.err))
	case opForceUnlock, opCancelWait:
		fmt.Fprint(&b, r.n)
	case opExpire:
		fmt.Fprint(&b, r.n, " more=", r.more)
	}
	for _, g := range r.grants {
		fmt.Fprintf(&b, " grant{s%d %q %v ttl=%d deadline=%d upgrade=%v lost=%v names=%s keys=%s}", g.SessionID, g.Name, g.Key, g.TTL, g.Deadline, g.Upgrade, g.Lost, g.Names, g.Keys)
	}
	for _, x := range r.releases {
		fmt.Fprintf(&b, " release{%q fence=%d owner=%q session=%d %v held=%d delayed-until=%d}",
			x.Name, x.Fence, x.Owner, x.SessionID, x.Reason, x.Held, x.DelayedUntil)
	}
	return b.String()
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	return strings.TrimPrefix(err.Error(), "locktable: ")
}

func outcomeName(o Outcome) string {
	switch o {
	case Granted:
		return "Granted"
	case Queued:
		return "Queued"
	case Busy:
		return "Busy"
	}
	return fmt.Sprintf("Outcome(%d)", o)
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// runner applies ops to one real Table.
type runner struct {
	tb       *Table
	sessions []*Session
	ev       Events
	now      int64
	// issued lists the keys the last op handed out (direct or by grant).
	issued []Key
}

func newRunner(cfg Config, sessions int) *runner {
	r := &runner{tb: New(cfg), now: 1_000_000}
	for range sessions {
		r.addSession()
	}
	return r
}

func (r *runner) addSession() {
	r.sessions = append(r.sessions, r.tb.NewSession(uint64(len(r.sessions)+1), nil))
}

// apply runs o and returns its result and events.
func (r *runner) apply(o op) result {
	r.ev.Reset()
	r.issued = r.issued[:0]
	var s *Session
	if o.sess >= 0 && o.sess < len(r.sessions) {
		s = r.sessions[o.sess]
	}
	var res result
	switch o.kind {
	case opAcquire:
		res.key, res.out, res.err = r.tb.Acquire(&r.ev, s, o.req, r.now, o.wait)
		if !res.key.IsZero() {
			r.issued = append(r.issued, res.key)
		}
	case opUnlock:
		res.err = r.tb.Unlock(&r.ev, o.name, o.key, r.now)
	case opRenew:
		res.n, res.err = r.tb.Renew(&r.ev, s, o.name, o.key, o.ttl, r.now)
	case opCheck:
		res.n, res.err = r.tb.Check(&r.ev, o.name, o.key, r.now)
	case opForceUnlock:
		res.n = int64(r.tb.ForceUnlock(&r.ev, o.name, r.now))
	case opCancelWait:
		res.n = boolInt(r.tb.CancelWaitAt(&r.ev, s, r.now))
	case opCloseSession:
		if o.why != 0 {
			r.tb.CloseSessionFor(&r.ev, s, o.why, r.now)
		} else {
			r.tb.CloseSession(&r.ev, s, r.now)
		}
		r.addSession()
	case opExpire:
		res.n, res.more = r.tb.ExpireBatch(&r.ev, r.now, o.max)
	case opAdvance:
		r.now += o.dt
	case opUpgrade:
		res.key, res.out, res.err = r.tb.Upgrade(&r.ev, s, o.name, o.key, o.rnd, r.now)
		if !res.key.IsZero() {
			r.issued = append(r.issued, res.key)
		}
	case opDowngrade:
		res.err = r.tb.Downgrade(&r.ev, o.name, o.key, r.now)
	case opAcquireMulti:
		res.keys, res.out, res.err = r.tb.AcquireMulti(&r.ev, s, o.reqs, r.now, o.wait)
		r.issued = append(r.issued, res.keys...)
	}
	for _, g := range r.ev.Grants {
		names, keys := multiRec(g.Names, g.Keys)
		res.grants = append(res.grants, grantRec{g.Session.ID, g.Name, g.Key, g.TTL, g.Deadline, g.Upgrade, g.Lost, names, keys})
		switch {
		case g.Names != nil:
			r.issued = append(r.issued, g.Keys...)
		case !g.Lost:
			r.issued = append(r.issued, g.Key)
		}
	}
	res.releases = slices.Clone(r.ev.Releases)
	return res
}

// sessionState is what a session tells of itself.
type sessionState struct {
	Bound   int
	Waiting bool
}

// sessionStates returns every session's state, in session order.
func (r *runner) sessionStates() []sessionState {
	out := make([]sessionState, len(r.sessions))
	for i, s := range r.sessions {
		out[i] = sessionState{s.Bound(), s.Waiting()}
	}
	return out
}

// nextDeadline peeks at the earliest pending deadline (0: none) without
// expiring anything.
func nextDeadline(tb *Table) int64 {
	var next int64
	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.Lock()
		if sh.expiry.n > 0 {
			if d := sh.expiry.at(0).deadline; next == 0 || d < next {
				next = d
			}
		}
		sh.mu.Unlock()
	}
	return next
}

// opGen makes random ops over a few names, sizes, owners and sessions,
// biased towards collisions: the same keys, owners and deadlines recur.
type opGen struct {
	rng   *rand.Rand
	slots []int             // session indexes in use; a closed one is replaced
	n     int               // sessions created so far
	keys  map[string][]Key  // keys issued per lock name
	names []string          // lock names in play
	sizes map[string]uint32 // the size usually asked for each name
	// deadlocky: waits without TTLs on size-1 names, multi-locks and
	// upgrades, so that wait-for cycles form (TestModel_DeadlocksMatchReference).
	deadlocky bool
}

func newOpGen(rng *rand.Rand, sessions int) *opGen {
	g := &opGen{
		rng:  rng,
		n:    sessions,
		keys: make(map[string][]Key),
		// Prefixes of each other, for LOCKS pages with a Prefix.
		names: []string{"a", "b", "c", "d", "a:1", "a:2", "b:"},
		sizes: map[string]uint32{"a": 1, "b": 2, "c": 3, "d": 0, "a:1": 1, "a:2": 2, "b:": 1},
	}
	for i := range sessions {
		g.slots = append(g.slots, i)
	}
	return g
}

func (g *opGen) session() int {
	if g.rng.IntN(12) == 0 {
		return g.rng.IntN(g.n) // maybe a closed one
	}
	return g.slots[g.rng.IntN(len(g.slots))]
}

func (g *opGen) name() string {
	if g.rng.IntN(60) == 0 {
		return "" // invalid, or simply no such lock
	}
	return g.names[g.rng.IntN(len(g.names))]
}

func (g *opGen) ttl() int64 {
	switch n := g.rng.IntN(20); {
	case n < 9:
		return 0
	case n == 9:
		return -1
	default:
		return 1 + g.rng.Int64N(40)
	}
}

// lockDelay picks a request's lock-delay: mostly none, sometimes one of
// the TTLs' scale, rarely one out of range.
func (g *opGen) lockDelay() int64 {
	switch n := g.rng.IntN(40); {
	case n < 26:
		return 0
	case n == 26:
		return []int64{-1, MaxLockDelay + 1, MaxLockDelay}[g.rng.IntN(3)]
	default:
		return 1 + g.rng.Int64N(30)
	}
}

// key picks a key to present for name: mostly one issued for it, sometimes
// one of another lock, a forged one, or a key off by its random bits.
func (g *opGen) key(name string) Key {
	ks := g.keys[name]
	switch n := g.rng.IntN(10); {
	case n < 7 && len(ks) > 0:
		// Recent keys are the likeliest to be live.
		i := len(ks) - 1 - min(g.rng.IntN(len(ks)), g.rng.IntN(4))
		return ks[i]
	case n == 7 && len(ks) > 0:
		k := ks[g.rng.IntN(len(ks))]
		k.Rand ^= 1 << g.rng.IntN(64)
		return k
	case n == 8:
		other := g.keys[g.names[g.rng.IntN(len(g.names))]]
		if len(other) > 0 {
			return other[g.rng.IntN(len(other))]
		}
	}
	return Key{Fence: uint64(g.rng.IntN(50)), Rand: g.rng.Uint64N(4)}
}

// learn records the keys an op issued for name (grants may be of any name,
// so they are recorded by the grant's own name through the runner).
func (g *opGen) learn(name string, k Key) {
	g.keys[name] = append(g.keys[name], k)
}

// next returns a random op for a table whose clock reads now and whose
// earliest deadline is next (0: none).
func (g *opGen) next(now, deadline int64) op {
	if g.deadlocky {
		return g.nextDeadlocky()
	}
	switch n := g.rng.IntN(100); {
	case n < 34:
		name := g.name()
		size := g.sizes[name]
		if g.rng.IntN(10) == 0 {
			size = uint32(g.rng.IntN(4))
		}
		// Shared requests mostly on size-1 names; on a semaphore's name,
		// sometimes with its size (ErrBadRequest), else without
		// (*SizeMismatchError, or a size-1 lock of that name).
		var shared bool
		if size <= 1 {
			shared = g.rng.IntN(2) == 0
		} else if g.rng.IntN(8) == 0 {
			shared = true
			if g.rng.IntN(2) == 0 {
				size = 0
			}
		}
		var owner string
		if g.rng.IntN(5) < 2 {
			owner = []string{"o1", "o2"}[g.rng.IntN(2)]
		}
		req := Request{
			Name: name, TTL: g.ttl(), Size: size, Owner: owner,
			Detach: g.rng.IntN(7) == 0, Rand: g.rng.Uint64(), LockDelay: g.lockDelay(), Shared: shared,
		}
		return op{kind: opAcquire, sess: g.session(), req: req, wait: g.rng.IntN(2) == 0}
	case n < 46:
		name := g.name()
		return op{kind: opUnlock, name: name, key: g.key(name)}
	case n < 53:
		name := g.name()
		sess := g.session()
		if g.rng.IntN(4) == 0 {
			sess = -1
		}
		return op{kind: opRenew, sess: sess, name: name, key: g.key(name), ttl: g.ttl()}
	case n < 58:
		name := g.name()
		return op{kind: opCheck, name: name, key: g.key(name)}
	case n < 61:
		return op{kind: opForceUnlock, name: g.name()}
	case n < 68:
		return op{kind: opCancelWait, sess: g.session()}
	case n < 74:
		name := g.name()
		return op{kind: opUpgrade, sess: g.session(), name: name, key: g.key(name), rnd: g.rng.Uint64()}
	case n < 77:
		name := g.name()
		return op{kind: opDowngrade, name: name, key: g.key(name)}
	case n < 82 && g.rng.IntN(2) == 0:
		return g.multi()
	case n < 82:
		slot := g.rng.IntN(len(g.slots))
		o := op{kind: opCloseSession, sess: g.slots[slot]}
		if g.rng.IntN(2) == 0 {
			o.why = []Reason{ReasonDisconnect, ReasonKilled, ReasonReset}[g.rng.IntN(3)]
		}
		if g.rng.IntN(8) == 0 {
			o.sess = g.rng.IntN(g.n) // maybe closed already
		}
		// The runner appends a fresh session; it takes the closed one's slot
		// (closing an already closed session replaces nothing useful, but
		// keeps the runner's and the generator's counts in step).
		g.slots[slot] = g.n
		g.n++
		return o
	case n < 89:
		return op{kind: opExpire, max: []int{0, 0, 1, 2}[g.rng.IntN(4)]}
	default:
		dt := []int64{0, 1, 1, 2, 3, 5, 8, 13}[g.rng.IntN(8)]
		if deadline > now && g.rng.IntN(3) == 0 {
			// Land on the next deadline, or just before it.
			dt = deadline - now - g.rng.Int64N(2)
		}
		return op{kind: opAdvance, dt: dt}
	}
}

// multi returns a random AcquireMulti: one to three names, mostly of
// size-1 locks, in any order, with the same options; rarely a name twice,
// a semaphore's name or a size.
func (g *opGen) multi() op {
	pool := []string{"a", "d", "a:1", "b:", "a", "d"}
	if g.rng.IntN(10) == 0 {
		pool = append(pool, "b", "c") // semaphores: *SizeMismatchError
	}
	n := 1 + g.rng.IntN(3)
	var owner string
	if g.rng.IntN(5) < 2 {
		owner = []string{"o1", "o2"}[g.rng.IntN(2)]
	}
	base := Request{
		TTL: g.ttl(), Owner: owner, Detach: g.rng.IntN(9) == 0,
		LockDelay: g.lockDelay(), Shared: g.rng.IntN(3) == 0,
	}
	if g.rng.IntN(30) == 0 {
		base.Size = uint32(g.rng.IntN(3))
	}
	var reqs []Request
	seen := map[string]bool{}
	for len(reqs) < n {
		name := pool[g.rng.IntN(len(pool))]
		if seen[name] && g.rng.IntN(20) != 0 {
			continue // a name twice, rarely: ErrBadRequest
		}
		seen[name] = true
		r := base
		r.Name, r.Rand = name, g.rng.Uint64()
		reqs = append(reqs, r)
	}
	if g.rng.IntN(60) == 0 {
		reqs = nil
	}
	return op{kind: opAcquireMulti, sess: g.session(), reqs: reqs, wait: g.rng.IntN(3) != 0}
}

// learnFrom records the keys the runner's last op issued, under their
// lock names.
func (g *opGen) learnFrom(o op, r *runner) {
	for i, k := range r.issued {
		name := o.req.Name
		if o.kind == opUpgrade {
			name = o.name
		}
		if o.kind == opAcquireMulti && i < len(o.reqs) {
			name = o.reqs[i].Name
		}
		for _, gr := range r.ev.Grants {
			if gr.Key == k {
				name = gr.Name
			}
			if j := slices.Index(gr.Keys, k); j >= 0 {
				name = gr.Names[j]
			}
		}
		g.learn(name, k)
	}
}

// nextDeadlocky returns an op for a wait-for graph: mostly waiting
// requests for size-1 names by few sessions and owners, no TTLs.
func (g *opGen) nextDeadlocky() op {
	names := []string{"a", "d", "a:1", "b:"}
	owner := func() string {
		if g.rng.IntN(3) == 0 {
			return []string{"o1", "o2"}[g.rng.IntN(2)]
		}
		return ""
	}
	switch n := g.rng.IntN(100); {
	case n < 50:
		req := Request{Name: names[g.rng.IntN(len(names))], Owner: owner(), Shared: g.rng.IntN(4) == 0, Rand: g.rng.Uint64()}
		return op{kind: opAcquire, sess: g.session(), req: req, wait: g.rng.IntN(5) != 0}
	case n < 65:
		o := g.multi()
		for i := range o.reqs {
			o.reqs[i].TTL, o.reqs[i].Detach, o.reqs[i].LockDelay = 0, false, 0
		}
		return o
	case n < 75:
		name := names[g.rng.IntN(len(names))]
		return op{kind: opUpgrade, sess: g.session(), name: name, key: g.key(name), rnd: g.rng.Uint64()}
	case n < 87:
		name := names[g.rng.IntN(len(names))]
		return op{kind: opUnlock, name: name, key: g.key(name)}
	case n < 95:
		return op{kind: opCancelWait, sess: g.session()}
	default:
		slot := g.rng.IntN(len(g.slots))
		o := op{kind: opCloseSession, sess: g.slots[slot]}
		g.slots[slot] = g.n
		g.n++
		return o
	}
}
