package locktable

import (
	"slices"
	"strings"
	"testing"
)

// A state that lists a lock twice is refused rather than loaded into an
// index that would then hold the name twice.
func TestLoadState_LockTwice(t *testing.T) {
	lock := LockState{Name: "a", Size: 1, Holds: []HoldState{{HoldRecord: HoldRecord{
		Name: "a", Size: 1, Key: Key{Fence: 1, Rand: 1}, Count: 1, TTL: ms, Deadline: 2 * ms, Detached: true,
	}}}}
	second := lock
	second.Holds = []HoldState{{HoldRecord: lock.Holds[0].HoldRecord}}
	second.Holds[0].Key.Fence = 2
	_, err := New(Config{}).LoadState(State{Fence: 2, Locks: []LockState{lock, second}}, nil)
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("LoadState(lock twice) = %v; want an error", err)
	}
}

// State and LoadState carry holds of every kind, waiters and session lists
// over to a table with another shard count that dumps the same.
func TestLoadState_RoundTrip(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	s1, s2 := f.session(), f.session()
	f.mustGrant(s1, Request{Name: "bound", TTL: 10 * ms, Owner: "o"})
	f.mustGrant(s1, Request{Name: "other"})
	f.mustGrant(s2, Request{Name: "detached", TTL: 10 * ms, Detach: true})
	f.mustGrant(s2, Request{Name: "sem", Size: 2})
	f.mustGrant(s1, Request{Name: "sem", Size: 2})
	f.mustQueue(s2, Request{Name: "bound"})
	long := strings.Repeat("l", maxArenaName+5)
	f.mustGrant(s2, Request{Name: long})

	st := f.tb.State(nil)
	tb := New(Config{Shards: 2})
	sessions, err := tb.LoadState(st, nil)
	if err != nil {
		t.Fatalf("LoadState = %v", err)
	}
	checkInvariants(t, tb, sessions[s1.ID], sessions[s2.ID])
	wantEqual(t, "loaded dump", tb.Dump(f.now), f.tb.Dump(f.now))
	wantEqual(t, "bound of s1", sessions[s1.ID].Bound(), 3)
	wantEqual(t, "s2 waits", sessions[s2.ID].Waiting(), true)
}

// State and LoadState carry slots in lock-delay (with their deadlines),
// holds' and waiters' lock-delays: both tables then end the delays alike.
func TestLoadState_RoundTripKeepsLockDelays(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	s1, s2, s3 := f.session(), f.session(), f.session()
	f.mustGrant(s1, Request{Name: "d", LockDelay: 10 * ms})
	f.mustGrant(s2, Request{Name: "h", LockDelay: 20 * ms})
	f.mustQueue(s3, Request{Name: "d", LockDelay: 30 * ms})
	f.closeSession(s1)
	f.wantDelayed("d", 0, 1)

	st := f.tb.State(nil)
	tb := New(Config{Shards: 2})
	sessions, err := tb.LoadState(st, nil)
	if err != nil {
		t.Fatalf("LoadState = %v", err)
	}
	checkInvariants(t, tb, sessions[s2.ID], sessions[s3.ID])
	wantEqual(t, "loaded dump", tb.Dump(f.now), f.tb.Dump(f.now))
	for _, step := range []struct {
		advance int64
		close   *Session
	}{{advance: 10 * ms}, {close: s3}, {close: s2}, {advance: 30 * ms}} {
		f.advance(step.advance)
		var ev Events
		if step.close != nil {
			f.closeSession(step.close)
			tb.CloseSession(&ev, sessions[step.close.ID], f.now)
		} else {
			f.expire()
			tb.Expire(&ev, f.now)
		}
		checkInvariants(t, tb)
		wantEqual(t, "dump", tb.Dump(f.now), f.tb.Dump(f.now))
		wantEqual(t, "grants", len(ev.Grants), len(f.ev.Grants))
	}
	f.wantEmpty()
}

func TestLoadState_RefusesABoundSlotInLockDelay(t *testing.T) {
	slot := HoldState{HoldRecord: HoldRecord{Name: "a", Size: 1, Key: Key{Fence: 1}, Count: 1, Deadline: 5, Delayed: true}, SessionID: 1}
	st := State{Fence: 1, Sessions: []SessionState{{ID: 1, Fences: []uint64{1}}}, Locks: []LockState{{Name: "a", Size: 1, Holds: []HoldState{slot}}}}
	if _, err := New(Config{}).LoadState(st, nil); err == nil {
		t.Fatal("LoadState of a slot in lock-delay bound to a session succeeded; want an error")
	}
	st.Locks[0].Holds[0].SessionID, st.Sessions = 0, nil
	tb := New(Config{})
	if _, err := tb.LoadState(st, nil); err != nil {
		t.Fatalf("LoadState of a slot in lock-delay = %v", err)
	}
	checkInvariants(t, tb)
	if li, _ := tb.Lock("a", 0); li.Delayed != 1 || len(li.Holds) != 0 {
		t.Fatalf("loaded lock %+v; want one slot in lock-delay, no hold", li)
	}
}

// State and LoadState carry modes: shared holds and slots, shared
// waiters and a waiting upgrade (by its hold's fence), so that both
// tables then grant the upgrade alike, with the same key.
func TestLoadState_RoundTripKeepsModesAndUpgrades(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	a, b, c, w, r := f.session(), f.session(), f.session(), f.session(), f.session()
	ka := f.mustGrant(a, Request{Name: "x", Shared: true, Owner: "o", TTL: 50 * ms})
	kb := f.mustGrant(b, sharedReq("x"))
	f.mustGrant(c, Request{Name: "x", Shared: true, LockDelay: 10 * ms})
	f.closeSession(c) // a shared slot in lock-delay
	f.mustQueue(w, Request{Name: "x"})
	f.mustQueue(r, sharedReq("x"))
	if _, out, err := f.upgrade(a, "x", ka); out != Queued || err != nil {
		t.Fatalf("Upgrade = %v, %v; want Queued", outcomeName(out), err)
	}
	f.mustGrant(b, Request{Name: "y"})

	st := f.tb.State(nil)
	if ws := st.Locks[0].Waiters[0]; ws.Upgrade != ka.Fence || ws.SessionID != a.ID {
		t.Fatalf("State's first waiter of x: %+v; want the upgrade of fence %d", ws, ka.Fence)
	}
	tb := New(Config{Shards: 2})
	sessions, err := tb.LoadState(st, nil)
	if err != nil {
		t.Fatalf("LoadState = %v", err)
	}
	checkInvariants(t, tb, sessions[a.ID], sessions[b.ID], sessions[w.ID], sessions[r.ID])
	wantEqual(t, "loaded dump", tb.Dump(f.now), f.tb.Dump(f.now))
	wantEqual(t, "a waits", sessions[a.ID].Waiting(), true)

	// The other reader leaves, then the slot's delay ends: the upgrade
	// is granted on both, alike.
	var ev Events
	f.mustUnlock("x", kb)
	wantErr(t, "Unlock on the loaded table", tb.Unlock(&ev, "x", kb, f.now), nil)
	f.advance(10 * ms)
	f.expire()
	ev.Reset()
	tb.Expire(&ev, f.now)
	checkInvariants(t, tb)
	wantEqual(t, "dump", tb.Dump(f.now), f.tb.Dump(f.now))
	if len(ev.Grants) != 1 || !ev.Grants[0].Upgrade || ev.Grants[0].Key != f.ev.Grants[0].Key || ev.Grants[0].Session != sessions[a.ID] {
		t.Fatalf("grants of the loaded table %+v; want the upgrade as the original's %+v", ev.Grants, f.ev.Grants)
	}
}

// LoadState refuses modes that cannot be: an exclusive hold beside
// another, a shared hold on a semaphore, an upgrade that is not first or
// names no shared hold of its lock.
func TestLoadState_RefusesImpossibleModes(t *testing.T) {
	hold := func(fence uint64, size uint32, shared bool) HoldState {
		return HoldState{HoldRecord: HoldRecord{Name: "a", Size: size, Key: Key{Fence: fence}, Count: 1, TTL: ms, Deadline: 5 * ms, Detached: true, Shared: shared}}
	}
	upgrade := WaiterState{SessionID: 1, Request: Request{Name: "a", Rand: 1}, Upgrade: 1}
	reader := WaiterState{SessionID: 2, Request: Request{Name: "a", Size: 1, Shared: true}}
	for _, tc := range []struct {
		name    string
		size    uint32
		holds   []HoldState
		waiters []WaiterState
		ok      bool
	}{
		{"readers", 1, []HoldState{hold(1, 1, true), hold(2, 1, true)}, nil, true},
		{"readers and an upgrade", 1, []HoldState{hold(1, 1, true), hold(2, 1, true)}, []WaiterState{upgrade, reader}, true},
		{"a writer beside a reader", 1, []HoldState{hold(1, 1, true), hold(2, 1, false)}, nil, false},
		{"a reader beside a writer", 1, []HoldState{hold(1, 1, false), hold(2, 1, true)}, nil, false},
		{"a reader on a semaphore", 2, []HoldState{hold(1, 2, true)}, nil, false},
		{"an upgrade behind a reader", 1, []HoldState{hold(1, 1, true), hold(2, 1, true)}, []WaiterState{reader, upgrade}, false},
		{"an upgrade of an exclusive hold", 1, []HoldState{hold(1, 1, false)}, []WaiterState{upgrade}, false},
		{"an upgrade of no hold", 1, []HoldState{hold(2, 1, true), hold(3, 1, true)}, []WaiterState{upgrade}, false},
		{"a writer waiting for a free place", 2, []HoldState{hold(1, 2, false)}, []WaiterState{{SessionID: 2, Request: Request{Name: "a", Size: 2}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := State{Fence: 3, Sessions: []SessionState{{ID: 1}, {ID: 2}}, Locks: []LockState{{Name: "a", Size: tc.size, Holds: tc.holds, Waiters: tc.waiters}}}
			tb := New(Config{})
			_, err := tb.LoadState(st, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("LoadState = %v; want ok: %v", err, tc.ok)
			}
		})
	}
}

// State and LoadState carry waiting multi-locks (their legs, linked),
// so that both tables then grant them alike.
func TestLoadState_RoundTripKeepsMultiLocks(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	h, a, b := f.session(), f.session(), f.session()
	ky := f.mustGrant(h, Request{Name: "y"})
	f.mustQueueMulti(a, Request{Owner: "o", TTL: 50 * ms}, "x", "y", "z")
	f.mustQueue(b, Request{Name: "x"})
	st := f.tb.State(nil)
	tb := New(Config{Shards: 2})
	sessions, err := tb.LoadState(st, nil)
	if err != nil {
		t.Fatalf("LoadState = %v", err)
	}
	checkInvariants(t, tb, sessions[h.ID], sessions[a.ID], sessions[b.ID])
	wantEqual(t, "loaded dump", tb.Dump(f.now), f.tb.Dump(f.now))
	wantEqual(t, "a waits", sessions[a.ID].Waiting(), true)
	f.mustUnlock("y", ky)
	var ev Events
	wantErr(t, "Unlock on the loaded table", tb.Unlock(&ev, "y", ky, f.now), nil)
	checkInvariants(t, tb)
	wantEqual(t, "dump after the grant", tb.Dump(f.now), f.tb.Dump(f.now))
	if len(ev.Grants) != 1 || !slices.Equal(ev.Grants[0].Names, []string{"x", "y", "z"}) {
		t.Fatalf("grants on the loaded table: %+v; want the multi-lock's", ev.Grants)
	}
	// A state whose multi-lock lacks a leg is refused.
	st.Locks = slices.DeleteFunc(st.Locks, func(ls LockState) bool { return ls.Name == "z" })
	if _, err := New(Config{}).LoadState(st, nil); err == nil {
		t.Fatal("LoadState of a multi-lock without its leg on z succeeded")
	}
}
