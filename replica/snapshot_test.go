package replica

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// bigFSM returns an FSM with n holds on n locks: a quarter detached with a
// TTL, the rest bound to 100 sessions (some with an owner and a TTL).
func bigFSM(tb testing.TB, n int) *FSM {
	tb.Helper()
	f := NewFSM(locktable.Config{Shards: 16, FenceStart: 100}, nil)
	now := int64(1_750_000_000_000_000_000)
	for s := uint64(1); s <= 100; s++ {
		f.ApplyOp(Op{Kind: OpOpen, Now: now, Session: s})
	}
	for i := 0; i < n; i++ {
		req := locktable.Request{Name: fmt.Sprintf("job:%08d", i), Rand: uint64(i) * 0x9e3779b97f4a7c15}
		switch i % 4 {
		case 0:
			req.TTL, req.Detach = 60_000_000_000, true
		case 1:
			req.TTL, req.Owner = 30_000_000_000, "worker-7"
		}
		if r := f.ApplyOp(Op{Kind: OpAcquire, Now: now, Session: uint64(1 + i%100), Request: req}); r.Err != nil || r.Outcome != locktable.Granted {
			tb.Fatalf("acquire %d: %+v", i, r)
		}
	}
	return f
}

// fullState is a state in which every field of every record is set, so
// that a field the encoding forgets shows up as a difference.
func fullState() fsmState {
	hold := func(name string, size uint32, fence uint64, session uint64) locktable.HoldState {
		return locktable.HoldState{
			HoldRecord: locktable.HoldRecord{Name: name, Size: size, Key: locktable.Key{Fence: fence, Rand: 0xfedcba9876543210},
				Owner: "o", Count: 3, TTL: 5e9, Deadline: -7, Granted: 1 << 62, Detached: true, Bound: true,
				LockDelay: 7e9, Delayed: true, Shared: true},
			SessionID: session, Orphan: true,
		}
	}
	return fsmState{
		State: locktable.State{
			Fence:    1 << 60,
			Sessions: []locktable.SessionState{{ID: 1, Fences: []uint64{12, 11}}, {ID: 2, Fences: []uint64{13}}},
			Locks: []locktable.LockState{{
				Name: "a\x00b", Size: 2,
				Holds: []locktable.HoldState{hold("a\x00b", 2, 11, 1), hold("a\x00b", 2, 12, 1)},
				Waiters: []locktable.WaiterState{{SessionID: 2, Enqueued: -1, Upgrade: 11, Multi: []string{"a\x00b", "c"},
					Request: locktable.Request{Name: "a\x00b", TTL: 1, Size: 2, Owner: "w", Detach: true, Rand: 1<<64 - 1, LockDelay: 60e9, Shared: true}}},
			}, {
				Name: "c", Size: 1, Holds: []locktable.HoldState{hold("c", 1, 13, 2)},
				Waiters: []locktable.WaiterState{{SessionID: 2, Enqueued: 9, Upgrade: 1 << 40, Multi: []string{"c"}, Request: locktable.Request{Name: "c", TTL: 2, Size: 1, Owner: "x", Detach: true, Rand: 5, LockDelay: 1, Shared: true}}},
			}},
		},
		Leader: "n1", LeaderAddr: "127.0.0.1:6380", LeaderTerm: 7, MaxWaiters: 1<<31 - 1, MaxHolds: 3,
	}
}

// zeroLeaves lists the fields of v that hold their zero value.
func zeroLeaves(path string, v reflect.Value) []string {
	switch v.Kind() {
	case reflect.Struct:
		var out []string
		for i := 0; i < v.NumField(); i++ {
			out = append(out, zeroLeaves(path+"."+v.Type().Field(i).Name, v.Field(i))...)
		}
		return out
	case reflect.Slice:
		if v.Len() == 0 {
			return []string{path}
		}
		var out []string
		for i := 0; i < v.Len(); i++ {
			out = append(out, zeroLeaves(fmt.Sprintf("%s[%d]", path, i), v.Index(i))...)
		}
		return out
	default:
		if v.IsZero() {
			return []string{path}
		}
		return nil
	}
}

func encode(t testing.TB, st *fsmState) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := encodeSnapshot(&b, st); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSnapshot_EveryFieldRoundTrips(t *testing.T) {
	st := fullState()
	if z := zeroLeaves("state", reflect.ValueOf(st)); len(z) > 0 {
		t.Fatalf("fullState leaves fields zero (a new field? encode it, then set it here): %v", z)
	}
	got, err := decodeSnapshot(bytes.NewReader(encode(t, &st)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, st)
	}
}

// snapshotV1 is fullState as version 1 wrote it, before lock-delay
// (golden bytes).
const snapshotV1 = "00524c534e415001808080808080808010026e310e3132372e302e302e313a36333830070201020c0b02010d020361006202020bfedcba9876543210016f0380c8afa0250d8080808080808080800107010cfedcba9876543210016f0380c8afa0250d80808080808080808001070101020361006202017702ffffffffffffffff0101016301010dfedcba9876543210016f0380c8afa0250d80808080808080808001070201020163010178040000000000000005011210b48680"

// snapshotV2 is fullState, without modes, as version 2 wrote it, before
// shared holds (golden bytes).
const snapshotV2 = "00524c534e415002808080808080808010026e310e3132372e302e302e313a36333830070201020c0b02010d020361006202020bfedcba9876543210016f0380c8afa0250d808080808080808080010f018098dc93340cfedcba9876543210016f0380c8afa0250d808080808080808080010f018098dc933401020361006202017702ffffffffffffffff010180e0ba84bf03016301010dfedcba9876543210016f0380c8afa0250d808080808080808080010f028098dc933401020163010178040000000000000005011202fd36a396"

// snapshotV3 is fullState, without multi-locks, as version 3 wrote it,
// before multi-locks (golden bytes).
const snapshotV3 = "00524c534e415003808080808080808010026e310e3132372e302e302e313a36333830070201020c0b02010d020361006202020bfedcba9876543210016f0380c8afa0250d808080808080808080011f018098dc93340cfedcba9876543210016f0380c8afa0250d808080808080808080011f018098dc933401020361006202017702ffffffffffffffff030180e0ba84bf030b016301010dfedcba9876543210016f0380c8afa0250d808080808080808080011f028098dc93340102016301017804000000000000000503120280808080802036b9fd29"

// snapshotV4 is fullState, without limits, as version 4 wrote it, before
// replicated limits (golden bytes).
const snapshotV4 = "00524c534e415004808080808080808010026e310e3132372e302e302e313a36333830070201020c0b02010d020361006202020bfedcba9876543210016f0380c8afa0250d808080808080808080011f018098dc93340cfedcba9876543210016f0380c8afa0250d808080808080808080011f018098dc933401020361006202017702ffffffffffffffff030180e0ba84bf030b02036100620163016301010dfedcba9876543210016f0380c8afa0250d808080808080808080011f028098dc933401020163010178040000000000000005031202808080808020010163610dc4bd"

// TestSnapshot_RestoresVersion4: a snapshot written before replicated
// limits decodes to its state, with no limits.
func TestSnapshot_RestoresVersion4(t *testing.T) {
	b, err := hex.DecodeString(snapshotV4)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decodeSnapshot(version 4) = %v", err)
	}
	if want := withoutLimits(fullState()); !reflect.DeepEqual(got, want) {
		t.Fatalf("version 4:\n got %+v\nwant %+v", got, want)
	}
}

// withoutLimits returns st without limits: what a snapshot written before
// replicated limits holds.
func withoutLimits(st fsmState) fsmState {
	st.MaxWaiters, st.MaxHolds = 0, 0
	return st
}

// withoutMulti returns st without multi-lock waiters: what a snapshot
// written before multi-locks holds.
func withoutMulti(st fsmState) fsmState {
	for i := range st.Locks {
		for j := range st.Locks[i].Waiters {
			st.Locks[i].Waiters[j].Multi = nil
		}
	}
	return st
}

// TestSnapshot_RestoresVersion3: a snapshot written before multi-locks
// decodes to its state, every waiter a single request.
func TestSnapshot_RestoresVersion3(t *testing.T) {
	b, err := hex.DecodeString(snapshotV3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decodeSnapshot(version 3) = %v", err)
	}
	if want := withoutLimits(withoutMulti(fullState())); !reflect.DeepEqual(got, want) {
		t.Fatalf("version 3:\n got %+v\nwant %+v", got, want)
	}
}

// withoutModes returns st with every hold and request exclusive and no
// upgrade waiting: what a snapshot written before shared holds holds.
func withoutModes(st fsmState) fsmState {
	for i := range st.Locks {
		ls := &st.Locks[i]
		for j := range ls.Holds {
			ls.Holds[j].Shared = false
		}
		for j := range ls.Waiters {
			ls.Waiters[j].Request.Shared, ls.Waiters[j].Upgrade = false, 0
		}
	}
	return withoutMulti(st)
}

// TestSnapshot_RestoresVersion2: a snapshot written before shared holds
// decodes to its state, every hold and request exclusive.
func TestSnapshot_RestoresVersion2(t *testing.T) {
	b, err := hex.DecodeString(snapshotV2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decodeSnapshot(version 2) = %v", err)
	}
	if want := withoutLimits(withoutModes(fullState())); !reflect.DeepEqual(got, want) {
		t.Fatalf("version 2:\n got %+v\nwant %+v", got, want)
	}
}

// TestSnapshot_RestoresVersion1: a snapshot written before lock-delay
// decodes to its state, without lock-delays.
func TestSnapshot_RestoresVersion1(t *testing.T) {
	b, err := hex.DecodeString(snapshotV1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decodeSnapshot(version 1) = %v", err)
	}
	want := withoutLimits(withoutModes(fullState()))
	for i := range want.Locks {
		ls := &want.Locks[i]
		for j := range ls.Holds {
			ls.Holds[j].LockDelay, ls.Holds[j].Delayed = 0, false
		}
		for j := range ls.Waiters {
			ls.Waiters[j].Request.LockDelay = 0
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("version 1:\n got %+v\nwant %+v", got, want)
	}
}

// TestSnapshot_HoldOfAnotherLockIsRefused: a hold's name and size are its
// lock's and are not encoded; a state that disagreed would lose them.
func TestSnapshot_HoldOfAnotherLockIsRefused(t *testing.T) {
	st := fullState()
	st.Locks[1].Holds[0].Size = 9
	if err := encodeSnapshot(io.Discard, &st); err == nil {
		t.Fatal("encoded a hold whose size is not its lock's")
	}
}

func TestSnapshot_CorruptOrTruncatedIsRefused(t *testing.T) {
	st := fullState()
	good := encode(t, &st)
	for i := range good {
		if _, err := decodeSnapshot(bytes.NewReader(good[:i])); err == nil {
			t.Errorf("truncated to %d of %d bytes: decoded", i, len(good))
		}
	}
	for i := len(snapshotMagic) + 1; i < len(good); i++ {
		bad := bytes.Clone(good)
		bad[i] ^= 0x20
		if _, err := decodeSnapshot(bytes.NewReader(bad)); err == nil {
			t.Errorf("byte %d flipped: decoded", i)
		}
	}
	future := bytes.Clone(good)
	future[len(snapshotMagic)] = snapshotVersion + 1
	if _, err := decodeSnapshot(bytes.NewReader(future)); err == nil || !errors.Is(err, errBadSnapshot) {
		t.Errorf("a newer version: %v, want refused", err)
	}
	if _, err := decodeSnapshot(bytes.NewReader(append(bytes.Clone(good), 0))); err == nil {
		t.Error("trailing data: decoded")
	}
}

// TestSnapshot_RestoresTheJSONOfEarlierVersions: a cluster upgraded in
// place has JSON snapshots on disk; they restore to the same state.
func TestSnapshot_RestoresTheJSONOfEarlierVersions(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		a := NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
		g := newOpGen(seed)
		for i := 0; i < 300; i++ {
			op := g.next()
			g.learn(op, a.ApplyOp(op))
		}
		a.ApplyOp(Op{Kind: OpFailover, Now: g.now, Leader: "n2", LeaderAddr: "127.0.0.1:6381"})
		snap, _ := a.Snapshot()
		legacy, err := json.Marshal(snap.(*fsmSnapshot).st) // what Persist wrote before version 1
		if err != nil {
			t.Fatal(err)
		}
		b := NewFSM(locktable.Config{Shards: 2, FenceStart: 100}, nil)
		if err := b.Restore(io.NopCloser(bytes.NewReader(legacy))); err != nil {
			t.Fatalf("seed %d: Restore of JSON: %v", seed, err)
		}
		if sa, sb := snapshotBytes(t, a), snapshotBytes(t, b); !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: the JSON snapshot restored to another state", seed)
		}
		if id, addr := b.Leader(); id != "n2" || addr != "127.0.0.1:6381" {
			t.Fatalf("seed %d: leader %q %q after restore", seed, id, addr)
		}
	}
}

// slowSink is a sink that takes its time, like a slow disk.
type slowSink struct {
	bufferSink
	delay time.Duration
	// writing, if set, is closed by the first Write, which then waits
	// for gate to close: Persist stays in the middle of its output.
	writing, gate chan struct{}
	once          sync.Once
}

func (s *slowSink) Write(p []byte) (int, error) {
	if s.writing != nil {
		s.once.Do(func() {
			close(s.writing)
			<-s.gate
		})
	}
	time.Sleep(s.delay)
	return s.bufferSink.Write(p)
}

// TestFSM_SnapshotOfALargeTableDoesNotStallApply: with 100k holds,
// Snapshot (which Apply waits for) only copies the state; encoding runs in
// Persist while Applies go on. It reports how long Snapshot held the FSM,
// and for comparison how long the JSON encoding it used to do there takes.
func TestFSM_SnapshotOfALargeTableDoesNotStallApply(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 20_000
	}
	f := bigFSM(t, n)
	start := time.Now()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	held := time.Since(start)
	start = time.Now()
	legacy, err := json.Marshal(snap.(*fsmSnapshot).st)
	if err != nil {
		t.Fatal(err)
	}
	jsonTook := held + time.Since(start)

	// Persist to a slow sink, held in the middle of its output until the
	// Applies are done: an Apply that waited for Persist would never end
	// (a deadline catches it; timing a single Apply is no test on a
	// loaded machine).
	sink := &slowSink{delay: 200 * time.Microsecond, writing: make(chan struct{}), gate: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	persistErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		start := time.Now()
		persistErr <- snap.Persist(sink)
		t.Logf("Persist took %v (slow sink)", time.Since(start))
	}()
	<-sink.writing
	var worst time.Duration
	now := int64(1_750_000_000_000_000_000)
	applied := make(chan error, 1)
	go func() {
		for i := 0; i < 200; i++ {
			op := Op{Kind: OpAcquire, Now: now, Session: 1, Request: locktable.Request{Name: fmt.Sprintf("new:%d", i), Rand: uint64(i)}}
			entry, _ := op.Encode()
			t0 := time.Now()
			if r := f.Apply(&raft.Log{Index: uint64(i + 1), Data: entry}).(*Result); r.Err != nil {
				applied <- r.Err
				return
			}
			worst = max(worst, time.Since(t0))
		}
		applied <- nil
	}()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(sink.gate)
		t.Fatal("Applies did not finish while Persist was in the middle of its output: Apply waits for Persist")
	}
	close(sink.gate)
	wg.Wait()
	if err := <-persistErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d holds: Snapshot held the FSM %v (the JSON encoding there took %v); binary snapshot %d bytes, JSON %d bytes; slowest Apply during Persist %v",
		n, held, jsonTook, sink.Len(), len(legacy), worst)

	// What Persist wrote restores to the state captured, not to the
	// state after the Applies that ran meanwhile.
	g := NewFSM(locktable.Config{Shards: 4, FenceStart: 100}, nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if len(g.Table().State(nil).Locks) != n {
		t.Fatalf("restored %d locks, want %d", len(g.Table().State(nil).Locks), n)
	}
}

// BenchmarkFSM_Snapshot: the cost of a snapshot of 100k holds, split into
// what Apply waits for (capture) and what runs beside it (encode).
//
//	go test -run '^$' -bench FSM_Snapshot -benchtime 10x ./replica/
func BenchmarkFSM_Snapshot(b *testing.B) {
	f := bigFSM(b, 100_000)
	b.Run("capture", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := f.Snapshot(); err != nil {
				b.Fatal(err)
			}
		}
	})
	snap, _ := f.Snapshot()
	st := &snap.(*fsmSnapshot).st
	b.Run("encode-binary", func(b *testing.B) {
		var n int
		for i := 0; i < b.N; i++ {
			n = len(encode(b, st))
		}
		b.ReportMetric(float64(n), "bytes")
	})
	b.Run("encode-json", func(b *testing.B) { // the encoding before version 1, which ran under the mutex
		var n int
		for i := 0; i < b.N; i++ {
			j, err := json.Marshal(st)
			if err != nil {
				b.Fatal(err)
			}
			n = len(j)
		}
		b.ReportMetric(float64(n), "bytes")
	})
	bin := encode(b, st)
	b.Run("restore-binary", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			g := NewFSM(locktable.Config{Shards: 16}, nil)
			if err := g.Restore(io.NopCloser(bytes.NewReader(bin))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzDecodeSnapshot: whatever the bytes (a corrupt or truncated file, a
// snapshot sent by a peer), decoding returns a state or errBadSnapshot,
// never panics, and what it returns encodes again.
func FuzzDecodeSnapshot(f *testing.F) {
	st := fullState()
	var b bytes.Buffer
	if err := encodeSnapshot(&b, &st); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	v1, _ := hex.DecodeString(snapshotV1)
	f.Add(v1)
	v2, _ := hex.DecodeString(snapshotV2)
	f.Add(v2)
	v3, _ := hex.DecodeString(snapshotV3)
	f.Add(v3)
	f.Add([]byte(`{"Locks":[]}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := decodeSnapshot(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, errBadSnapshot) {
				t.Fatalf("error %v is not errBadSnapshot", err)
			}
			return
		}
		encodeSnapshot(io.Discard, &got) // must not panic; may refuse an inconsistent state
	})
}

// A node restarted from a snapshot has applied the snapshot's entries,
// and says so (INFO's raft_applied_index, CLUSTER SHARDS' offset) before
// any new entry is applied: the FSM's own count starts again at 0.
func TestNode_AppliedAfterARestartFromASnapshotIsTheSnapshots(t *testing.T) {
	logs, stable, snaps := raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	start := func(bootstrap []raft.Server) *Node {
		_, tr := raft.NewInmemTransport("solo")
		n, err := NewNode(NodeConfig{
			ID: "solo", Transport: tr, Logs: logs, Stable: stable, Snapshots: snaps,
			Table: locktable.Config{Shards: 1}, Bootstrap: bootstrap,
			HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := start([]raft.Server{{ID: "solo", Address: "solo"}})
	c := &testCluster{t: t, nodes: []*Node{n}, down: map[int]bool{}}
	c.propose(c.leader(), Op{Kind: OpOpen, Now: 1, Session: 7})
	c.propose(0, Op{Kind: OpAcquire, Now: 1, Session: 7, Request: locktable.Request{Name: "a", Rand: 1}})
	if err := n.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	want := n.FSM.Applied()
	if want == 0 || n.Applied() != want {
		t.Fatalf("before the restart: FSM applied %d, node %d; want equal and > 0", want, n.Applied())
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	n = start(nil)
	defer n.Shutdown()
	if got := n.Applied(); got < want {
		t.Fatalf("restarted from the snapshot at %d: applied %d", want, got)
	}
	if _, ok := n.FSM.Table().Lock("a", 1); !ok {
		t.Fatal("the snapshot's hold is not in the restored table")
	}
}
