package locktable

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// replay applies journaled changes to a map of records by fence, as a store
// would.
func replay(dst map[uint64]HoldRecord, changes []Change) {
	for _, c := range changes {
		if c.Delete {
			delete(dst, c.Record.Key.Fence)
		} else {
			dst[c.Record.Key.Fence] = c.Record
		}
	}
}

// sortedRecords returns the records in Snapshot's order: by name, then fence.
func sortedRecords(m map[uint64]HoldRecord) []HoldRecord {
	out := make([]HoldRecord, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b HoldRecord) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Key.Fence, b.Key.Fence))
	})
	return out
}

// TestJournal_ReplayEqualsSnapshot: replaying the journal, drained after
// every op of a random sequence, always gives exactly the table's Snapshot.
// A change that reached the table but not the journal would be lost by the
// store.
func TestJournal_ReplayEqualsSnapshot(t *testing.T) {
	seeds := 300
	if raceEnabled || testing.Short() {
		seeds = 60
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		cfg := modelConfigs[seed%uint64(len(modelConfigs))]
		r := newRunner(cfg, 5)
		r.tb.SetJournaling(true)
		gen := newOpGen(rand.New(rand.NewPCG(seed, 0x6a6f75726e616c)), 5)
		stored := make(map[uint64]HoldRecord)
		var log []logEntry
		var changes []Change
		for step := range 100 {
			o := gen.next(r.now, nextDeadline(r.tb))
			res := r.apply(o)
			gen.learnFrom(o, r)
			log = append(log, logEntry{now: r.now, op: o, res: res})
			changes = r.tb.DrainJournal(changes[:0])
			replay(stored, changes)
			if got, want := sortedRecords(stored), r.tb.Snapshot(); !slices.Equal(got, want) {
				t.Fatalf("seed %d, step %d (%v): replayed journal\n%+v\nwant the snapshot\n%+v\nop log:\n%s",
					seed, step, o, got, want, formatLog(cfg, log))
			}
		}
	}
}

func TestJournal_OffRecordsNothingAndDiscardsPending(t *testing.T) {
	f := newFixture(t, Config{Shards: 2})
	s := f.session()
	f.mustGrant(s, Request{Name: "before"})
	wantEqual(t, "changes before journaling", len(f.tb.DrainJournal(nil)), 0)

	f.tb.SetJournaling(true)
	k := f.mustGrant(s, Request{Name: "a", Owner: "o", TTL: 10 * ms})
	f.mustGrant(s, Request{Name: "a", Owner: "o"})
	f.mustUnlock("a", k)
	f.mustUnlock("a", k)
	got := f.tb.DrainJournal(nil)
	var kinds []string
	for _, c := range got {
		kinds = append(kinds, fmt.Sprintf("%s/%d/del=%v/count=%d", c.Record.Name, c.Record.Key.Fence, c.Delete, c.Record.Count))
	}
	wantSlice(t, "changes", kinds, []string{
		fmt.Sprintf("a/%d/del=false/count=1", k.Fence),
		fmt.Sprintf("a/%d/del=false/count=2", k.Fence),
		fmt.Sprintf("a/%d/del=false/count=1", k.Fence),
		fmt.Sprintf("a/%d/del=true/count=0", k.Fence),
	})
	wantEqual(t, "changes after a drain", len(f.tb.DrainJournal(nil)), 0)

	f.mustGrant(s, Request{Name: "b"})
	f.tb.SetJournaling(false)
	wantEqual(t, "changes after journaling off", len(f.tb.DrainJournal(nil)), 0)
	f.mustGrant(s, Request{Name: "c"})
	wantEqual(t, "changes while off", len(f.tb.DrainJournal(nil)), 0)
}

func TestRestore_BringsBackHoldsBoundOnesAsOrphans(t *testing.T) {
	const grace = 100 * ms
	old := newFixture(t, Config{Shards: 4, FenceStart: 500})
	s := old.session()
	plain := old.mustGrant(s, Request{Name: "plain"})
	short := old.mustGrant(s, Request{Name: "short", TTL: 20 * ms})
	long := old.mustGrant(s, Request{Name: "long", TTL: 10_000 * ms})
	reent := old.mustGrant(s, Request{Name: "reent", Owner: "o", Size: 2})
	old.mustGrant(s, Request{Name: "reent", Owner: "o", Size: 2})
	det := old.mustGrant(s, Request{Name: "det", TTL: 5_000 * ms, Detach: true})
	old.mustQueue(old.session(), Request{Name: "plain"}) // waiters are not persisted
	recs := old.tb.Snapshot()
	wantEqual(t, "snapshot records", len(recs), 5)

	f := newFixture(t, Config{Shards: 8})
	f.now = old.now + 5*ms
	restored, dropped := f.tb.Restore(recs, f.now, grace)
	f.check()
	wantEqual(t, "restored", restored, 5)
	wantEqual(t, "dropped", dropped, 0)
	wantEqual(t, "snapshot after restore", len(f.tb.Snapshot()), 5)
	if last := f.tb.LastFence(); last < det.Fence {
		t.Fatalf("LastFence() = %d; want at least the largest restored fence %d", last, det.Fence)
	}
	if k := f.mustGrant(f.session(), Request{Name: "fresh"}); k.Fence <= det.Fence {
		t.Fatalf("fresh fence %d; want above every restored fence (%d)", k.Fence, det.Fence)
	}

	for _, tc := range []struct {
		name       string
		key        Key
		wantOrphan bool
		wantTTL    int64 // remaining, as listed
		wantCount  uint32
	}{
		{"plain", plain, true, grace, 1},
		{"short", short, true, 15 * ms, 1}, // its own deadline comes before the grace
		{"long", long, true, grace, 1},
		{"reent", reent, true, grace, 2},
		{"det", det, false, 4_995 * ms, 1},
	} {
		li := f.lockInfo(tc.name)
		h := li.Holds[0]
		wantEqual(t, tc.name+" fence", h.Fence, tc.key.Fence)
		wantEqual(t, tc.name+" orphan", h.Orphan, tc.wantOrphan)
		wantEqual(t, tc.name+" detached", h.Detached, !tc.wantOrphan)
		wantEqual(t, tc.name+" session", h.SessionID, int64(-1))
		wantEqual(t, tc.name+" ttl", h.TTL, tc.wantTTL)
		wantEqual(t, tc.name+" count", h.Count, tc.wantCount)
		wantEqual(t, tc.name+" age", h.Age, 5*ms)
	}
	f.wantNoLock("missing")
	wantEqual(t, "restored waiters", len(f.lockInfo("plain").Waiters), 0)

	// A Renew by key adopts an orphan and gives it back its own TTL.
	adopter := f.session()
	for _, tc := range []struct {
		name       string
		key        Key
		wantTTL    int64 // Renew's result
		wantRemain int64 // Check's
	}{
		{"plain", plain, 0, -1},
		{"long", long, 10_000 * ms, 10_000 * ms},
	} {
		got, err := f.renew(adopter, tc.name, tc.key, 0)
		wantErr(t, "Renew "+tc.name, err, nil)
		wantEqual(t, "Renew "+tc.name, got, tc.wantTTL)
		remain, err := f.checkKey(tc.name, tc.key)
		wantErr(t, "Check "+tc.name, err, nil)
		wantEqual(t, "Check "+tc.name, remain, tc.wantRemain)
		li := f.lockInfo(tc.name)
		wantEqual(t, tc.name+" adopted session", li.Holds[0].SessionID, int64(adopter.ID))
		wantEqual(t, tc.name+" still orphan", li.Holds[0].Orphan, false)
	}
	wantEqual(t, "adopter bound", adopter.Bound(), 2)
	// A closed session adopts nothing.
	closed := f.session()
	f.closeSession(closed)
	_, err := f.renew(closed, "reent", reent, 0)
	wantErr(t, "Renew by a closed session", err, nil)
	wantEqual(t, "orphan after a closed session's Renew", f.lockInfo("reent").Holds[0].Orphan, true)

	// Orphans nobody adopts go at the end of the grace; adopted ones stay.
	f.advance(grace)
	f.expire()
	f.wantNoLock("short")
	f.wantNoLock("reent")
	for _, r := range f.ev.Releases {
		wantEqual(t, "release reason of "+r.Name, r.Reason, ReasonExpired)
		wantEqual(t, "release session of "+r.Name, r.SessionID, uint64(0))
	}
	f.lockInfo("plain")
	f.lockInfo("long")
	f.closeSession(adopter)
	f.wantNoLock("plain")
	f.wantNoLock("long")
}

func TestRestore_DropsExpiredAndContradictoryRecords(t *testing.T) {
	const now, grace = 1_000 * ms, 100 * ms
	valid := HoldRecord{Name: "a", Size: 1, Key: Key{Fence: 7, Rand: 1}, Count: 1, Granted: now - ms, Bound: true}
	with := func(change func(r *HoldRecord)) HoldRecord {
		r := valid
		r.Key.Fence = 8
		change(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		recs []HoldRecord
		want int // restored; the rest are dropped
	}{
		{"valid", []HoldRecord{valid}, 1},
		{"empty name", []HoldRecord{with(func(r *HoldRecord) { r.Name = "" })}, 0},
		{"size 0", []HoldRecord{with(func(r *HoldRecord) { r.Size = 0 })}, 0},
		{"count 0", []HoldRecord{with(func(r *HoldRecord) { r.Count = 0 })}, 0},
		{"deadline passed", []HoldRecord{with(func(r *HoldRecord) { r.Deadline = now; r.TTL = ms })}, 0},
		{"detached deadline passed", []HoldRecord{with(func(r *HoldRecord) {
			r.Deadline, r.TTL, r.Detached, r.Bound = now-1, ms, true, false
		})}, 0},
		{"detached without deadline", []HoldRecord{with(func(r *HoldRecord) { r.Detached, r.Bound = true, false })}, 0},
		{"size differs from an earlier record", []HoldRecord{valid, with(func(r *HoldRecord) { r.Size = 2 })}, 1},
		{"more holds than size", []HoldRecord{valid, with(func(*HoldRecord) {})}, 1},
		{"semaphore", []HoldRecord{
			with(func(r *HoldRecord) { r.Size = 2 }),
			with(func(r *HoldRecord) { r.Size, r.Key.Fence = 2, 9 }),
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(Config{})
			restored, dropped := tb.Restore(tc.recs, now, grace)
			checkInvariants(t, tb)
			wantEqual(t, "restored", restored, tc.want)
			wantEqual(t, "dropped", dropped, len(tc.recs)-tc.want)
			wantEqual(t, "holds", tb.Stats().Holds, tc.want)
			if tc.want == 0 {
				wantEqual(t, "locks", tb.Stats().Locks, 0)
			}
			// Even a dropped record's fence is never issued again.
			if last := tb.LastFence(); last < tc.recs[len(tc.recs)-1].Key.Fence {
				t.Fatalf("LastFence() = %d; want at least %d", last, tc.recs[len(tc.recs)-1].Key.Fence)
			}
		})
	}
}

// A restart keeps a slot in lock-delay with its own deadline (no grace, no
// orphan) and a hold's lock-delay; a slot whose delay ended while the
// server was down is dropped.
func TestRestore_KeepsLockDelays(t *testing.T) {
	const grace = 100 * ms
	old := newFixture(t, Config{Shards: 4})
	t0 := old.now
	s1, s2, s3 := old.session(), old.session(), old.session()
	old.mustGrant(s1, Request{Name: "slow", LockDelay: 500 * ms})
	old.mustGrant(s2, Request{Name: "quick", LockDelay: 10 * ms})
	held := old.mustGrant(s3, Request{Name: "held", LockDelay: 30 * ms})
	old.closeSession(s1)
	old.closeSession(s2)
	recs := old.tb.Snapshot()
	var delayed []string
	for _, r := range recs {
		if r.Delayed {
			delayed = append(delayed, fmt.Sprintf("%s until %d", r.Name, r.Deadline-t0))
			if r.Bound || r.Detached || r.Owner != "" || r.TTL != 0 {
				t.Fatalf("record of a slot in lock-delay %+v: want neither bound nor detached, no owner, no TTL", r)
			}
		} else {
			wantEqual(t, "lock-delay of "+r.Name, r.LockDelay, 30*ms)
		}
	}
	wantSlice(t, "slots in the snapshot", delayed, []string{fmt.Sprintf("quick until %d", 10*ms), fmt.Sprintf("slow until %d", 500*ms)})

	f := newFixture(t, Config{Shards: 2})
	f.now = t0 + 20*ms
	restored, dropped := f.tb.Restore(recs, f.now, grace)
	f.check()
	wantEqual(t, "restored", restored, 2)
	wantEqual(t, "dropped", dropped, 1)
	f.wantNoLock("quick")
	f.wantDelayed("slow", 0, 1)
	wantEqual(t, "orphan", f.lockInfo("held").Holds[0].Orphan, true)

	// The grace ends: "held", never adopted, expires into its own delay;
	// "slow" keeps its deadline.
	f.advance(grace)
	f.expire()
	wantSlice(t, "releases at the grace's end", f.released(), []Reason{ReasonExpired})
	wantEqual(t, "released", f.ev.Releases[0].Fence, held.Fence)
	f.wantDelayed("held", 0, 1)
	f.wantDelayed("slow", 0, 1)
	f.advance(30 * ms)
	f.expire()
	f.wantNoLock("held")
	f.wantDelayed("slow", 0, 1)
	f.now = t0 + 500*ms
	f.expire()
	f.wantEmpty()
}

func TestRestore_DropsBadLockDelays(t *testing.T) {
	const now = 1_000 * ms
	slot := HoldRecord{Name: "a", Size: 1, Key: Key{Fence: 7, Rand: 1}, Count: 1, Granted: now - ms, Deadline: now + ms, Delayed: true}
	for _, tc := range []struct {
		name string
		rec  HoldRecord
	}{
		{"slot without deadline", func() HoldRecord { r := slot; r.Deadline = 0; return r }()},
		{"slot whose delay is over", func() HoldRecord { r := slot; r.Deadline = now; return r }()},
		{"negative lock-delay", HoldRecord{Name: "a", Size: 1, Key: Key{Fence: 7}, Count: 1, Bound: true, LockDelay: -1}},
		{"lock-delay too long", HoldRecord{Name: "a", Size: 1, Key: Key{Fence: 7}, Count: 1, Bound: true, LockDelay: MaxLockDelay + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(Config{})
			restored, dropped := tb.Restore([]HoldRecord{tc.rec}, now, 100*ms)
			checkInvariants(t, tb)
			if restored != 0 || dropped != 1 || tb.Stats() != (Stats{}) {
				t.Fatalf("Restore = %d, %d, stats %+v; want the record dropped", restored, dropped, tb.Stats())
			}
		})
	}
}
