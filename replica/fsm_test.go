package replica

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// opGen draws random but meaningful ops: it remembers keys that results
// returned so that releases and renewals hit real holds.
type opGen struct {
	rng      *rand.Rand
	now      int64
	nextSess uint64
	open     []uint64
	keys     []keyOf
}

type keyOf struct {
	name string
	key  locktable.Key
}

func newOpGen(seed uint64) *opGen {
	return &opGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: 1_750_000_000_000_000_000}
}

func (g *opGen) next() Op {
	g.now += int64(g.rng.IntN(5)) * 1_000_000 // 0–4 ms
	names := []string{"a", "b", "c", "sem"}
	pickSess := func() uint64 {
		if len(g.open) == 0 {
			return 999 // unknown: ErrNoSession
		}
		return g.open[g.rng.IntN(len(g.open))]
	}
	pickKey := func() keyOf {
		if len(g.keys) == 0 {
			return keyOf{"a", locktable.Key{Fence: 1}}
		}
		return g.keys[g.rng.IntN(len(g.keys))]
	}
	// Upgrades and downgrades mostly of recent keys, the likeliest live.
	pickRecent := func() keyOf {
		if len(g.keys) == 0 {
			return pickKey()
		}
		return g.keys[len(g.keys)-1-g.rng.IntN(min(len(g.keys), 4))]
	}
	switch n := g.rng.IntN(100); {
	case n < 10 || len(g.open) == 0:
		g.nextSess++
		g.open = append(g.open, g.nextSess)
		return Op{Kind: OpOpen, Now: g.now, Session: g.nextSess}
	case n < 45 && g.rng.IntN(4) == 0:
		// A multi-lock of two or three size-1 names, in any order.
		order := g.rng.Perm(3)[:2+g.rng.IntN(2)]
		base := locktable.Request{Shared: g.rng.IntN(3) == 0}
		if g.rng.IntN(2) == 0 {
			base.Owner = fmt.Sprintf("o%d", g.rng.IntN(2))
		}
		if g.rng.IntN(2) == 0 {
			base.TTL = int64(1+g.rng.IntN(20)) * 1_000_000
		}
		var reqs []locktable.Request
		for _, i := range order {
			r := base
			r.Name, r.Rand = names[i], g.rng.Uint64()
			reqs = append(reqs, r)
		}
		return Op{Kind: OpAcquireMulti, Now: g.now, Session: pickSess(), Requests: reqs, Wait: g.rng.IntN(3) != 0}
	case n < 45:
		name := names[g.rng.IntN(len(names))]
		req := locktable.Request{Name: name, Rand: g.rng.Uint64()}
		if name == "sem" {
			req.Size = 3
		}
		if g.rng.IntN(2) == 0 {
			req.TTL = int64(1+g.rng.IntN(20)) * 1_000_000
		}
		if g.rng.IntN(4) == 0 {
			req.Owner = fmt.Sprintf("o%d", g.rng.IntN(2))
		}
		if req.TTL > 0 && g.rng.IntN(5) == 0 {
			req.Detach = true
		}
		if g.rng.IntN(3) == 0 {
			req.LockDelay = int64(1+g.rng.IntN(10)) * 1_000_000
		}
		if name != "sem" && g.rng.IntN(2) == 0 {
			req.Shared = true
		}
		return Op{Kind: OpAcquire, Now: g.now, Session: pickSess(), Request: req, Wait: g.rng.IntN(2) == 0}
	case n < 50:
		k := pickRecent()
		return Op{Kind: OpUpgrade, Now: g.now, Session: pickSess(), Name: k.name, Key: k.key, Rand: g.rng.Uint64()}
	case n < 53:
		k := pickRecent()
		return Op{Kind: OpDowngrade, Now: g.now, Name: k.name, Key: k.key}
	case n < 60:
		k := pickKey()
		return Op{Kind: OpUnlock, Now: g.now, Name: k.name, Key: k.key}
	case n < 68:
		k := pickKey()
		return Op{Kind: OpRenew, Now: g.now, Session: pickSess(), Name: k.name, Key: k.key, TTL: int64(g.rng.IntN(3)) * 5_000_000}
	case n < 73:
		k := pickKey()
		return Op{Kind: OpCheck, Now: g.now, Name: k.name, Key: k.key}
	case n < 76:
		return Op{Kind: OpForce, Now: g.now, Name: names[g.rng.IntN(len(names))]}
	case n < 82:
		return Op{Kind: OpCancel, Now: g.now, Session: pickSess()}
	case n < 90:
		i := g.rng.IntN(len(g.open))
		id := g.open[i]
		g.open = append(g.open[:i], g.open[i+1:]...)
		why := []locktable.Reason{0, locktable.ReasonDisconnect, locktable.ReasonKilled, locktable.ReasonReset}[g.rng.IntN(4)]
		return Op{Kind: OpClose, Now: g.now, Session: id, Reason: why}
	case n < 99:
		return Op{Kind: OpExpire, Now: g.now, Max: []int{0, 1, 2}[g.rng.IntN(3)]} // batches are part of the entry
	default:
		g.open = nil
		return Op{Kind: OpFailover, Now: g.now, Grace: 30_000_000}
	}
}

// learn records the key a result granted (and grants in its events).
func (g *opGen) learn(op Op, r *Result) {
	if op.Kind == OpAcquire && r.Outcome == locktable.Granted {
		g.keys = append(g.keys, keyOf{op.Request.Name, r.Key})
	}
	if op.Kind == OpUpgrade && r.Outcome == locktable.Granted {
		g.keys = append(g.keys, keyOf{op.Name, r.Key})
	}
	if op.Kind == OpAcquireMulti && r.Outcome == locktable.Granted {
		for i, k := range r.Keys {
			g.keys = append(g.keys, keyOf{op.Requests[i].Name, k})
		}
	}
	for _, gr := range r.Events.Grants {
		for i, k := range gr.Keys {
			g.keys = append(g.keys, keyOf{gr.Names[i], k})
		}
		if !gr.Lost && gr.Names == nil {
			g.keys = append(g.keys, keyOf{gr.Name, gr.Key})
		}
	}
}

// render gives a result a comparable text form (sessions by ID).
func render(r *Result) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "key=%v keys=%v out=%d int=%d bool=%v err=%v", r.Key, r.Keys, r.Outcome, r.Int, r.Bool, r.Err)
	var de *locktable.DeadlockError
	if errors.As(r.Err, &de) {
		fmt.Fprintf(&b, " deadlock=%q", de.Locks)
	}
	for _, g := range r.Events.Grants {
		fmt.Fprintf(&b, " grant{%d %s %v names=%q keys=%v ttl=%d dl=%d upgrade=%v lost=%v}", g.Session.ID, g.Name, g.Key, g.Names, g.Keys, g.TTL, g.Deadline, g.Upgrade, g.Lost)
	}
	for _, rel := range r.Events.Releases {
		fmt.Fprintf(&b, " release%+v", rel)
	}
	return b.String()
}

// snapshotBytes takes f's snapshot and returns what Persist writes.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &bufferSink{}
	if err := s.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed {
		t.Fatal("Persist did not close its sink")
	}
	return sink.Bytes()
}

// bufferSink is a raft.SnapshotSink in memory.
type bufferSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *bufferSink) ID() string    { return "test" }
func (s *bufferSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufferSink) Close() error  { s.closed = true; return nil }

// TestFSM_SameLogSameStateAndResults applies one random log to FSMs with
// different shard counts: every result and the final snapshot must be
// equal, byte for byte.
func TestFSM_SameLogSameStateAndResults(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		a := NewFSM(locktable.Config{Shards: 1, FenceStart: 100}, nil)
		b := NewFSM(locktable.Config{Shards: 16, FenceStart: 100}, nil)
		g := newOpGen(seed)
		for i := 0; i < 400; i++ {
			op := g.next()
			entry, err := op.Encode()
			if err != nil {
				t.Fatal(err)
			}
			ra := a.Apply(&raft.Log{Data: entry}).(*Result)
			rb := b.Apply(&raft.Log{Data: entry}).(*Result)
			if render(ra) != render(rb) {
				t.Fatalf("seed %d op %d %+v:\n a: %s\n b: %s", seed, i, op, render(ra), render(rb))
			}
			g.learn(op, ra)
		}
		if sa, sb := snapshotBytes(t, a), snapshotBytes(t, b); !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: snapshots differ:\n a: %s\n b: %s", seed, sa, sb)
		}
	}
}

// TestFSM_SnapshotRestoreContinuesIdentically restores a snapshot taken
// mid-log into a new FSM; both then apply the rest of the log and must
// agree on every result and the final state.
func TestFSM_SnapshotRestoreContinuesIdentically(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		cfg := locktable.Config{Shards: 4, FenceStart: 100}
		a := NewFSM(cfg, nil)
		g := newOpGen(seed)
		for i := 0; i < 200; i++ {
			op := g.next()
			g.learn(op, a.ApplyOp(op))
		}
		b := NewFSM(cfg, nil)
		if err := b.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
			t.Fatalf("seed %d: Restore: %v", seed, err)
		}
		if sa, sb := snapshotBytes(t, a), snapshotBytes(t, b); !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: restored snapshot differs", seed)
		}
		for i := 0; i < 200; i++ {
			op := g.next()
			ra, rb := a.ApplyOp(op), b.ApplyOp(op)
			if render(ra) != render(rb) {
				t.Fatalf("seed %d op %d after restore %+v:\n a: %s\n b: %s", seed, i, op, render(ra), render(rb))
			}
			g.learn(op, ra)
		}
		if sa, sb := snapshotBytes(t, a), snapshotBytes(t, b); !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: final snapshots differ", seed)
		}
	}
}

func TestFSM_FailoverOrphansBoundHoldsForRenewal(t *testing.T) {
	f := NewFSM(locktable.Config{FenceStart: 100}, nil)
	now := int64(1_000_000_000)
	f.ApplyOp(Op{Kind: OpOpen, Now: now, Session: 1})
	r := f.ApplyOp(Op{Kind: OpAcquire, Now: now, Session: 1, Request: locktable.Request{Name: "x", Rand: 7}})
	if r.Err != nil || r.Outcome != locktable.Granted {
		t.Fatalf("acquire: %+v", r)
	}
	f.ApplyOp(Op{Kind: OpOpen, Now: now, Session: 2})
	if w := f.ApplyOp(Op{Kind: OpAcquire, Now: now, Session: 2, Request: locktable.Request{Name: "x", Rand: 8}, Wait: true}); w.Outcome != locktable.Queued {
		t.Fatalf("second acquire: %+v, want queued", w)
	}
	fo := f.ApplyOp(Op{Kind: OpFailover, Now: now, Grace: 5_000_000_000})
	if len(fo.Events.Grants) != 0 {
		t.Fatalf("failover granted %v; the old leader's waiters must re-queue themselves", fo.Events.Grants)
	}
	li, ok := f.Table().Lock("x", now)
	if !ok || len(li.Holds) != 1 || !li.Holds[0].Orphan || len(li.Waiters) != 0 {
		t.Fatalf("after failover: %+v, want one orphaned hold and no waiters", li)
	}
	// A new connection on the new leader adopts it by RENEW.
	f.ApplyOp(Op{Kind: OpOpen, Now: now, Session: 3})
	if rr := f.ApplyOp(Op{Kind: OpRenew, Now: now, Session: 3, Name: "x", Key: r.Key}); rr.Err != nil {
		t.Fatalf("renew: %v", rr.Err)
	}
	if li, _ := f.Table().Lock("x", now); li.Holds[0].SessionID != 3 {
		t.Fatalf("after renew: %+v, want bound to session 3", li.Holds[0])
	}
	// Without adoption it would have expired after the grace.
	f.ApplyOp(Op{Kind: OpClose, Now: now, Session: 3})
	if _, ok := f.Table().Lock("x", now); ok {
		t.Fatal("closing the adopting session did not release the hold")
	}
}

// TestFSM_FailoverCostsTheOldLeadersHoldsNotTheTable: the takeover entry
// walks the old leader's sessions and their bound holds, never the whole
// table: on 100k detached holds it orphans a few bound ones in a blink,
// and its time grows with the bound holds. It logs the times.
func TestFSM_FailoverCostsTheOldLeadersHoldsNotTheTable(t *testing.T) {
	now := int64(1_750_000_000_000_000_000)
	build := func(detached, bound, sessions int) *FSM {
		f := NewFSM(locktable.Config{Shards: 16, FenceStart: 100}, nil)
		for s := 1; s <= sessions; s++ {
			f.ApplyOp(Op{Kind: OpOpen, Now: now, Session: uint64(s)})
		}
		for i := 0; i < detached+bound; i++ {
			req := locktable.Request{Name: fmt.Sprintf("l%08d", i), Rand: uint64(i)}
			if i < detached {
				req.TTL, req.Detach = 60e9, true
			}
			if r := f.ApplyOp(Op{Kind: OpAcquire, Now: now, Session: uint64(1 + i%sessions), Request: req}); r.Outcome != locktable.Granted {
				t.Fatalf("acquire %d: %+v", i, r)
			}
		}
		return f
	}
	failover := func(f *FSM) time.Duration {
		start := time.Now()
		r := f.ApplyOp(Op{Kind: OpFailover, Now: now + 1e9, Grace: 30e9, Leader: "n2"})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return time.Since(start)
	}
	n := 100_000
	if testing.Short() {
		n = 20_000
	}
	few := failover(build(n, 10, 10))
	many := failover(build(0, n, 100))
	t.Logf("failover entry: %d detached + 10 bound holds: %v; %d bound holds in 100 sessions: %v", n, few, n, many)
	if few > 50*time.Millisecond {
		t.Errorf("orphaning 10 holds beside %d detached ones took %v: the takeover walks the table", n, few)
	}
}

// TestFSM_LockDelayIsTheSameOnEveryReplica: a hold with a lock-delay whose
// session a close entry ends (killed) leaves a slot in lock-delay on
// replicas of any shard count, and on one restored from a snapshot taken
// during the delay; all grant the waiter alike at the delay's end.
func TestFSM_LockDelayIsTheSameOnEveryReplica(t *testing.T) {
	const ms = int64(1_000_000)
	now := int64(1_750_000_000_000_000_000)
	a := NewFSM(locktable.Config{Shards: 1, FenceStart: 100}, nil)
	b := NewFSM(locktable.Config{Shards: 16, FenceStart: 100}, nil)
	apply := func(op Op) *Result {
		t.Helper()
		entry, err := op.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ra := a.Apply(&raft.Log{Data: entry}).(*Result)
		rb := b.Apply(&raft.Log{Data: entry}).(*Result)
		if render(ra) != render(rb) {
			t.Fatalf("%+v:\n a: %s\n b: %s", op, render(ra), render(rb))
		}
		return ra
	}
	for s := uint64(1); s <= 3; s++ {
		apply(Op{Kind: OpOpen, Now: now, Session: s})
	}
	held := apply(Op{Kind: OpAcquire, Now: now, Session: 1, Request: locktable.Request{Name: "x", Rand: 1, LockDelay: 50 * ms}})
	apply(Op{Kind: OpAcquire, Now: now, Session: 2, Request: locktable.Request{Name: "x", Rand: 2}, Wait: true})
	closed := apply(Op{Kind: OpClose, Now: now, Session: 1, Reason: locktable.ReasonKilled})
	if len(closed.Events.Releases) != 1 || closed.Events.Releases[0].Reason != locktable.ReasonKilled || len(closed.Events.Grants) != 0 {
		t.Fatalf("close (killed): %s; want the hold released as killed, no grant", render(closed))
	}
	for _, f := range []*FSM{a, b} {
		if li, ok := f.Table().Lock("x", now); !ok || li.Delayed != 1 || len(li.Holds) != 0 || len(li.Waiters) != 1 {
			t.Fatalf("after the close: %+v, %v; want one slot in lock-delay and the waiter", li, ok)
		}
	}
	if r := apply(Op{Kind: OpAcquire, Now: now, Session: 3, Request: locktable.Request{Name: "x", Rand: 3}}); r.Outcome != locktable.Busy {
		t.Fatalf("TRYLOCK during the delay: %s; want Busy", render(r))
	}
	if r := apply(Op{Kind: OpUnlock, Now: now, Name: "x", Key: held.Key}); r.Err == nil {
		t.Fatal("UNLOCK with the ended hold's key succeeded")
	}
	if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
		t.Fatal("snapshots differ during the delay")
	}
	c := NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
	if err := c.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatalf("Restore: %v", err)
	}

	for _, tc := range []struct {
		at    int64
		grant bool
	}{{now + 50*ms - 1, false}, {now + 50*ms, true}} {
		op := Op{Kind: OpExpire, Now: tc.at}
		r := apply(op)
		if rc := c.ApplyOp(op); render(rc) != render(r) {
			t.Fatalf("expire at +%d on the restored replica:\n %s\nwant %s", tc.at-now, render(rc), render(r))
		}
		if got := len(r.Events.Grants) == 1 && r.Events.Grants[0].Session.ID == 2; got != tc.grant {
			t.Fatalf("expire at +%d: %s; want the waiter granted: %v", tc.at-now, render(r), tc.grant)
		}
	}
	if sa, sc := snapshotBytes(t, a), snapshotBytes(t, c); !bytes.Equal(sa, sc) || !bytes.Equal(sa, snapshotBytes(t, b)) {
		t.Fatal("final snapshots differ")
	}
}

// TestFSM_CloseReasonDecidesTheLockDelay: a close entry without a reason
// (as written before Reason existed) is a disconnect, which delays; a
// RESET does not.
func TestFSM_CloseReasonDecidesTheLockDelay(t *testing.T) {
	for _, tc := range []struct {
		why         locktable.Reason
		wantReason  locktable.Reason
		wantDelayed int
	}{
		{0, locktable.ReasonDisconnect, 1},
		{locktable.ReasonDisconnect, locktable.ReasonDisconnect, 1},
		{locktable.ReasonKilled, locktable.ReasonKilled, 1},
		{locktable.ReasonReset, locktable.ReasonReset, 0},
	} {
		f := NewFSM(locktable.Config{}, nil)
		f.ApplyOp(Op{Kind: OpOpen, Now: 1, Session: 1})
		f.ApplyOp(Op{Kind: OpAcquire, Now: 1, Session: 1, Request: locktable.Request{Name: "x", Rand: 1, LockDelay: 1e9}})
		r := f.ApplyOp(Op{Kind: OpClose, Now: 2, Session: 1, Reason: tc.why})
		if len(r.Events.Releases) != 1 || r.Events.Releases[0].Reason != tc.wantReason {
			t.Fatalf("close with reason %v: %s; want released as %v", tc.why, render(r), tc.wantReason)
		}
		li, _ := f.Table().Lock("x", 2)
		if li.Delayed != tc.wantDelayed {
			t.Fatalf("close with reason %v: %d slots in lock-delay; want %d", tc.why, li.Delayed, tc.wantDelayed)
		}
	}
}

// TestOp_EntriesWrittenBeforeLockDelay: log entries from before
// Request.LockDelay and Op.Reason decode (without them), and an entry
// without them is written byte for byte as before.
func TestOp_EntriesWrittenBeforeLockDelay(t *testing.T) {
	for _, tc := range []struct {
		entry string
		want  Op
	}{
		{`{"k":"acquire","now":5,"s":3,"req":{"Name":"a\u0000b","TTL":1,"Size":2,"Owner":"w","Detach":true,"Rand":18446744073709551615},"wait":true}`,
			Op{Kind: OpAcquire, Now: 5, Session: 3, Wait: true,
				Request: locktable.Request{Name: "a\x00b", TTL: 1, Size: 2, Owner: "w", Detach: true, Rand: 1<<64 - 1}}},
		{`{"k":"close","now":6,"s":3}`, Op{Kind: OpClose, Now: 6, Session: 3}},
	} {
		got, err := DecodeOp([]byte(tc.entry))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("DecodeOp(%s) = %+v, %v; want %+v", tc.entry, got, err, tc.want)
		}
		if b, _ := got.Encode(); string(b) != tc.entry {
			t.Fatalf("re-encoded as %s; want %s", b, tc.entry)
		}
	}
	op := Op{Kind: OpClose, Now: 6, Session: 3, Reason: locktable.ReasonKilled}
	op.Request.LockDelay = 7
	b, _ := op.Encode()
	if got, err := DecodeOp(b); err != nil || !reflect.DeepEqual(got, op) {
		t.Fatalf("round trip of %+v: %+v, %v", op, got, err)
	}
}

// TestFSM_ModesAreTheSameOnEveryReplica: shared holds, a waiting upgrade
// and a downgrade give every replica — of any shard count, or restored
// from a snapshot taken while the upgrade waits — the same results: the
// upgrade's new key (its random part from the entry), the readers a
// downgrade lets in.
func TestFSM_ModesAreTheSameOnEveryReplica(t *testing.T) {
	now := int64(1_750_000_000_000_000_000)
	a := NewFSM(locktable.Config{Shards: 1, FenceStart: 100}, nil)
	b := NewFSM(locktable.Config{Shards: 16, FenceStart: 100}, nil)
	var c *FSM // restored mid-way
	apply := func(op Op) *Result {
		t.Helper()
		entry, err := op.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ra := a.Apply(&raft.Log{Data: entry}).(*Result)
		rb := b.Apply(&raft.Log{Data: entry}).(*Result)
		if render(ra) != render(rb) {
			t.Fatalf("%+v:\n a: %s\n b: %s", op, render(ra), render(rb))
		}
		if c != nil {
			if rc := c.ApplyOp(op); render(rc) != render(ra) {
				t.Fatalf("%+v on the restored replica:\n %s\nwant %s", op, render(rc), render(ra))
			}
		}
		return ra
	}
	for s := uint64(1); s <= 4; s++ {
		apply(Op{Kind: OpOpen, Now: now, Session: s})
	}
	reader := func(s uint64) locktable.Request {
		return locktable.Request{Name: "x", Shared: true, Rand: s, TTL: 1e9}
	}
	k1 := apply(Op{Kind: OpAcquire, Now: now, Session: 1, Request: reader(1)}).Key
	k2 := apply(Op{Kind: OpAcquire, Now: now, Session: 2, Request: reader(2)}).Key
	apply(Op{Kind: OpAcquire, Now: now, Session: 3, Request: locktable.Request{Name: "x", Rand: 3}, Wait: true})
	if r := apply(Op{Kind: OpUpgrade, Now: now, Session: 1, Name: "x", Key: k1, Rand: 0xabc}); r.Outcome != locktable.Queued || r.Err != nil {
		t.Fatalf("upgrade: %s; want queued", render(r))
	}
	apply(Op{Kind: OpAcquire, Now: now, Session: 4, Request: reader(4), Wait: true})
	if r := apply(Op{Kind: OpUpgrade, Now: now, Session: 2, Name: "x", Key: k2, Rand: 0xdef}); r.Err != locktable.ErrDeadlock {
		t.Fatalf("second upgrade: %s; want ErrDeadlock", render(r))
	}

	c = NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
	if err := c.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if li, _ := c.Table().Lock("x", now); len(li.Waiters) != 3 || !li.Waiters[0].Upgrade || !li.Holds[0].Shared {
		t.Fatalf("restored lock: %+v; want the upgrade first of 3 waiters, shared holds", li)
	}

	up := apply(Op{Kind: OpUnlock, Now: now + 1, Name: "x", Key: k2})
	if len(up.Events.Grants) != 1 || !up.Events.Grants[0].Upgrade || up.Events.Grants[0].Key.Rand != 0xabc || up.Events.Grants[0].Key.Fence <= k2.Fence {
		t.Fatalf("unlock of the other reader: %s; want the upgrade granted with the entry's random part", render(up))
	}
	nk := up.Events.Grants[0].Key
	down := apply(Op{Kind: OpDowngrade, Now: now + 2, Name: "x", Key: nk})
	if down.Err != nil || len(down.Events.Grants) != 0 {
		t.Fatalf("downgrade: %s; want no grant (a writer heads the queue)", render(down))
	}
	if r := apply(Op{Kind: OpCancel, Now: now + 3, Session: 3}); !r.Bool || len(r.Events.Grants) != 1 || r.Events.Grants[0].Session.ID != 4 {
		t.Fatalf("cancel of the writer: %s; want the reader behind it granted", render(r))
	}
	if r := apply(Op{Kind: OpDowngrade, Now: now + 3, Name: "x", Key: nk}); r.Err != locktable.ErrNotExclusive {
		t.Fatalf("second downgrade: %s; want ErrNotExclusive", render(r))
	}
	sa := snapshotBytes(t, a)
	if !bytes.Equal(sa, snapshotBytes(t, b)) || !bytes.Equal(sa, snapshotBytes(t, c)) {
		t.Fatal("final snapshots differ")
	}
}

// TestOp_UpgradeEntriesRoundTrip: upgrade and downgrade entries carry
// what the FSM needs, the random part included.
func TestOp_UpgradeEntriesRoundTrip(t *testing.T) {
	for _, op := range []Op{
		{Kind: OpUpgrade, Now: 5, Session: 3, Name: "x", Key: locktable.Key{Fence: 7, Rand: 8}, Rand: 1<<64 - 1},
		{Kind: OpDowngrade, Now: 6, Name: "x", Key: locktable.Key{Fence: 9, Rand: 1}},
		{Kind: OpAcquire, Now: 7, Session: 3, Request: locktable.Request{Name: "x", Shared: true, Rand: 2}},
	} {
		b, err := op.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecodeOp(b); err != nil || !reflect.DeepEqual(got, op) {
			t.Fatalf("round trip of %+v (%s): %+v, %v", op, b, got, err)
		}
	}
}

// TestFSM_MultiLocksAndDeadlocksAreTheSameOnEveryReplica: a multi-lock
// entry queues and is granted alike on replicas of any shard count and on
// one restored from a snapshot taken while it waited; a deadlock is the
// same *locktable.DeadlockError, with the same cycle, on each.
func TestFSM_MultiLocksAndDeadlocksAreTheSameOnEveryReplica(t *testing.T) {
	now := int64(1_750_000_000_000_000_000)
	a := NewFSM(locktable.Config{Shards: 1, FenceStart: 100}, nil)
	b := NewFSM(locktable.Config{Shards: 16, FenceStart: 100}, nil)
	var c *FSM // restored mid-way
	apply := func(op Op) []*Result {
		t.Helper()
		entry, err := op.Encode()
		if err != nil {
			t.Fatal(err)
		}
		op, err = DecodeOp(entry)
		if err != nil {
			t.Fatal(err)
		}
		rs := []*Result{a.Apply(&raft.Log{Data: entry}).(*Result), b.Apply(&raft.Log{Data: entry}).(*Result)}
		if c != nil {
			rs = append(rs, c.ApplyOp(op))
		}
		for _, r := range rs[1:] {
			if render(r) != render(rs[0]) {
				t.Fatalf("%+v:\n %s\nwant %s", op, render(r), render(rs[0]))
			}
		}
		return rs
	}
	for s := uint64(1); s <= 3; s++ {
		apply(Op{Kind: OpOpen, Now: now, Session: s})
	}
	req := func(name string, rnd uint64) locktable.Request { return locktable.Request{Name: name, Rand: rnd} }
	ky := apply(Op{Kind: OpAcquire, Now: now, Session: 2, Request: req("y", 1)})[0].Key
	r := apply(Op{Kind: OpAcquireMulti, Now: now, Session: 1, Requests: []locktable.Request{req("y", 2), req("x", 3)}, Wait: true})[0]
	if r.Outcome != locktable.Queued || r.Err != nil || r.Keys != nil {
		t.Fatalf("mlock y x: %s; want queued", render(r))
	}

	c = NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
	if err := c.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if li, _ := c.Table().Lock("x", now); len(li.Holds) != 0 || len(li.Waiters) != 1 || li.Waiters[0].Multi != 2 {
		t.Fatalf("restored x: %+v; want no hold and the multi-lock's leg", li)
	}

	// Session 1 holds nothing while it waits: session 3 takes z, and
	// waits for x behind the multi-lock though x is free.
	kz := apply(Op{Kind: OpAcquire, Now: now, Session: 3, Request: req("z", 4)})[0].Key
	if r := apply(Op{Kind: OpAcquire, Now: now, Session: 3, Request: req("x", 5), Wait: true})[0]; r.Outcome != locktable.Queued {
		t.Fatalf("lock x behind the multi-lock: %s; want queued", render(r))
	}
	// Session 2 asks for z: it would wait for 3, which waits (behind
	// the multi-lock, not on a hold) — no deadlock.
	if r := apply(Op{Kind: OpAcquire, Now: now, Session: 2, Request: req("z", 6), Wait: true})[0]; r.Outcome != locktable.Queued || r.Err != nil {
		t.Fatalf("lock z: %s; want queued", render(r))
	}
	for _, r := range apply(Op{Kind: OpUnlock, Now: now + 1, Name: "y", Key: ky}) {
		if len(r.Events.Grants) != 1 || len(r.Events.Grants[0].Keys) != 2 || r.Events.Grants[0].Names[0] != "y" {
			t.Fatalf("unlock y: %s; want the multi-lock granted", render(r))
		}
	}
	// Now 1 holds x and y; 3 waits for x (on 1's hold), 2 for z (on 3's).
	// 1 asking for z closes the cycle z → x → … : 1 waits on z for 3,
	// 3 waits on x for 1.
	for _, r := range apply(Op{Kind: OpAcquire, Now: now + 2, Session: 1, Request: req("z", 7), Wait: true}) {
		var de *locktable.DeadlockError
		if !errors.As(r.Err, &de) || !errors.Is(r.Err, locktable.ErrDeadlock) || !slices.Equal(de.Locks, []string{"z", "x"}) {
			t.Fatalf("lock z by 1: %s; want a DeadlockError through z, x", render(r))
		}
	}
	apply(Op{Kind: OpUnlock, Now: now + 3, Name: "z", Key: kz})
	sa := snapshotBytes(t, a)
	if !bytes.Equal(sa, snapshotBytes(t, b)) || !bytes.Equal(sa, snapshotBytes(t, c)) {
		t.Fatal("final snapshots differ")
	}
}

// TestFSM_TheTakeoverEntrysLimitsApplyOnEveryReplica: the limits are the
// leader's (its takeover entry's), not each replica's own table config,
// so that replicas refuse alike; a snapshot keeps them, and a later
// takeover replaces them.
func TestFSM_TheTakeoverEntrysLimitsApplyOnEveryReplica(t *testing.T) {
	// A replica whose own config would allow everything, and one whose
	// own config is stricter: both follow the log.
	for _, own := range []locktable.Config{{Shards: 1}, {Shards: 4, MaxWaiters: 5, MaxHoldsPerSession: 5}} {
		f := NewFSM(own, nil)
		apply := func(op Op) *Result {
			t.Helper()
			return f.ApplyOp(op)
		}
		apply(Op{Kind: OpFailover, Now: 1, Leader: "n1", LeaderAddr: "a:1", MaxWaiters: 1, MaxHolds: 1})
		for s := uint64(1); s <= 3; s++ {
			apply(Op{Kind: OpOpen, Now: 1, Session: s})
		}
		if r := apply(Op{Kind: OpAcquire, Now: 1, Session: 1, Request: locktable.Request{Name: "a", Rand: 1}}); r.Err != nil || r.Outcome != locktable.Granted {
			t.Fatalf("own %+v: the first acquire: %+v", own, r)
		}
		if r := apply(Op{Kind: OpAcquire, Now: 1, Session: 1, Request: locktable.Request{Name: "b", Rand: 2}}); !errors.Is(r.Err, locktable.ErrTooManyHolds) {
			t.Errorf("own %+v: a second hold with MaxHolds 1: %+v", own, r)
		}
		if r := apply(Op{Kind: OpAcquire, Now: 1, Session: 2, Request: locktable.Request{Name: "a", Rand: 3}, Wait: true}); r.Err != nil || r.Outcome != locktable.Queued {
			t.Fatalf("own %+v: the first waiter: %+v", own, r)
		}
		// A replica restored from a snapshot refuses alike.
		g := NewFSM(own, nil)
		if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
			t.Fatal(err)
		}
		for _, x := range []*FSM{f, g} {
			if r := x.ApplyOp(Op{Kind: OpAcquire, Now: 1, Session: 3, Request: locktable.Request{Name: "a", Rand: 4}, Wait: true}); !errors.Is(r.Err, locktable.ErrTooManyWaiters) {
				t.Errorf("own %+v: a second waiter with MaxWaiters 1: %+v", own, r)
			}
		}
		// A takeover without limits lifts them.
		g.ApplyOp(Op{Kind: OpFailover, Now: 2, Leader: "n2", LeaderAddr: "a:2", Grace: 60e9}) // the hold stays, orphaned
		g.ApplyOp(Op{Kind: OpOpen, Now: 2, Session: 4})
		g.ApplyOp(Op{Kind: OpOpen, Now: 2, Session: 5})
		for s := uint64(4); s <= 5; s++ {
			if r := g.ApplyOp(Op{Kind: OpAcquire, Now: 2, Session: s, Request: locktable.Request{Name: "a", Rand: 4 + s}, Wait: true}); r.Err != nil || r.Outcome != locktable.Queued {
				t.Errorf("own %+v: waiter %d after a takeover without limits: %+v", own, s, r)
			}
		}
	}
}
