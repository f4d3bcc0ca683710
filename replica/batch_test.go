package replica

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// fullOp is an op with every field set (no zero leaf), for round trips.
func fullOp() Op {
	req := func(name string) locktable.Request {
		return locktable.Request{Name: name, TTL: 1 << 40, Size: 1<<32 - 1, Owner: "own\x00er", Detach: true,
			Rand: 1<<64 - 1, LockDelay: locktable.MaxLockDelay, Shared: true}
	}
	return Op{Kind: OpAcquireMulti, Now: -1, Session: 1<<64 - 1, Request: req("a"), Requests: []locktable.Request{req("b"), req("c\x00")},
		Wait: true, Name: "name", Key: locktable.Key{Fence: 1<<64 - 1, Rand: 1}, TTL: -5, Grace: 30e9, Max: 1 << 30,
		Reason: locktable.ReasonReset, Rand: 7, Leader: "n1", LeaderAddr: "127.0.0.1:6380", MaxWaiters: 1<<31 - 1, MaxHolds: 3}
}

func opPtrs(ops []Op) []*Op {
	ps := make([]*Op, len(ops))
	for i := range ops {
		ps[i] = &ops[i]
	}
	return ps
}

func TestEntry_EveryFieldRoundTrips(t *testing.T) {
	op := fullOp()
	if zero := zeroLeaves("Op", reflect.ValueOf(op)); len(zero) > 0 {
		t.Fatalf("fullOp leaves fields zero (add them to it, and to the encoding): %v", zero)
	}
	entry, err := encodeEntry([]*Op{&op, {Kind: OpOpen, Session: 1}})
	if err != nil {
		t.Fatal(err)
	}
	got, batch, err := decodeEntry(entry)
	if err != nil || !batch {
		t.Fatalf("decodeEntry: batch %v, %v", batch, err)
	}
	if want := []Op{op, {Kind: OpOpen, Session: 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

// TestEntry_EveryKindRoundTrips: each kind has a code, and random logs
// (every kind, in batches of 1 to 40) decode to what was encoded.
func TestEntry_EveryKindRoundTrips(t *testing.T) {
	for _, k := range []Kind{OpOpen, OpClose, OpAcquire, OpUnlock, OpRenew, OpCheck, OpForce, OpCancel,
		OpExpire, OpFailover, OpUpgrade, OpDowngrade, OpAcquireMulti} {
		if _, ok := kindCode(k); !ok {
			t.Errorf("kind %q has no code", k)
		}
	}
	if _, err := encodeEntry([]*Op{{Kind: "nosuch"}}); err == nil {
		t.Error("an unknown kind was encoded")
	}
	g := newOpGen(7)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 200; i++ {
		ops := make([]Op, 1+rng.IntN(40))
		for j := range ops {
			ops[j] = g.next()
		}
		entry, err := encodeEntry(opPtrs(ops))
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := decodeEntry(entry)
		if err != nil || !reflect.DeepEqual(got, ops) {
			t.Fatalf("entry %d: %v\n got %+v\nwant %+v", i, err, got, ops)
		}
	}
}

// entryV1 is an entry of fullOp as a failover and an open, as version 1
// wrote it, before the limits (golden bytes).
const entryV1 = "00524c4f505301020a01ffffffffffffffffff0101046e616d65ffffffffffffffffff0101000000000000000980b09dc2df018080808004060700000000000000026e310e3132372e302e302e313a363338300161808080808040ffffffff0f066f776e00657203ffffffffffffffff80e0ba84bf03020162808080808040ffffffff0f066f776e00657203ffffffffffffffff80e0ba84bf03026300808080808040ffffffff0f066f776e00657203ffffffffffffffff80e0ba84bf0301000100000000000000000000000000000000000000000000000000000000000000000000000000000000"

// TestEntry_Version1Decodes: an entry written before the limits decodes
// to its ops, with no limits.
func TestEntry_Version1Decodes(t *testing.T) {
	b, err := hex.DecodeString(entryV1)
	if err != nil {
		t.Fatal(err)
	}
	got, batch, err := decodeEntry(b)
	if err != nil || !batch {
		t.Fatalf("decodeEntry(version 1): batch %v, %v", batch, err)
	}
	op := fullOp()
	op.Kind, op.MaxWaiters, op.MaxHolds = OpFailover, 0, 0
	if want := []Op{op, {Kind: OpOpen, Session: 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("version 1:\n got %+v\nwant %+v", got, want)
	}
}

// TestEntry_CorruptIsRefused: every truncation of an entry, a newer
// version, an unknown kind and bytes after the last op fail with
// errBadEntry.
func TestEntry_CorruptIsRefused(t *testing.T) {
	op := fullOp()
	entry, err := encodeEntry([]*Op{&op, &op})
	if err != nil {
		t.Fatal(err)
	}
	for n := len(entryMagic); n < len(entry); n++ {
		if _, _, err := decodeEntry(entry[:n]); !errors.Is(err, errBadEntry) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(entry), err)
		}
	}
	newer := bytes.Clone(entry)
	newer[len(entryMagic)] = entryVersion + 1
	if _, _, err := decodeEntry(newer); !errors.Is(err, errBadEntry) || !bytes.Contains([]byte(err.Error()), fmt.Appendf(nil, "version %d", entryVersion+1)) {
		t.Errorf("a newer version: %v", err)
	}
	unknown := bytes.Clone(entry)
	unknown[len(entryMagic)+2] = byte(len(kindCodes) + 1) // the first op's kind
	if _, _, err := decodeEntry(unknown); !errors.Is(err, errBadEntry) {
		t.Errorf("an unknown kind: %v", err)
	}
	if _, _, err := decodeEntry(append(bytes.Clone(entry), 0)); !errors.Is(err, errBadEntry) {
		t.Errorf("a byte after the last op: %v", err)
	}
}

// TestFSM_BatchedLogSameAsOneOpPerEntry: a random log applied one op per
// entry (JSON, as written before batching) and in batch entries of random
// sizes gives the same results and the same state.
func TestFSM_BatchedLogSameAsOneOpPerEntry(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		single := NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
		batched := NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
		g := newOpGen(seed)
		rng := rand.New(rand.NewPCG(seed, 1))
		for i := 0; i < 60; i++ {
			// A batch's ops are generated before any is applied, as a
			// leader's are: later ones cannot know earlier results.
			ops := make([]Op, 1+rng.IntN(12))
			for j := range ops {
				ops[j] = g.next()
			}
			entry, err := encodeEntry(opPtrs(ops))
			if err != nil {
				t.Fatal(err)
			}
			rs, ok := batched.Apply(&raft.Log{Index: uint64(i + 1), Data: entry}).([]*Result)
			if !ok || len(rs) != len(ops) {
				t.Fatalf("seed %d: a batch of %d gave %T (%d)", seed, len(ops), rs, len(rs))
			}
			for j, op := range ops {
				one, err := op.Encode()
				if err != nil {
					t.Fatal(err)
				}
				r := single.Apply(&raft.Log{Data: one}).(*Result)
				if render(r) != render(rs[j]) {
					t.Fatalf("seed %d batch %d op %d %+v:\n one per entry: %s\n batched: %s", seed, i, j, op, render(r), render(rs[j]))
				}
				g.learn(op, r)
			}
		}
		if a, b := snapshotBytes(t, single), snapshotBytes(t, batched); !bytes.Equal(a, b) {
			t.Fatalf("seed %d: states differ", seed)
		}
		if batched.Applied() != 60 {
			t.Fatalf("seed %d: applied index %d, want 60", seed, batched.Applied())
		}
	}
}

// FuzzDecodeEntry: whatever an entry's bytes, decoding returns ops or an
// error, never panics, and what it returns encodes to an entry that
// decodes to the same ops.
func FuzzDecodeEntry(f *testing.F) {
	op := fullOp()
	entry, err := encodeEntry([]*Op{&op, {Kind: OpUnlock, Name: "x", Key: locktable.Key{Fence: 9, Rand: 3}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(entry)
	one, _ := op.Encode()
	f.Add(one)
	f.Add([]byte(entryMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		ops, batch, err := decodeEntry(in)
		if err != nil || !batch {
			return
		}
		again, err := encodeEntry(opPtrs(ops))
		if err != nil {
			t.Fatalf("decoded ops do not encode: %v", err)
		}
		back, _, err := decodeEntry(again)
		if err != nil || !reflect.DeepEqual(back, ops) {
			t.Fatalf("re-encoded entry: %v\n got %+v\nwant %+v", err, back, ops)
		}
	})
}

// fakeRaft is an applier whose entries wait until the test releases
// them; it applies them to an FSM, in order, as raft would.
type fakeRaft struct {
	fsm     *FSM
	mu      sync.Mutex
	entries [][]byte
	release chan struct{}
}

type fakeFuture struct {
	done chan struct{}
	resp any
	err  error
}

func (f *fakeFuture) Error() error  { <-f.done; return f.err }
func (f *fakeFuture) Response() any { return f.resp }
func (f *fakeFuture) Index() uint64 { return 0 }

func (r *fakeRaft) Apply(cmd []byte, _ time.Duration) raft.ApplyFuture {
	r.mu.Lock()
	r.entries = append(r.entries, cmd)
	n := len(r.entries)
	r.mu.Unlock()
	f := &fakeFuture{done: make(chan struct{})}
	go func() {
		<-r.release
		f.resp = r.fsm.Apply(&raft.Log{Index: uint64(n), Data: cmd})
		close(f.done)
	}()
	return f
}

func (r *fakeRaft) appended() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// waitFor polls cond until it holds (deadline 10 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// proposeAsync proposes op on a goroutine of its own; its error arrives
// on the channel.
func proposeAsync(b *batcher, op Op, timeout time.Duration) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := b.propose(op, timeout)
		res <- err
	}()
	return res
}

// queued reports whether b's queue holds n proposals.
func queued(b *batcher, n int) func() bool {
	return func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == n
	}
}

// TestBatcher_ProposalsWhileAnEntryIsInFlightShareTheNext: with one
// entry in flight, the proposals that arrive meanwhile go into one entry,
// and each proposer gets its own op's result.
func TestBatcher_ProposalsWhileAnEntryIsInFlightShareTheNext(t *testing.T) {
	fr := &fakeRaft{fsm: NewFSM(locktable.Config{Shards: 2, FenceStart: 1}, nil), release: make(chan struct{})}
	b := newBatcher(fr, 1)
	defer b.close()
	first := proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: 1}, time.Second)
	waitFor(t, "the first entry", func() bool { return fr.appended() == 1 })

	const n = 20
	type res struct {
		i   int
		r   *Result
		err error
	}
	results := make(chan res, n)
	for i := 0; i < n; i++ {
		go func() {
			r, err := b.propose(Op{Kind: OpAcquire, Now: 2, Session: 1,
				Request: locktable.Request{Name: fmt.Sprintf("lock%d", i), Rand: uint64(i)}}, time.Second)
			results <- res{i, r, err}
		}()
	}
	waitFor(t, "20 queued proposals", queued(b, n))
	if got := fr.appended(); got != 1 {
		t.Fatalf("%d entries appended while the first is in flight, want 1", got)
	}
	close(fr.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	fences := map[uint64]bool{}
	for range n {
		r := <-results
		if r.err != nil || r.r.Outcome != locktable.Granted {
			t.Fatalf("proposal %d: %+v, %v", r.i, r.r, r.err)
		}
		if r.r.Key.Rand != uint64(r.i) {
			t.Fatalf("proposal %d got the result of another op (key %v)", r.i, r.r.Key)
		}
		fences[r.r.Key.Fence] = true
	}
	if got := fr.appended(); got != 2 {
		t.Fatalf("%d entries for 21 proposals, want 2 (the first, then the 20 together)", got)
	}
	if len(fences) != n {
		t.Fatalf("%d distinct fences for %d grants", len(fences), n)
	}
}

// TestCluster_ConcurrentProposalsAreBatched: many connections' proposals
// on a real 3-node cluster take fewer entries than ops, and every replica
// ends in the same state.
func TestCluster_ConcurrentProposalsAreBatched(t *testing.T) {
	c := newTestClusterTiming(t, 3, 500*time.Millisecond) // no leader change under -race on a busy machine
	l := c.leader()
	const conns, cycles = 32, 20
	for s := uint64(1); s <= conns; s++ {
		c.propose(l, Op{Kind: OpOpen, Now: 1, Session: s})
	}
	before := c.nodes[l].Raft.LastIndex()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for s := uint64(1); s <= conns; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < cycles; i++ {
				name := fmt.Sprintf("job%d", s)
				r, err := c.nodes[l].Propose(Op{Kind: OpAcquire, Now: 2, Session: s, Request: locktable.Request{Name: name, Rand: s}}, 5*time.Second)
				if err == nil && r.Outcome != locktable.Granted {
					err = fmt.Errorf("session %d: %s not granted: %+v", s, name, r)
				}
				if err == nil {
					r, err = c.nodes[l].Propose(Op{Kind: OpUnlock, Now: 3, Name: name, Key: r.Key}, 5*time.Second)
					if err == nil && r.Err != nil {
						err = r.Err
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ops, entries := uint64(2*conns*cycles), c.nodes[l].Raft.LastIndex()-before
	t.Logf("%d ops in %d entries", ops, entries)
	if entries > ops/2 {
		t.Fatalf("%d ops took %d entries: proposals were not batched", ops, entries)
	}
	snaps := c.converge(l)
	for i := 1; i < len(snaps); i++ {
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("replica %d differs from the leader", i)
		}
	}
}

// TestBatcher_GathersTheProposalsExpectedBack: after an entry of three
// ops, the next entry waits for three proposals (the linger made long
// here, so that only their arrival ends it) and takes them together.
func TestBatcher_GathersTheProposalsExpectedBack(t *testing.T) {
	fr := &fakeRaft{fsm: NewFSM(locktable.Config{Shards: 1, FenceStart: 1}, nil), release: make(chan struct{})}
	close(fr.release) // entries apply at once
	b := startBatcher(&batcher{raft: fr, lingerMin: time.Minute, lingerMax: time.Minute}, 1)
	defer b.close()
	b.mu.Lock()
	b.expect = 3 // as after an entry of three
	b.mu.Unlock()
	var done []<-chan error
	for s := uint64(1); s <= 2; s++ {
		done = append(done, proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: s}, time.Second))
		waitFor(t, fmt.Sprintf("%d queued", s), queued(b, int(s)))
	}
	if n := fr.appended(); n != 0 {
		t.Fatalf("%d entries appended before the third proposal came", n)
	}
	done = append(done, proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: 3}, time.Second))
	for _, d := range done {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
	if n := fr.appended(); n != 1 {
		t.Fatalf("%d entries for the three, want 1", n)
	}
}

// TestBatcher_LoneProposalIsNotHeld: with nothing expected (an idle
// leader, one connection), a proposal is appended at once, however long
// the linger could be.
func TestBatcher_LoneProposalIsNotHeld(t *testing.T) {
	fr := &fakeRaft{fsm: NewFSM(locktable.Config{Shards: 1, FenceStart: 1}, nil), release: make(chan struct{})}
	close(fr.release)
	b := startBatcher(&batcher{raft: fr, lingerMin: time.Minute, lingerMax: time.Minute}, 1)
	defer b.close()
	done := make(chan error, 1)
	go func() {
		for s := uint64(1); s <= 3; s++ { // each entry of one: one expected back
			if _, err := b.propose(Op{Kind: OpOpen, Now: 1, Session: s}, time.Second); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("three lone proposals were not applied within 10s: held for the linger")
	}
	if n := fr.appended(); n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
}

// BenchmarkEntry compares an acquire op's entry in the binary encoding
// with its JSON (the encoding before batching): size and decoding time.
func BenchmarkEntry(b *testing.B) {
	op := Op{Kind: OpAcquire, Now: 1_765_000_000_000_000_000, Session: 12345,
		Request: locktable.Request{Name: "jobs:nightly-report", TTL: 30e9, Rand: 0x9e3779b97f4a7c15}, Wait: true}
	bin, err := encodeEntry([]*Op{&op})
	if err != nil {
		b.Fatal(err)
	}
	js, err := op.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("binary", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := decodeEntry(bin); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(bin)), "bytes/entry")
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := decodeEntry(js); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(js)), "bytes/entry")
	})
}

// TestAnswered: the connections an entry lets go on are its ops answered
// now and the waiters it granted, not the requests it left queued.
func TestAnswered(t *testing.T) {
	grant := locktable.Grant{Name: "x"}
	rs := []*Result{
		{Outcome: locktable.Granted},
		{Outcome: locktable.Queued},
		{Outcome: locktable.Queued},
		{}, // an UNLOCK, which granted two waiters
	}
	rs[3].Events.Grants = []locktable.Grant{grant, grant}
	if got := answered(rs); got != 4 {
		t.Fatalf("answered = %d, want 4 (the grant, the UNLOCK and its two grantees)", got)
	}
	if got := answered(rs[1:3]); got != 0 {
		t.Fatalf("two queued LOCKs: answered = %d, want 0", got)
	}
}

// TestEntry_MinimalSizes: the smallest op and request take exactly the
// bytes decodeEntry's counts assume (a count is bounded by them).
func TestEntry_MinimalSizes(t *testing.T) {
	head := len(entryMagic) + 2 // magic, version, a one-byte count
	one, err := encodeEntry([]*Op{{Kind: OpOpen}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(one) - head; got != minOpBytes {
		t.Fatalf("the smallest op takes %d bytes, minOpBytes is %d", got, minOpBytes)
	}
	two, err := encodeEntry([]*Op{{Kind: OpAcquireMulti, Requests: []locktable.Request{{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(two) - len(one); got != minRequestBytes {
		t.Fatalf("the smallest request takes %d bytes, minRequestBytes is %d", got, minRequestBytes)
	}
}

// TestBatcher_CloseWaitsForTheEntryInFlight: close fails what is queued
// at once but waits for the entry in flight (raft, still running, answers
// it), so that its proposers learn its outcome and nothing waits on a
// future after raft has shut down; a second close does nothing.
func TestBatcher_CloseWaitsForTheEntryInFlight(t *testing.T) {
	fr := &fakeRaft{fsm: NewFSM(locktable.Config{Shards: 1, FenceStart: 1}, nil), release: make(chan struct{})}
	b := newBatcher(fr, 1)
	inflight := proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: 1}, time.Second)
	waitFor(t, "the entry", func() bool { return fr.appended() == 1 })
	waiting := proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: 2}, time.Second)
	waitFor(t, "a queued proposal", queued(b, 1))
	closed := make(chan struct{})
	go func() {
		b.close()
		b.close()
		close(closed)
	}()
	if err := <-waiting; !errors.Is(err, raft.ErrRaftShutdown) {
		t.Fatalf("the queued proposal: %v, want ErrRaftShutdown", err)
	}
	select {
	case <-closed:
		t.Fatal("close returned before the entry in flight was answered")
	default:
	}
	close(fr.release)
	if err := <-inflight; err != nil {
		t.Fatalf("the entry in flight: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("close did not return once the entry was answered")
	}
	if _, err := b.propose(Op{Kind: OpOpen, Now: 1, Session: 3}, time.Second); !errors.Is(err, raft.ErrRaftShutdown) {
		t.Fatalf("a proposal after close: %v", err)
	}
}

// TestBatcher_TimeoutBoundsTheQueue: a proposal still queued when its
// timeout has passed fails with raft's ErrEnqueueTimeout and is never
// appended; one that cannot be encoded fails at once, alone.
func TestBatcher_TimeoutBoundsTheQueue(t *testing.T) {
	fr := &fakeRaft{fsm: NewFSM(locktable.Config{Shards: 1, FenceStart: 1}, nil), release: make(chan struct{})}
	b := newBatcher(fr, 1)
	defer b.close()
	if _, err := b.propose(Op{Kind: "nosuch"}, time.Second); err == nil {
		t.Fatal("an op of an unknown kind was accepted")
	}
	if _, err := b.propose(Op{Kind: OpExpire, Max: -1}, time.Second); err == nil {
		t.Fatal("an op with a negative max was accepted")
	}
	first := proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: 1}, time.Second)
	waitFor(t, "the first entry", func() bool { return fr.appended() == 1 })
	late := proposeAsync(b, Op{Kind: OpOpen, Now: 1, Session: 2}, time.Nanosecond)
	waitFor(t, "a queued proposal", queued(b, 1))
	close(fr.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-late; !errors.Is(err, raft.ErrEnqueueTimeout) {
		t.Fatalf("a proposal queued past its timeout: %v, want ErrEnqueueTimeout", err)
	}
	if n := fr.appended(); n != 1 {
		t.Fatalf("%d entries appended, want 1 (the late proposal never is)", n)
	}
}
