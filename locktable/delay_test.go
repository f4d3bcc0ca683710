package locktable

import (
	"fmt"
	"testing"
)

// wantDelayed fails unless name exists with no holds listed and n slots in
// lock-delay.
func (f *fixture) wantDelayed(name string, holds, n int) {
	f.t.Helper()
	li := f.lockInfo(name)
	if len(li.Holds) != holds || li.Delayed != n {
		f.t.Fatalf("Lock(%q) has %d holds and %d delayed; want %d and %d", name, len(li.Holds), li.Delayed, holds, n)
	}
}

// wantBusy fails unless a TRYLOCK of name by s is Busy.
func (f *fixture) wantBusy(s *Session, req Request) {
	f.t.Helper()
	if k, out, err := f.acquire(s, req, false); err != nil || out != Busy {
		f.t.Fatalf("TryLock(%q) = %v, %v, %v; want Busy", req.Name, k, outcomeName(out), err)
	}
}

// Each involuntary end of a hold with a lock-delay keeps its capacity
// taken until the delay is over, then frees it.
func TestLockDelay_InvoluntaryEndsKeepTheCapacityForTheDelay(t *testing.T) {
	const delay = 50 * ms
	for _, tc := range []struct {
		name string
		why  Reason
		// end ends the hold taken by s (with a TTL of 100 ms) involuntarily.
		end func(f *fixture, s *Session)
	}{
		{"disconnect", ReasonDisconnect, func(f *fixture, s *Session) { f.closeSession(s) }},
		{"killed", ReasonKilled, func(f *fixture, s *Session) { f.closeSessionFor(s, ReasonKilled) }},
		{"expired", ReasonExpired, func(f *fixture, s *Session) { f.advance(100 * ms); f.expire() }},
		{"expired detached", ReasonExpired, func(f *fixture, s *Session) { f.advance(100 * ms); f.expire() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{Shards: 4})
			s, other := f.session(), f.session()
			k := f.mustGrant(s, Request{Name: "x", TTL: 100 * ms, LockDelay: delay, Detach: tc.name == "expired detached"})
			tc.end(f, s)
			wantSlice(t, "releases", f.released(), []Reason{tc.why})
			wantEqual(t, "released fence", f.ev.Releases[0].Fence, k.Fence)
			ended := f.now
			wantEqual(t, "release delayed until", f.ev.Releases[0].DelayedUntil, ended+delay)

			f.wantDelayed("x", 0, 1)
			f.wantStats(Stats{Locks: 1, Delayed: 1})
			wantEqual(t, "next deadline", f.expire(), ended+delay)
			f.advance(delay - 1)
			f.wantBusy(other, Request{Name: "x"})
			f.wantDelayed("x", 0, 1)

			f.advance(1)
			wantEqual(t, "next deadline at the delay's end", f.expire(), int64(0))
			f.wantNoLock("x")
			f.wantEmpty()
			f.mustGrant(other, Request{Name: "x"})
		})
	}
}

// A bound hold restored after a restart and never adopted expires at the
// end of its grace; its lock-delay applies then.
func TestLockDelay_OrphanNobodyAdoptedIsDelayed(t *testing.T) {
	f := newFixture(t, Config{})
	rec := HoldRecord{Name: "x", Size: 1, Key: Key{Fence: 5, Rand: 9}, Count: 1, Granted: f.now, Bound: true, LockDelay: 30 * ms}
	if restored, dropped := f.tb.Restore([]HoldRecord{rec}, f.now, 100*ms); restored != 1 || dropped != 0 {
		t.Fatalf("Restore = %d, %d; want 1, 0", restored, dropped)
	}
	f.check()
	f.advance(100 * ms)
	f.expire()
	wantSlice(t, "releases", f.released(), []Reason{ReasonExpired})
	f.wantDelayed("x", 0, 1)
	_, err := f.renew(f.session(), "x", rec.Key, 0)
	wantErr(t, "Renew of the orphan's key after its expiry", err, ErrNotHeld)
	f.advance(30 * ms)
	f.expire()
	f.wantNoLock("x")
}

// UNLOCK, RESET and FORCEUNLOCK never delay, whatever the hold's delay.
func TestLockDelay_VoluntaryEndsFreeAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		why  Reason
		end  func(f *fixture, s *Session, k Key)
	}{
		{"unlock", ReasonUnlock, func(f *fixture, _ *Session, k Key) { f.mustUnlock("x", k) }},
		{"reset", ReasonReset, func(f *fixture, s *Session, _ Key) { f.closeSessionFor(s, ReasonReset) }},
		{"forced", ReasonForced, func(f *fixture, _ *Session, _ Key) { wantEqual(f.t, "ForceUnlock", f.forceUnlock("x"), 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s, other := f.session(), f.session()
			k := f.mustGrant(s, Request{Name: "x", LockDelay: 60_000 * ms})
			tc.end(f, s, k)
			wantSlice(t, "releases", f.released(), []Reason{tc.why})
			wantEqual(t, "release delayed until", f.ev.Releases[0].DelayedUntil, int64(0))
			f.wantNoLock("x")
			f.wantEmpty()
			f.mustGrant(other, Request{Name: "x"})
		})
	}
}

// Waiters stay queued through a delay, and a new request queues behind
// them; each slot's end grants the next waiter, in FIFO order.
func TestLockDelay_WaitersGrantedAtTheDelaysEndInFIFOOrder(t *testing.T) {
	f := newFixture(t, Config{Shards: 2})
	h1, h2, w1, w2, w3 := f.session(), f.session(), f.session(), f.session(), f.session()
	sem := Request{Name: "sem", Size: 2}
	f.mustGrant(h1, Request{Name: "sem", Size: 2, LockDelay: 20 * ms})
	f.mustGrant(h2, Request{Name: "sem", Size: 2, LockDelay: 10 * ms})
	f.mustQueue(w1, sem)
	f.mustQueue(w2, sem)

	f.closeSession(h1) // delayed until +20
	wantSlice(t, "grants at h1's disconnect", f.grantedTo(), nil)
	f.advance(5 * ms)
	f.closeSessionFor(h2, ReasonKilled) // delayed until +15
	wantSlice(t, "grants at h2's kill", f.grantedTo(), nil)
	f.wantDelayed("sem", 0, 2)
	f.mustQueue(w3, sem)
	wantEqual(t, "waiters", len(f.lockInfo("sem").Waiters), 3)

	f.advance(10 * ms) // h2's delay is over
	f.expire()
	wantSlice(t, "grants at the first delay's end", f.grantedTo(), []uint64{w1.ID})
	f.wantDelayed("sem", 1, 1)
	f.advance(5 * ms) // h1's too; the next operation on the lock sees it
	_, err := f.checkKey("sem", Key{Fence: 1})
	wantErr(t, "Check", err, ErrNotHeld)
	wantSlice(t, "grants at the second delay's end", f.grantedTo(), []uint64{w2.ID})
	f.wantDelayed("sem", 2, 0)
	if !w3.Waiting() {
		t.Fatal("w3 no longer waits")
	}
}

// A slot in lock-delay is no hold: its old key holds nothing, and its
// owner re-enters nothing.
func TestLockDelay_SlotHasNoKeyAndNoOwner(t *testing.T) {
	f := newFixture(t, Config{})
	s, other := f.session(), f.session()
	k := f.mustGrant(s, Request{Name: "x", Owner: "o", LockDelay: 10 * ms})
	f.closeSession(s)

	wantErr(t, "Unlock with the old key", f.unlock("x", k), ErrNotHeld)
	_, err := f.renew(other, "x", k, 5*ms)
	wantErr(t, "Renew with the old key", err, ErrNotHeld)
	_, err = f.checkKey("x", k)
	wantErr(t, "Check with the old key", err, ErrNotHeld)
	f.wantBusy(other, Request{Name: "x", Owner: "o"})
	f.mustQueue(other, Request{Name: "x", Owner: "o"})
	f.wantDelayed("x", 0, 1)
	li := f.lockInfo("x")
	wantEqual(t, "waiters", len(li.Waiters), 1)

	f.advance(10 * ms)
	f.expire()
	wantSlice(t, "grants", f.grantedTo(), []uint64{other.ID})
	if g := f.ev.Grants[0].Key; g == k || g.Fence <= k.Fence {
		t.Fatalf("granted %v after the delay of %v; want a new key with a larger fence", g, k)
	}
}

// A re-entry neither changes nor adds a lock-delay: the hold's is the one
// its grant set.
func TestLockDelay_FixedByTheGrantNotByReentries(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	f.mustGrant(s, Request{Name: "a", Owner: "o"})
	f.mustGrant(s, Request{Name: "a", Owner: "o", LockDelay: 10 * ms})
	f.mustGrant(s, Request{Name: "b", Owner: "o", LockDelay: 10 * ms})
	f.mustGrant(s, Request{Name: "b", Owner: "o", LockDelay: 20 * ms})
	f.closeSession(s)
	f.wantNoLock("a")
	f.wantDelayed("b", 0, 1)
	f.advance(10 * ms)
	f.expire()
	f.wantNoLock("b")
}

// FORCEUNLOCK ends a lock's slots in lock-delay with its holds, counting
// only the holds, and grants waiters the capacity.
func TestLockDelay_ForceUnlockEndsTheDelays(t *testing.T) {
	f := newFixture(t, Config{})
	a, b, c, w1, w2 := f.session(), f.session(), f.session(), f.session(), f.session()
	f.mustGrant(a, Request{Name: "sem", Size: 3, LockDelay: 50 * ms})
	f.mustGrant(b, Request{Name: "sem", Size: 3, LockDelay: 50 * ms})
	f.mustGrant(c, Request{Name: "sem", Size: 3})
	f.mustQueue(w1, Request{Name: "sem", Size: 3})
	f.mustQueue(w2, Request{Name: "sem", Size: 3})
	f.closeSession(a)
	f.closeSessionFor(b, ReasonKilled)
	f.wantDelayed("sem", 1, 2)

	wantEqual(t, "ForceUnlock", f.forceUnlock("sem"), 1)
	wantSlice(t, "releases", f.released(), []Reason{ReasonForced})
	wantSlice(t, "grants", f.grantedTo(), []uint64{w1.ID, w2.ID})
	f.wantDelayed("sem", 2, 0)
	f.wantStats(Stats{Locks: 1, Holds: 2})

	// Without waiters, the lock is gone.
	f.mustGrant(f.session(), Request{Name: "x", TTL: 5 * ms, LockDelay: 50 * ms, Detach: true})
	f.advance(5 * ms)
	f.expire()
	f.wantDelayed("x", 0, 1)
	wantEqual(t, "ForceUnlock of a lock in lock-delay only", f.forceUnlock("x"), 0)
	f.wantNoLock("x")
}

func TestLockDelay_OutOfRangeIsABadRequest(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	for _, d := range []int64{-1, MaxLockDelay + 1} {
		_, _, err := f.acquire(s, Request{Name: "x", LockDelay: d}, false)
		wantErr(t, fmt.Sprintf("Acquire with LockDelay %d", d), err, ErrBadRequest)
	}
	f.mustGrant(s, Request{Name: "x", LockDelay: MaxLockDelay})
}

// Notices: the release is told when the hold ends, then, at the delay's
// end, the grant to a waiter or, with none, that the lock is free.
func TestLockDelay_Notices(t *testing.T) {
	log := &noticeLog{watched: true}
	f := newFixture(t, log.config(Config{}))
	a, b := f.session(), f.session()
	ka := f.mustGrant(a, Request{Name: "x", TTL: 10 * ms, LockDelay: 20 * ms})
	f.mustQueue(b, Request{Name: "x", LockDelay: 20 * ms})
	f.advance(10 * ms)
	f.expire()
	wantSlice(t, "at the expiry", log.take(), []string{
		fmt.Sprintf("acquired x %d unknown 0", ka.Fence),
		"contended x 0 unknown 1",
		fmt.Sprintf("released x %d expired 0", ka.Fence),
	})
	f.advance(20 * ms)
	f.expire()
	kb := f.ev.Grants[0].Key
	wantSlice(t, "at the delay's end", log.take(), []string{fmt.Sprintf("acquired x %d unknown 0", kb.Fence)})

	f.closeSession(b)
	wantSlice(t, "at the disconnect", log.take(), []string{fmt.Sprintf("released x %d disconnect 0", kb.Fence)})
	f.advance(20 * ms)
	f.expire()
	wantSlice(t, "at the second delay's end", log.take(), []string{"free x 0 unknown 0"})
}

// A batch of expiries counts the ends of delays like releases, and stops
// as bounded.
func TestLockDelay_ExpireBatchEndsDelaysInDeadlineOrder(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	for i, name := range []string{"p", "q", "r"} {
		f.mustGrant(s, Request{Name: name, LockDelay: int64(30-10*i) * ms})
	}
	f.closeSession(s) // delays end at +30 (p), +20 (q), +10 (r)
	waiter := map[string]*Session{}
	for _, name := range []string{"p", "q", "r"} {
		waiter[name] = f.session()
		f.mustQueue(waiter[name], Request{Name: name})
	}
	f.advance(30 * ms)
	var order []uint64
	for {
		f.ev.Reset()
		next, more := f.tb.ExpireBatch(&f.ev, f.now, 1)
		f.check()
		order = append(order, f.grantedTo()...)
		if !more {
			wantEqual(t, "next", next, int64(0))
			break
		}
	}
	wantSlice(t, "grants in delay-end order", order, []uint64{waiter["r"].ID, waiter["q"].ID, waiter["p"].ID})
}
