package locktable

import (
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
