package locktable

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestNew_ShardsRoundedUpToPowerOfTwo(t *testing.T) {
	for _, tc := range []struct{ shards, want int }{
		{0, 1}, {1, 1}, {2, 2}, {3, 4}, {8, 8}, {9, 16},
	} {
		if got := New(Config{Shards: tc.shards}).Shards(); got != tc.want {
			t.Errorf("New(Shards: %d).Shards() = %d; want %d", tc.shards, got, tc.want)
		}
	}
}

func TestAcquire_GrantBusyQueued(t *testing.T) {
	for _, tc := range []struct {
		name      string
		held      bool // another session holds "a" first
		wait      bool
		want      Outcome
		wantStats Stats
	}{
		{"free lock is granted", false, false, Granted, Stats{Locks: 1, Holds: 1}},
		{"free lock is granted when waiting is allowed", false, true, Granted, Stats{Locks: 1, Holds: 1}},
		{"held lock without wait is busy", true, false, Busy, Stats{Locks: 1, Holds: 1}},
		{"held lock with wait is queued", true, true, Queued, Stats{Locks: 1, Holds: 1, Waiters: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			if tc.held {
				f.mustGrant(f.session(), Request{Name: "a"})
			}
			s := f.session()
			k, got, err := f.acquire(s, Request{Name: "a"}, tc.wait)
			wantErr(t, "Acquire", err, nil)
			wantEqual(t, "outcome", got, tc.want)
			wantEqual(t, "key is zero", k.IsZero(), tc.want != Granted)
			wantEqual(t, "session waiting", s.Waiting(), tc.want == Queued)
			wantEqual(t, "session bound", s.Bound(), int(boolInt(tc.want == Granted)))
			f.wantStats(tc.wantStats)
			wantEqual(t, "grants in events", len(f.ev.Grants), 0)
		})
	}
}

func TestAcquire_InvalidRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want error
	}{
		{"empty name", Request{Name: ""}, ErrBadRequest},
		{"negative TTL", Request{Name: "a", TTL: -1}, ErrBadRequest},
		{"detach without TTL", Request{Name: "a", Detach: true}, ErrDetachNeedsTTL},
		{"detach without TTL, with owner", Request{Name: "a", Detach: true, Owner: "o"}, ErrDetachNeedsTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := f.session()
			for _, wait := range []bool{false, true} {
				_, _, err := f.acquire(s, tc.req, wait)
				wantErr(t, fmt.Sprintf("Acquire(wait=%v)", wait), err, tc.want)
			}
			f.wantEmpty()
			wantEqual(t, "last fence", f.tb.LastFence(), 0)
		})
	}
}

func TestAcquire_DetachWithTTLIsGranted(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	f.mustGrant(s, Request{Name: "a", Detach: true, TTL: 10 * ms})
	wantEqual(t, "bound holds", s.Bound(), 0)
	li := f.lockInfo("a")
	wantEqual(t, "detached", li.Holds[0].Detached, true)
	wantEqual(t, "session id", li.Holds[0].SessionID, int64(-1))
}

func TestAcquire_WaitersGrantedInFIFOOrder(t *testing.T) {
	f := newFixture(t, Config{})
	holder := f.session()
	k := f.mustGrant(holder, Request{Name: "a"})
	var want []uint64
	for range 12 {
		s := f.session()
		f.mustQueue(s, Request{Name: "a"})
		want = append(want, s.ID)
	}
	li := f.lockInfo("a")
	var queued []uint64
	for _, w := range li.Waiters {
		queued = append(queued, uint64(w.SessionID))
	}
	wantSlice(t, "listed waiters", queued, want)

	var got []uint64
	lastFence := k.Fence
	for range want {
		f.mustUnlock("a", k)
		if len(f.ev.Grants) != 1 {
			t.Fatalf("Unlock granted %d waiters; want 1", len(f.ev.Grants))
		}
		g := f.ev.Grants[0]
		got = append(got, g.Session.ID)
		wantEqual(t, "grant name", g.Name, "a")
		if g.Key.Fence <= lastFence {
			t.Fatalf("granted fence %d after %d; want strictly larger", g.Key.Fence, lastFence)
		}
		lastFence = g.Key.Fence
		wantEqual(t, "granted session bound", g.Session.Bound(), 1)
		wantEqual(t, "granted session waiting", g.Session.Waiting(), false)
		k = g.Key
	}
	wantSlice(t, "grant order", got, want)
	f.mustUnlock("a", k)
	wantEqual(t, "grants after last unlock", len(f.ev.Grants), 0)
	f.wantEmpty()
}

func TestAcquire_SemaphoreNeverExceedsSize(t *testing.T) {
	const size = 3
	f := newFixture(t, Config{})
	type holder struct {
		id  uint64
		key Key
	}
	var holders []holder
	var queue []uint64
	for i := range 10 {
		s := f.session()
		k, out, err := f.acquire(s, Request{Name: "sem", Size: size}, true)
		wantErr(t, "Acquire", err, nil)
		if i < size {
			wantEqual(t, fmt.Sprintf("outcome of request %d", i), out, Granted)
			holders = append(holders, holder{s.ID, k})
		} else {
			wantEqual(t, fmt.Sprintf("outcome of request %d", i), out, Queued)
			queue = append(queue, s.ID)
		}
	}
	// Release holders from the middle, the back and the front in turn; each
	// release admits exactly the next waiter.
	for step := 0; len(holders) > 0; step++ {
		i := step % len(holders)
		h := holders[i]
		holders = append(holders[:i:i], holders[i+1:]...)
		f.mustUnlock("sem", h.key)
		if len(queue) > 0 {
			wantSlice(t, "granted", f.grantedTo(), queue[:1])
			holders = append(holders, holder{queue[0], f.ev.Grants[0].Key})
			queue = queue[1:]
		} else {
			wantEqual(t, "grants", len(f.ev.Grants), 0)
		}
		if len(holders) == 0 {
			f.wantNoLock("sem")
			break
		}
		li := f.lockInfo("sem")
		if len(li.Holds) > size {
			t.Fatalf("%d holders; want at most %d", len(li.Holds), size)
		}
		wantEqual(t, "holders", len(li.Holds), len(holders))
		wantEqual(t, "waiters", len(li.Waiters), len(queue))
	}
	f.wantEmpty()
}

func TestAcquire_SizeMismatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    uint32 // of the existing lock, held once by owner "o"
		reqSize uint32
		owner   string // the request's owner; "o" re-enters
		wantErr error
		wantOut Outcome
	}{
		{"size 3 asked as 1", 3, 1, "", ErrSizeMismatch, 0},
		{"size 3 asked as default", 3, 0, "", ErrSizeMismatch, 0},
		{"size 1 asked as 2", 1, 2, "", ErrSizeMismatch, 0},
		{"re-entry with another size", 2, 3, "o", ErrSizeMismatch, 0},
		{"default size asked as 1", 0, 1, "", nil, Queued},
		{"size 3 asked as 3", 3, 3, "", nil, Granted},
		{"re-entry with the same size", 2, 2, "o", nil, Granted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			f.mustGrant(f.session(), Request{Name: "a", Size: tc.size, Owner: "o"})
			fence := f.tb.LastFence()
			_, out, err := f.acquire(f.session(), Request{Name: "a", Size: tc.reqSize, Owner: tc.owner}, true)
			wantErr(t, "Acquire", err, tc.wantErr)
			wantEqual(t, "outcome", out, tc.wantOut)
			if tc.wantErr != nil {
				var sm *SizeMismatchError
				if !errors.As(err, &sm) {
					t.Fatalf("error %T; want a *SizeMismatchError", err)
				}
				wantEqual(t, "mismatch", *sm, SizeMismatchError{Have: max(tc.size, 1), Want: max(tc.reqSize, 1)})
				wantEqual(t, "last fence", f.tb.LastFence(), fence)
				li := f.lockInfo("a")
				wantEqual(t, "holds", len(li.Holds), 1)
				wantEqual(t, "count", li.Holds[0].Count, uint32(1))
				wantEqual(t, "waiters", len(li.Waiters), 0)
			}
		})
	}
}

func TestAcquire_SizeOutlivesTheFirstHolder(t *testing.T) {
	// The first holder fixes the size; it stays while the lock exists, even
	// after that holder left and a granted waiter holds the lock.
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a", Size: 1})
	f.mustQueue(f.session(), Request{Name: "a", Size: 1})
	f.mustUnlock("a", k)
	_, _, err := f.acquire(f.session(), Request{Name: "a", Size: 2}, true)
	wantErr(t, "Acquire size 2", err, ErrSizeMismatch)
}

func TestAcquire_ReentryByOwnerCountsUpAndDown(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	k := f.mustGrant(s, Request{Name: "a", Owner: "me"})
	waiter := f.session()
	f.mustQueue(waiter, Request{Name: "a"})
	fence := f.tb.LastFence()
	for i := 2; i <= 3; i++ {
		got := f.mustGrant(s, Request{Name: "a", Owner: "me"})
		wantEqual(t, "re-entry key", got, k)
		wantEqual(t, "count", f.lockInfo("a").Holds[0].Count, uint32(i))
	}
	wantEqual(t, "last fence after re-entries", f.tb.LastFence(), fence)
	wantEqual(t, "bound holds", s.Bound(), 1)
	wantStats := Stats{Locks: 1, Holds: 1, Waiters: 1}
	f.wantStats(wantStats)

	for want := uint32(2); want >= 1; want-- {
		f.mustUnlock("a", k)
		wantEqual(t, "grants", len(f.ev.Grants), 0)
		wantEqual(t, "count", f.lockInfo("a").Holds[0].Count, want)
	}
	f.mustUnlock("a", k)
	wantSlice(t, "granted", f.grantedTo(), []uint64{waiter.ID})
	wantSlice(t, "released", f.released(), []Reason{ReasonUnlock})
	wantErr(t, "Unlock after count reached 0", f.unlock("a", k), ErrNotHeld)
}

func TestAcquire_ReentryNeedsSameOwner(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustGrant(f.session(), Request{Name: "a", Owner: "me"})
	for _, owner := range []string{"", "other", "ME"} {
		_, out, err := f.acquire(f.session(), Request{Name: "a", Owner: owner}, false)
		wantErr(t, "Acquire", err, nil)
		wantEqual(t, fmt.Sprintf("outcome for owner %q", owner), out, Busy)
	}
}

func TestAcquire_ReentryWhileWaitersQueued(t *testing.T) {
	// Re-entry is not a new acquisition: it does not queue behind waiters.
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a", Size: 2, Owner: "me"})
	f.mustGrant(f.session(), Request{Name: "a", Size: 2})
	f.mustQueue(f.session(), Request{Name: "a", Size: 2})
	got := f.mustGrant(f.session(), Request{Name: "a", Size: 2, Owner: "me"})
	wantEqual(t, "re-entry key", got, k)
}

func TestAcquire_ReentryDetachMismatch(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first, next Request
	}{
		{"bound hold re-entered detached",
			Request{Name: "a", Owner: "o", TTL: 10 * ms},
			Request{Name: "a", Owner: "o", TTL: 10 * ms, Detach: true}},
		{"detached hold re-entered bound",
			Request{Name: "a", Owner: "o", TTL: 10 * ms, Detach: true},
			Request{Name: "a", Owner: "o", TTL: 10 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := f.session()
			f.mustGrant(s, tc.first)
			_, _, err := f.acquire(s, tc.next, true)
			wantErr(t, "re-entry", err, ErrDetachMismatch)
			li := f.lockInfo("a")
			wantEqual(t, "count", li.Holds[0].Count, uint32(1))
			wantEqual(t, "detached", li.Holds[0].Detached, tc.first.Detach)
			wantEqual(t, "waiters", len(li.Waiters), 0)
		})
	}
}

func TestAcquire_ReentryRestartsTTL(t *testing.T) {
	for _, tc := range []struct {
		name     string
		firstTTL int64
		nextTTL  int64
		wantTTL  int64 // Check's remaining time right after the re-entry
	}{
		{"without TTL restarts the hold's duration", 10 * ms, 0, 10 * ms},
		{"with TTL sets a new duration", 10 * ms, 3 * ms, 3 * ms},
		{"with a longer TTL sets it", 10 * ms, 30 * ms, 30 * ms},
		{"gives a hold without TTL one", 0, 5 * ms, 5 * ms},
		{"without TTL keeps a hold without TTL", 0, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := f.session()
			k := f.mustGrant(s, Request{Name: "a", Owner: "o", TTL: tc.firstTTL})
			f.advance(4 * ms)
			f.mustGrant(s, Request{Name: "a", Owner: "o", TTL: tc.nextTTL})
			got, err := f.checkKey("a", k)
			wantErr(t, "Check", err, nil)
			wantEqual(t, "remaining TTL", got, tc.wantTTL)
			if tc.wantTTL > 0 {
				f.advance(tc.wantTTL - 1)
				_, err := f.checkKey("a", k)
				wantErr(t, "Check just before the new deadline", err, nil)
				f.advance(1)
				_, err = f.checkKey("a", k)
				wantErr(t, "Check at the new deadline", err, ErrNotHeld)
			}
		})
	}
}

func TestAcquire_ReentryFromAnotherSessionStaysBoundToFirst(t *testing.T) {
	f := newFixture(t, Config{})
	first, second := f.session(), f.session()
	k := f.mustGrant(first, Request{Name: "a", Owner: "o"})
	f.mustGrant(second, Request{Name: "a", Owner: "o"})
	wantEqual(t, "first bound", first.Bound(), 1)
	wantEqual(t, "second bound", second.Bound(), 0)
	f.closeSession(second)
	wantEqual(t, "count after the re-entering session closed", f.lockInfo("a").Holds[0].Count, uint32(2))
	f.closeSession(first)
	wantSlice(t, "released", f.released(), []Reason{ReasonDisconnect})
	wantEqual(t, "released fence", f.ev.Releases[0].Fence, k.Fence)
	f.wantEmpty()
}

func TestAcquire_ClosedSessionTakesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		wait bool
	}{
		{"free lock", Request{Name: "free"}, false},
		{"free lock with wait", Request{Name: "free"}, true},
		{"held lock with wait", Request{Name: "held"}, true},
		{"re-entry of another session's hold", Request{Name: "held", Owner: "o"}, false},
		{"re-entry of a detached hold", Request{Name: "detached", Owner: "d", TTL: 10 * ms, Detach: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			f.mustGrant(f.session(), Request{Name: "held", Owner: "o"})
			f.mustGrant(f.session(), Request{Name: "detached", Owner: "d", TTL: 10 * ms, Detach: true})
			before := f.tb.Dump(f.now)
			s := f.session()
			f.closeSession(s)
			k, out, err := f.acquire(s, tc.req, tc.wait)
			wantErr(t, "Acquire by a closed session", err, ErrSessionClosed)
			wantEqual(t, "outcome", out, Outcome(0))
			wantEqual(t, "key", k, Key{})
			wantEqual(t, "table state", f.tb.Dump(f.now), before)
		})
	}
}

func TestCloseSession_ReleasesBoundHoldsKeepsDetached(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	f.mustGrant(s, Request{Name: "bound"})
	f.mustGrant(s, Request{Name: "bound-ttl", TTL: 50 * ms})
	dk := f.mustGrant(s, Request{Name: "detached", TTL: 50 * ms, Detach: true})
	wantEqual(t, "bound before close", s.Bound(), 2)
	f.advance(5 * ms)
	f.closeSession(s)
	wantSlice(t, "released", f.released(), []Reason{ReasonDisconnect, ReasonDisconnect})
	for _, r := range f.ev.Releases {
		wantEqual(t, "release session id", r.SessionID, s.ID)
		wantEqual(t, "held for", r.Held, 5*ms)
	}
	wantEqual(t, "bound after close", s.Bound(), 0)
	f.wantNoLock("bound")
	f.wantNoLock("bound-ttl")
	got, err := f.checkKey("detached", dk)
	wantErr(t, "Check detached", err, nil)
	wantEqual(t, "detached remaining", got, 45*ms)
	f.wantStats(Stats{Locks: 1, Holds: 1})

	// Closing again does nothing.
	f.closeSession(s)
	wantEqual(t, "releases of a second close", len(f.ev.Releases), 0)

	// Another session may use the detached key.
	other := f.session()
	ttl, err := f.renew(other, "detached", dk, 0)
	wantErr(t, "Renew detached from another session", err, nil)
	wantEqual(t, "renewed ttl", ttl, 50*ms)
	wantEqual(t, "other bound", other.Bound(), 0)
	f.mustUnlock("detached", dk)
	f.wantEmpty()
}

func TestCloseSession_GrantsFreedCapacityToWaiters(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	f.mustGrant(s, Request{Name: "a"})
	f.mustGrant(s, Request{Name: "b"})
	wa, wb := f.session(), f.session()
	f.mustQueue(wa, Request{Name: "a"})
	f.mustQueue(wb, Request{Name: "b"})
	f.closeSession(s)
	// Bound holds are released newest first.
	wantSlice(t, "granted", f.grantedTo(), []uint64{wb.ID, wa.ID})
	wantEqual(t, "wa bound", wa.Bound(), 1)
	wantEqual(t, "wb bound", wb.Bound(), 1)
}

func TestCloseSession_RemovesWaiterAndNeverGrantsIt(t *testing.T) {
	f := newFixture(t, Config{})
	holder := f.session()
	k := f.mustGrant(holder, Request{Name: "a"})
	gone, next := f.session(), f.session()
	f.mustQueue(gone, Request{Name: "a"})
	f.mustQueue(next, Request{Name: "a"})
	f.closeSession(gone)
	wantEqual(t, "events of closing a waiter", len(f.ev.Grants)+len(f.ev.Releases), 0)
	wantEqual(t, "closed session waiting", gone.Waiting(), false)
	f.wantStats(Stats{Locks: 1, Holds: 1, Waiters: 1})
	f.mustUnlock("a", k)
	wantSlice(t, "granted", f.grantedTo(), []uint64{next.ID})
	wantEqual(t, "closed session bound", gone.Bound(), 0)
}

func TestCloseSession_OnlyWaiterLeavesLockWithHolder(t *testing.T) {
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a"})
	w := f.session()
	f.mustQueue(w, Request{Name: "a"})
	f.closeSession(w)
	f.mustUnlock("a", k)
	wantEqual(t, "grants", len(f.ev.Grants), 0)
	f.wantEmpty()
}

func TestGrantWaiters_SkipsSessionClosedMidway(t *testing.T) {
	// CloseSession marks the session closed before it takes the waiter out
	// of its queue under the shard mutex; a release in between must drop
	// the waiter, never grant it.
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a"})
	closing, next := f.session(), f.session()
	f.mustQueue(closing, Request{Name: "a"})
	f.mustQueue(next, Request{Name: "a"})
	closing.mu.Lock()
	closing.closed = true
	closing.mu.Unlock()
	f.mustUnlock("a", k)
	wantSlice(t, "granted", f.grantedTo(), []uint64{next.ID})
	wantEqual(t, "closing session waiting", closing.Waiting(), false)
	wantEqual(t, "closing session bound", closing.Bound(), 0)
	f.wantStats(Stats{Locks: 1, Holds: 1})
}

func TestCancelWait(t *testing.T) {
	for _, tc := range []struct {
		name       string
		setup      func(f *fixture, s *Session) // leaves s waiting or not
		want       bool
		wantLocked bool // s holds "a" afterwards
	}{
		{"never waited", func(f *fixture, s *Session) {}, false, false},
		{"queued", func(f *fixture, s *Session) {
			f.mustGrant(f.session(), Request{Name: "a"})
			f.mustQueue(s, Request{Name: "a"})
		}, true, false},
		{"granted before the cancel", func(f *fixture, s *Session) {
			k := f.mustGrant(f.session(), Request{Name: "a"})
			f.mustQueue(s, Request{Name: "a"})
			f.mustUnlock("a", k)
			wantSlice(f.t, "granted", f.grantedTo(), []uint64{s.ID})
		}, false, true},
		{"already cancelled", func(f *fixture, s *Session) {
			f.mustGrant(f.session(), Request{Name: "a"})
			f.mustQueue(s, Request{Name: "a"})
			f.cancelWait(s)
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := f.session()
			tc.setup(f, s)
			wantEqual(t, "CancelWait", f.cancelWait(s), tc.want)
			wantEqual(t, "waiting", s.Waiting(), false)
			wantEqual(t, "bound", s.Bound(), int(boolInt(tc.wantLocked)))
		})
	}
}

func TestCancelWait_CancelledWaiterIsNeverGranted(t *testing.T) {
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a"})
	s, next := f.session(), f.session()
	f.mustQueue(s, Request{Name: "a"})
	f.mustQueue(next, Request{Name: "a"})
	wantEqual(t, "CancelWait", f.cancelWait(s), true)
	f.mustUnlock("a", k)
	wantSlice(t, "granted", f.grantedTo(), []uint64{next.ID})
	// The session may wait again after a cancel.
	f.mustQueue(s, Request{Name: "a"})
}

func TestCancelWait_KeepsLockWithItsHolder(t *testing.T) {
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a"})
	s := f.session()
	f.mustQueue(s, Request{Name: "a"})
	f.cancelWait(s)
	f.wantStats(Stats{Locks: 1, Holds: 1})
	f.mustUnlock("a", k)
	f.wantEmpty()
}

func TestAcquire_AlreadyWaiting(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustGrant(f.session(), Request{Name: "a"})
	f.mustGrant(f.session(), Request{Name: "b"})
	s := f.session()
	f.mustQueue(s, Request{Name: "a"})
	_, _, err := f.acquire(s, Request{Name: "b"}, true)
	wantErr(t, "second wait", err, ErrAlreadyWaiting)
	_, out, err := f.acquire(s, Request{Name: "b"}, false)
	wantErr(t, "try while waiting", err, nil)
	wantEqual(t, "try while waiting", out, Busy)
	// A free lock may still be granted to a waiting session.
	f.mustGrant(s, Request{Name: "c"})
}

func TestExpire_ReleasesDueHoldsAndGrantsWaiters(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	holder := f.session()
	k := f.mustGrant(holder, Request{Name: "a", TTL: 10 * ms})
	f.mustGrant(holder, Request{Name: "b", TTL: 30 * ms})
	w := f.session()
	f.mustQueue(w, Request{Name: "a", TTL: 20 * ms})
	start := f.now

	wantEqual(t, "Expire with nothing due", f.expire(), start+10*ms)
	f.advance(10*ms - 1)
	wantEqual(t, "Expire just before the deadline", f.expire(), start+10*ms)
	wantEqual(t, "events before the deadline", len(f.ev.Releases)+len(f.ev.Grants), 0)

	f.advance(1)
	next := f.expire()
	wantSlice(t, "released", f.released(), []Reason{ReasonExpired})
	wantEqual(t, "released fence", f.ev.Releases[0].Fence, k.Fence)
	wantEqual(t, "released session", f.ev.Releases[0].SessionID, holder.ID)
	wantEqual(t, "held for", f.ev.Releases[0].Held, 10*ms)
	wantSlice(t, "granted", f.grantedTo(), []uint64{w.ID})
	wantEqual(t, "grant TTL", f.ev.Grants[0].TTL, 20*ms)
	wantEqual(t, "grant deadline", f.ev.Grants[0].Deadline, f.now+20*ms)
	// The new hold's TTL starts at its grant, not at its request.
	wantEqual(t, "next deadline", next, f.now+20*ms)
	wantEqual(t, "holder bound", holder.Bound(), 1)
	got, err := f.checkKey("a", f.ev.Grants[0].Key)
	wantErr(t, "Check granted", err, nil)
	wantEqual(t, "granted remaining", got, 20*ms)

	f.advance(60 * ms)
	wantEqual(t, "Expire of everything", f.expire(), int64(0))
	wantEqual(t, "releases", len(f.ev.Releases), 2)
	f.wantEmpty()
}

func TestExpire_ReleasesInDeadlineOrder(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	var wantFences []uint64
	for i, ttl := range []int64{5, 3, 9, 3, 1} {
		f.mustGrant(s, Request{Name: fmt.Sprint("l", i), TTL: ttl * ms})
	}
	// Deadline order, ties broken by fence: l4(1) l1(3) l3(3) l0(5) l2(9).
	for _, i := range []int{4, 1, 3, 0, 2} {
		wantFences = append(wantFences, uint64(i+1))
	}
	f.advance(10 * ms)
	f.expire()
	var got []uint64
	for _, r := range f.ev.Releases {
		got = append(got, r.Fence)
	}
	wantSlice(t, "released fences", got, wantFences)
}

func TestExpire_LazilyOnNextOperation(t *testing.T) {
	// No Expire call: the operation at the deadline sees the hold gone, and
	// the waiter's grant is in that operation's Events.
	for _, tc := range []struct {
		name string
		op   func(f *fixture, k Key) error
		want error
	}{
		{"Unlock", func(f *fixture, k Key) error { return f.unlock("a", k) }, ErrNotHeld},
		{"Renew", func(f *fixture, k Key) error { _, err := f.renew(nil, "a", k, 0); return err }, ErrNotHeld},
		{"Renew with TTL", func(f *fixture, k Key) error { _, err := f.renew(nil, "a", k, 5*ms); return err }, ErrNotHeld},
		{"Check", func(f *fixture, k Key) error { _, err := f.checkKey("a", k); return err }, ErrNotHeld},
		{"Acquire by another", func(f *fixture, k Key) error {
			_, out, err := f.acquire(f.session(), Request{Name: "a"}, false)
			wantEqual(f.t, "outcome", out, Busy)
			return err
		}, nil},
		{"ForceUnlock", func(f *fixture, k Key) error {
			// The expired hold is not counted; the grant it made is.
			wantEqual(f.t, "ForceUnlock", f.forceUnlock("a"), 1)
			return nil
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			holder := f.session()
			k := f.mustGrant(holder, Request{Name: "a", TTL: 10 * ms})
			w := f.session()
			f.mustQueue(w, Request{Name: "a"})
			f.advance(10 * ms)
			wantErr(t, tc.name, tc.op(f, k), tc.want)
			if len(f.ev.Releases) == 0 || f.ev.Releases[0].Reason != ReasonExpired || f.ev.Releases[0].Fence != k.Fence {
				t.Fatalf("releases = %+v; want the expired hold first", f.ev.Releases)
			}
			wantSlice(t, "granted", f.grantedTo(), []uint64{w.ID})
			wantEqual(t, "holder bound", holder.Bound(), 0)
		})
	}
}

func TestExpire_CheckAtDeadlineMinusOneStillHeld(t *testing.T) {
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a", TTL: 10 * ms})
	f.advance(10*ms - 1)
	got, err := f.checkKey("a", k)
	wantErr(t, "Check", err, nil)
	wantEqual(t, "remaining", got, int64(1))
}

func TestRenew(t *testing.T) {
	for _, tc := range []struct {
		name       string
		firstTTL   int64
		renewTTL   int64
		wantTTL    int64 // Renew's result
		wantRemain int64 // Check right after
	}{
		{"TTL sets a new duration", 10 * ms, 25 * ms, 25 * ms, 25 * ms},
		{"TTL shortens the duration", 10 * ms, 2 * ms, 2 * ms, 2 * ms},
		{"no TTL restarts the duration", 10 * ms, 0, 10 * ms, 10 * ms},
		{"TTL gives a hold without TTL one", 0, 7 * ms, 7 * ms, 7 * ms},
		{"no TTL keeps a hold without TTL", 0, 0, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := f.session()
			k := f.mustGrant(s, Request{Name: "a", TTL: tc.firstTTL})
			f.advance(6 * ms)
			got, err := f.renew(s, "a", k, tc.renewTTL)
			wantErr(t, "Renew", err, nil)
			wantEqual(t, "Renew", got, tc.wantTTL)
			remain, err := f.checkKey("a", k)
			wantErr(t, "Check", err, nil)
			wantEqual(t, "remaining", remain, tc.wantRemain)
			// A later Renew without TTL restarts the duration now in force.
			f.advance(1 * ms)
			got, err = f.renew(nil, "a", k, 0)
			wantErr(t, "second Renew", err, nil)
			wantEqual(t, "second Renew", got, tc.wantTTL)
		})
	}
}

// A CHECK stamped before a renewal but applied after it (two connections'
// clocks read on different loops, or two ops of one Raft entry) must not
// report more time left than the hold's TTL: the hold never has more.
func TestCheck_StampedBeforeARenewalNeverExceedsTheTTL(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	k := f.mustGrant(s, Request{Name: "a", TTL: 300 * ms})
	f.advance(5 * ms)
	_, err := f.renew(s, "a", k, 0)
	wantErr(t, "Renew", err, nil)
	f.now -= 1 * ms // the CHECK's clock was read 1 ms before the renewal's
	left, err := f.checkKey("a", k)
	wantErr(t, "Check", err, nil)
	wantEqual(t, "remaining", left, 300*ms)
}

func TestRenew_NeverReacquires(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(f *fixture, k Key)
	}{
		{"after Unlock", func(f *fixture, k Key) { f.mustUnlock("a", k) }},
		{"after expiry", func(f *fixture, k Key) { f.advance(10 * ms); f.expire() }},
		{"after lazy expiry", func(f *fixture, k Key) { f.advance(10 * ms) }},
		{"after ForceUnlock", func(f *fixture, k Key) { f.forceUnlock("a") }},
		{"after CloseSession", func(f *fixture, k Key) { f.closeSession(f.sessions[0]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := f.session()
			k := f.mustGrant(s, Request{Name: "a", TTL: 10 * ms})
			tc.end(f, k)
			for _, ttl := range []int64{0, 50 * ms} {
				_, err := f.renew(f.session(), "a", k, ttl)
				wantErr(t, "Renew", err, ErrNotHeld)
			}
			f.wantEmpty()
		})
	}
}

func TestRenew_WrongKeyOrName(t *testing.T) {
	f := newFixture(t, Config{})
	k := f.mustGrant(f.session(), Request{Name: "a", TTL: 10 * ms})
	f.mustGrant(f.session(), Request{Name: "b", TTL: 10 * ms})
	for _, tc := range []struct {
		name string
		lock string
		key  Key
	}{
		{"other random bits", "a", Key{Fence: k.Fence, Rand: k.Rand ^ 1}},
		{"other fence", "a", Key{Fence: k.Fence + 1, Rand: k.Rand}},
		{"zero key", "a", Key{}},
		{"key of another lock", "b", k},
		{"missing lock", "c", k},
	} {
		// One fixture for all cases, so no subtests: f fails its own t.
		_, err := f.renew(nil, tc.lock, tc.key, 0)
		wantErr(t, tc.name+": Renew", err, ErrNotHeld)
		_, err = f.checkKey(tc.lock, tc.key)
		wantErr(t, tc.name+": Check", err, ErrNotHeld)
		wantErr(t, tc.name+": Unlock", f.unlock(tc.lock, tc.key), ErrNotHeld)
	}
	f.wantStats(Stats{Locks: 2, Holds: 2})
	_, err := f.renew(nil, "a", k, -1)
	wantErr(t, "Renew with negative TTL", err, ErrBadRequest)
}

func TestCheck_RemainingTTL(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	withTTL := f.mustGrant(s, Request{Name: "ttl", TTL: 100 * ms})
	without := f.mustGrant(s, Request{Name: "none"})
	for _, step := range []int64{0, 30 * ms, 69 * ms} {
		f.advance(step)
		got, err := f.checkKey("ttl", withTTL)
		wantErr(t, "Check ttl", err, nil)
		wantEqual(t, "remaining", got, 100*ms-(f.now-1_000*ms))
		got, err = f.checkKey("none", without)
		wantErr(t, "Check none", err, nil)
		wantEqual(t, "remaining without TTL", got, int64(-1))
	}
	f.advance(1 * ms)
	_, err := f.checkKey("ttl", withTTL)
	wantErr(t, "Check at the deadline", err, ErrNotHeld)
}

func TestForceUnlock(t *testing.T) {
	f := newFixture(t, Config{})
	a, b := f.session(), f.session()
	f.mustGrant(a, Request{Name: "sem", Size: 3, Owner: "o"})
	f.mustGrant(a, Request{Name: "sem", Size: 3, Owner: "o"}) // re-entered: still one hold
	f.mustGrant(b, Request{Name: "sem", Size: 3, TTL: 10 * ms})
	f.mustGrant(f.session(), Request{Name: "sem", Size: 3, TTL: 10 * ms, Detach: true})
	w1, w2 := f.session(), f.session()
	f.mustQueue(w1, Request{Name: "sem", Size: 3})
	f.mustQueue(w2, Request{Name: "sem", Size: 3})

	wantEqual(t, "ForceUnlock", f.forceUnlock("sem"), 3)
	wantSlice(t, "released", f.released(), []Reason{ReasonForced, ReasonForced, ReasonForced})
	wantSlice(t, "granted", f.grantedTo(), []uint64{w1.ID, w2.ID})
	wantEqual(t, "a bound", a.Bound(), 0)
	wantEqual(t, "b bound", b.Bound(), 0)
	li := f.lockInfo("sem")
	wantEqual(t, "holds after", len(li.Holds), 2)

	wantEqual(t, "ForceUnlock again", f.forceUnlock("sem"), 2)
	wantEqual(t, "grants", len(f.ev.Grants), 0)
	f.wantEmpty()
	wantEqual(t, "ForceUnlock of a missing lock", f.forceUnlock("sem"), 0)
}

func TestLimits_MaxWaiters(t *testing.T) {
	f := newFixture(t, Config{MaxWaiters: 2})
	holder := f.session()
	f.mustGrant(holder, Request{Name: "a", Owner: "o"})
	f.mustQueue(f.session(), Request{Name: "a"})
	f.mustQueue(f.session(), Request{Name: "a"})
	s := f.session()
	_, _, err := f.acquire(s, Request{Name: "a"}, true)
	wantErr(t, "third waiter", err, ErrTooManyWaiters)
	wantEqual(t, "rejected session waiting", s.Waiting(), false)
	_, out, err := f.acquire(s, Request{Name: "a"}, false)
	wantErr(t, "try on a full queue", err, nil)
	wantEqual(t, "try on a full queue", out, Busy)
	// Re-entry does not wait, so a full queue does not stop it.
	f.mustGrant(s, Request{Name: "a", Owner: "o"})
	// The bound is per lock.
	f.mustGrant(holder, Request{Name: "b"})
	f.mustQueue(s, Request{Name: "b"})
	f.wantStats(Stats{Locks: 2, Holds: 2, Waiters: 3})
}

func TestLimits_MaxHoldsPerSession(t *testing.T) {
	f := newFixture(t, Config{MaxHoldsPerSession: 2})
	s := f.session()
	k1 := f.mustGrant(s, Request{Name: "a", Owner: "o"})
	f.mustGrant(s, Request{Name: "b"})
	_, _, err := f.acquire(s, Request{Name: "c"}, false)
	wantErr(t, "third hold", err, ErrTooManyHolds)
	f.wantNoLock("c")

	// Re-entries and detached holds do not count.
	f.mustGrant(s, Request{Name: "a", Owner: "o"})
	f.mustGrant(s, Request{Name: "d", TTL: 10 * ms, Detach: true})

	// A busy try does not count as an error either.
	f.mustGrant(f.session(), Request{Name: "e"})
	_, out, err := f.acquire(s, Request{Name: "e"}, false)
	wantErr(t, "busy try", err, nil)
	wantEqual(t, "busy try", out, Busy)

	// A release makes room; a wait takes it.
	f.mustUnlock("a", k1)
	f.mustUnlock("a", k1)
	f.mustQueue(s, Request{Name: "e"})
	_, _, err = f.acquire(s, Request{Name: "c"}, false)
	wantErr(t, "hold after one hold and one wait", err, ErrTooManyHolds)
	// ... but still not for detached holds.
	f.mustGrant(s, Request{Name: "f", TTL: 10 * ms, Detach: true})
}

func TestLock_DeletedWhenEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(f *fixture, holder, waiter *Session, k Key)
	}{
		{"unlock then unlock the grant", func(f *fixture, holder, waiter *Session, k Key) {
			f.mustUnlock("a", k)
			f.mustUnlock("a", f.ev.Grants[0].Key)
		}},
		{"cancel then unlock", func(f *fixture, holder, waiter *Session, k Key) {
			f.cancelWait(waiter)
			f.mustUnlock("a", k)
		}},
		{"close both", func(f *fixture, holder, waiter *Session, k Key) {
			f.closeSession(waiter)
			f.closeSession(holder)
		}},
		{"close holder then waiter", func(f *fixture, holder, waiter *Session, k Key) {
			f.closeSession(holder)
			f.closeSession(waiter)
		}},
		{"force twice", func(f *fixture, holder, waiter *Session, k Key) {
			f.forceUnlock("a")
			f.forceUnlock("a")
		}},
		{"expire", func(f *fixture, holder, waiter *Session, k Key) {
			f.advance(100 * ms)
			f.expire()
			f.advance(100 * ms)
			f.expire()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{Shards: 4})
			holder, waiter := f.session(), f.session()
			k := f.mustGrant(holder, Request{Name: "a", TTL: 50 * ms})
			f.mustQueue(waiter, Request{Name: "a", TTL: 50 * ms})
			tc.end(f, holder, waiter, k)
			f.wantEmpty()
		})
	}
}

func TestFence_StrictlyIncreasingFromFenceStart(t *testing.T) {
	const start = 1_732_712_345_678_901
	f := newFixture(t, Config{FenceStart: start, Shards: 4})
	wantEqual(t, "LastFence before any grant", f.tb.LastFence(), uint64(start-1))
	s := f.session()
	var fences []uint64
	k := f.mustGrant(s, Request{Name: "a", Owner: "o"})
	fences = append(fences, k.Fence)
	f.mustGrant(s, Request{Name: "a", Owner: "o"}) // re-entry takes no fence
	for i := range 5 {
		fences = append(fences, f.mustGrant(s, Request{Name: fmt.Sprint("n", i)}).Fence)
	}
	f.mustQueue(f.session(), Request{Name: "a"})
	f.mustUnlock("a", k)
	f.mustUnlock("a", k)
	fences = append(fences, f.ev.Grants[0].Key.Fence)

	wantEqual(t, "first fence", fences[0], uint64(start))
	for i := 1; i < len(fences); i++ {
		wantEqual(t, fmt.Sprintf("fence %d", i), fences[i], fences[i-1]+1)
	}
	wantEqual(t, "LastFence", f.tb.LastFence(), fences[len(fences)-1])

	f.tb.AdvanceFence(10) // never lowers
	wantEqual(t, "LastFence after a lower AdvanceFence", f.tb.LastFence(), fences[len(fences)-1])
	f.tb.AdvanceFence(start + 1000)
	wantEqual(t, "fence after AdvanceFence", f.mustGrant(s, Request{Name: "z"}).Fence, uint64(start+1001))
}

func TestFence_ZeroFenceStartStartsAtOne(t *testing.T) {
	f := newFixture(t, Config{})
	wantEqual(t, "first fence", f.mustGrant(f.session(), Request{Name: "a"}).Fence, uint64(1))
}

func TestKey_StringParseRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		key  Key
		text string
	}{
		{Key{Fence: 1732712345678901, Rand: 0x9f3c2b7a01d4e5f6}, "1732712345678901-9f3c2b7a01d4e5f6"},
		{Key{Fence: 1, Rand: 0}, "1-0000000000000000"},
		{Key{Fence: 10, Rand: 0xabcdef}, "10-0000000000abcdef"},
		{Key{Fence: math.MaxUint64, Rand: math.MaxUint64}, "18446744073709551615-ffffffffffffffff"},
	} {
		t.Run(tc.text, func(t *testing.T) {
			wantEqual(t, "String", tc.key.String(), tc.text)
			wantEqual(t, "Append", string(tc.key.Append([]byte("x:"))), "x:"+tc.text)
			got, err := ParseKey([]byte(tc.text))
			wantErr(t, "ParseKey", err, nil)
			wantEqual(t, "ParseKey", got, tc.key)
		})
	}
}

func TestParseKey_RejectsMalformed(t *testing.T) {
	for _, text := range []string{
		"",
		"-",
		"1-",
		"-9f3c2b7a01d4e5f6",
		"9f3c2b7a01d4e5f6",
		"1 9f3c2b7a01d4e5f6",
		"0-9f3c2b7a01d4e5f6",                     // fence 0 is never issued
		"01-9f3c2b7a01d4e5f6",                    // leading zero
		"+1-9f3c2b7a01d4e5f6",                    // sign
		"1a-9f3c2b7a01d4e5f6",                    // hex in the fence
		"1-9F3C2B7A01D4E5F6",                     // upper-case hex
		"1-9f3c2b7a01d4e5f",                      // 15 hex digits
		"1-9f3c2b7a01d4e5f6a",                    // 17 hex digits
		"1-9f3c2b7a01d4e5g6",                     // not hex
		"1-9f3c2b7a-1d4e5f6",                     // second dash
		"1--f3c2b7a01d4e5f6",                     // second dash right after the first
		" 1-9f3c2b7a01d4e5f6",                    // leading space
		"1-9f3c2b7a01d4e5f6 ",                    // trailing space
		"18446744073709551616-9f3c2b7a01d4e5f6",  // fence overflows uint64
		"99999999999999999999-9f3c2b7a01d4e5f6",  // 20 digits, overflows
		"100000000000000000000-9f3c2b7a01d4e5f6", // 21 digits
	} {
		if k, err := ParseKey([]byte(text)); err == nil {
			t.Errorf("ParseKey(%q) = %v, nil; want an error", text, k)
		}
	}
}

func TestLocks_SortedWithAfterCountMatch(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	names := []string{"queue/7", "alpha", "queue/10", "beta", "queue/1", "zeta", "gamma"}
	for _, n := range names {
		f.mustGrant(s, Request{Name: n})
	}
	list := func(q Query) []string {
		var got []string
		for _, li := range f.tb.Locks(q, f.now) {
			got = append(got, li.Name)
		}
		return got
	}
	queues := func(name string) bool { return strings.HasPrefix(name, "queue/") }
	for _, tc := range []struct {
		name string
		q    Query
		want []string
	}{
		{"all", Query{}, []string{"alpha", "beta", "gamma", "queue/1", "queue/10", "queue/7", "zeta"}},
		{"count", Query{Count: 3}, []string{"alpha", "beta", "gamma"}},
		{"after", Query{After: "gamma"}, []string{"queue/1", "queue/10", "queue/7", "zeta"}},
		{"after a name that is not a lock", Query{After: "c"}, []string{"gamma", "queue/1", "queue/10", "queue/7", "zeta"}},
		{"after and count", Query{After: "beta", Count: 2}, []string{"gamma", "queue/1"}},
		{"match", Query{Match: queues}, []string{"queue/1", "queue/10", "queue/7"}},
		{"match after count", Query{Match: queues, After: "queue/1", Count: 1}, []string{"queue/10"}},
		{"after the last", Query{After: "zeta"}, nil},
		{"count larger than all", Query{Count: 100}, []string{"alpha", "beta", "gamma", "queue/1", "queue/10", "queue/7", "zeta"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantSlice(t, "names", list(tc.q), tc.want)
		})
	}

	// Paging with After and Count visits every lock once, in order.
	var paged []string
	for after := ""; ; {
		page := list(Query{After: after, Count: 2})
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1]
	}
	wantSlice(t, "paged", paged, list(Query{}))
}

func TestLock_InfoFields(t *testing.T) {
	f := newFixture(t, Config{})
	a := f.session()
	f.mustGrant(a, Request{Name: "x", Size: 3, Owner: "o", TTL: 100 * ms})
	f.mustGrant(a, Request{Name: "x", Size: 3, Owner: "o", TTL: 100 * ms})
	f.advance(10 * ms)
	f.mustGrant(f.session(), Request{Name: "x", Size: 3, TTL: 40 * ms, Detach: true})
	f.mustGrant(f.session(), Request{Name: "x", Size: 3})
	f.advance(5 * ms)
	w := f.session()
	f.mustQueue(w, Request{Name: "x", Size: 3, Owner: "waiter"})
	f.advance(2 * ms)

	li := f.lockInfo("x")
	wantEqual(t, "name", li.Name, "x")
	wantEqual(t, "size", li.Size, uint32(3))
	want := []HoldInfo{
		{Fence: 1, Owner: "o", SessionID: int64(a.ID), TTL: 100*ms - 17*ms, Age: 17 * ms, Count: 2},
		{Fence: 2, SessionID: -1, TTL: 40*ms - 7*ms, Age: 7 * ms, Detached: true, Count: 1},
		{Fence: 3, SessionID: 3, TTL: -1, Age: 7 * ms, Count: 1},
	}
	wantSlice(t, "holds", li.Holds, want)
	wantSlice(t, "waiters", li.Waiters, []WaiterInfo{{SessionID: int64(w.ID), Owner: "waiter", Waited: 2 * ms}})
	if _, ok := f.tb.Lock("missing", f.now); ok {
		t.Fatalf("Lock(missing) found")
	}
}

func TestEvents_ResetKeepsCapacity(t *testing.T) {
	var ev Events
	ev.Grants = append(ev.Grants, Grant{Name: "a", Session: &Session{}})
	ev.Releases = append(ev.Releases, Release{Name: "a"})
	g, r := &ev.Grants[0], &ev.Releases[0]
	ev.Reset()
	wantEqual(t, "grants", len(ev.Grants), 0)
	wantEqual(t, "releases", len(ev.Releases), 0)
	wantEqual(t, "grant cleared (no stale session pointer)", g.Session, (*Session)(nil))
	wantEqual(t, "release cleared", r.Name, "")
	if cap(ev.Grants) == 0 || cap(ev.Releases) == 0 {
		t.Fatalf("Reset dropped capacity")
	}
}

func TestReason_String(t *testing.T) {
	for r, want := range map[Reason]string{
		ReasonUnlock: "unlock", ReasonExpired: "expired", ReasonDisconnect: "disconnect",
		ReasonForced: "forced", ReasonKilled: "killed", ReasonReset: "reset", ReasonUpgraded: "upgraded", 0: "unknown",
	} {
		wantEqual(t, fmt.Sprintf("Reason(%d)", r), r.String(), want)
	}
}

func TestOldestGrant_FollowsGrantsAndReleases(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	if _, ok := f.tb.OldestGrant(); ok {
		t.Fatal("OldestGrant on an empty table: ok")
	}
	start := f.now
	s := f.session()
	ka := f.mustGrant(s, Request{Name: "a"})
	f.advance(10)
	kb := f.mustGrant(s, Request{Name: "b"})
	f.advance(10)
	f.mustGrant(s, Request{Name: "c"})
	f.advance(10)
	f.mustGrant(f.session(), Request{Name: "d", Size: 2})
	f.advance(10)
	f.mustGrant(f.session(), Request{Name: "d", Size: 2})
	want := func(w int64) {
		t.Helper()
		got, ok := f.tb.OldestGrant()
		if !ok || got != w {
			t.Fatalf("OldestGrant = %d, %v; want %d, true", got, ok, w)
		}
	}
	want(start)
	f.mustUnlock("a", ka) // the oldest goes: a rescan finds b
	want(start + 10)
	f.mustUnlock("b", kb)
	want(start + 20)
	f.closeSession(s) // c
	want(start + 30)
	f.forceUnlock("d")
	if _, ok := f.tb.OldestGrant(); ok {
		t.Fatal("OldestGrant with every hold released: ok")
	}
	f.check()
}
