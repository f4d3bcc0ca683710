package locktable

import (
	"errors"
	"fmt"
	"testing"
)

// Shared and exclusive holds, UPGRADE and DOWNGRADE (SPEC §8.3).

func sharedReq(name string) Request { return Request{Name: name, Shared: true} }

// holders returns the session IDs of name's holds, in grant order, each
// with its mode: "s3" shared, "x3" exclusive (-1: detached or orphaned).
func (f *fixture) holders(name string) []string {
	f.t.Helper()
	var out []string
	for _, h := range f.lockInfo(name).Holds {
		out = append(out, fmt.Sprintf("%s%d", modeLetter(h.Shared), h.SessionID))
	}
	return out
}

// waiting returns the session IDs of name's waiters, in queue order, each
// with its mode: "s3" shared, "x3" exclusive, "u3" an upgrade.
func (f *fixture) waiting(name string) []string {
	f.t.Helper()
	var out []string
	for _, w := range f.lockInfo(name).Waiters {
		m := modeLetter(w.Shared)
		if w.Upgrade {
			m = "u"
		}
		out = append(out, fmt.Sprintf("%s%d", m, w.SessionID))
	}
	return out
}

func modeLetter(shared bool) string {
	if shared {
		return "s"
	}
	return "x"
}

func ids(ss ...*Session) []uint64 {
	var out []uint64
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestShared_ReadersShare(t *testing.T) {
	f := newFixture(t, Config{})
	r1, r2, r3 := f.session(), f.session(), f.session()
	k1 := f.mustGrant(r1, sharedReq("x"))
	k2 := f.mustGrant(r2, sharedReq("x"))
	k3 := f.mustGrant(r3, Request{Name: "x", Shared: true, Size: 1})
	if !(k1.Fence < k2.Fence && k2.Fence < k3.Fence) {
		t.Fatalf("keys %v %v %v; want each its own, fences increasing", k1, k2, k3)
	}
	wantSlice(t, "holders", f.holders("x"), []string{"s1", "s2", "s3"})
	wantEqual(t, "size", f.lockInfo("x").Size, uint32(1))
	f.wantStats(Stats{Locks: 1, Holds: 3})

	f.mustUnlock("x", k2)
	wantSlice(t, "holders after one unlock", f.holders("x"), []string{"s1", "s3"})
	f.mustUnlock("x", k1)
	f.mustUnlock("x", k3)
	f.wantNoLock("x")
}

// An exclusive hold excludes readers, and shared holds exclude a writer
// until the last of them is gone.
func TestShared_WriterWaitsForEveryReader(t *testing.T) {
	f := newFixture(t, Config{})
	r1, r2, w := f.session(), f.session(), f.session()
	k1 := f.mustGrant(r1, sharedReq("x"))
	k2 := f.mustGrant(r2, sharedReq("x"))
	f.wantBusy(w, Request{Name: "x"})
	f.mustQueue(w, Request{Name: "x"})

	f.mustUnlock("x", k1)
	wantSlice(t, "grants at the first reader's unlock", f.grantedTo(), nil)
	f.mustUnlock("x", k2)
	wantSlice(t, "grants at the last reader's unlock", f.grantedTo(), ids(w))
	wantSlice(t, "holders", f.holders("x"), []string{"x3"})
	f.wantBusy(r1, sharedReq("x"))
}

// A reader that fits the holds still queues behind a waiting writer, and
// the writer is granted before it: writers never starve.
func TestShared_ReadersBehindAWaitingWriterWait(t *testing.T) {
	f := newFixture(t, Config{})
	r1, w, r2 := f.session(), f.session(), f.session()
	k1 := f.mustGrant(r1, sharedReq("x"))
	f.mustQueue(w, Request{Name: "x"})
	f.wantBusy(r2, sharedReq("x"))
	f.mustQueue(r2, sharedReq("x"))
	wantSlice(t, "waiters", f.waiting("x"), []string{"x2", "s3"})

	f.mustUnlock("x", k1)
	wantSlice(t, "grants", f.grantedTo(), ids(w))
	wantSlice(t, "waiters after", f.waiting("x"), []string{"s3"})
}

// When capacity frees, the consecutive shared requests at the head are
// granted together, in queue order; those behind the next writer wait.
func TestShared_ReadersAtTheHeadGrantedTogether(t *testing.T) {
	f := newFixture(t, Config{})
	w1, r1, r2, w2, r3 := f.session(), f.session(), f.session(), f.session(), f.session()
	kw := f.mustGrant(w1, Request{Name: "x"})
	f.mustQueue(r1, sharedReq("x"))
	f.mustQueue(r2, Request{Name: "x", Shared: true, TTL: 5 * ms})
	f.mustQueue(w2, Request{Name: "x"})
	f.mustQueue(r3, sharedReq("x"))

	f.mustUnlock("x", kw)
	wantSlice(t, "grants", f.grantedTo(), ids(r1, r2))
	if g := f.ev.Grants; g[0].Key.Fence >= g[1].Key.Fence || g[1].TTL != 5*ms || g[1].Deadline != f.now+5*ms {
		t.Fatalf("grants %+v; want increasing fences, the second with its TTL", g)
	}
	wantSlice(t, "holders", f.holders("x"), []string{"s2", "s3"})
	wantSlice(t, "waiters", f.waiting("x"), []string{"x4", "s5"})
}

// A lone shared hold becomes exclusive at once, whoever waits: a new key
// with a fence above every earlier one, the old key dead, and everything
// else of the hold kept.
func TestUpgrade_AtOnceWhenAlone(t *testing.T) {
	f := newFixture(t, Config{})
	s, w := f.session(), f.session()
	req := Request{Name: "x", Shared: true, Owner: "o", TTL: 100 * ms, LockDelay: 5 * ms}
	k := f.mustGrant(s, req)
	f.advance(10 * ms)
	wantEqual(t, "re-entry", f.mustGrant(s, Request{Name: "x", Shared: true, Owner: "o"}), k)
	f.mustQueue(w, Request{Name: "x"})
	last := f.tb.LastFence()

	nk, out, err := f.upgrade(s, "x", k)
	wantErr(t, "Upgrade", err, nil)
	wantEqual(t, "outcome", out, Granted)
	if nk.Fence <= last || nk.Rand != f.rand {
		t.Fatalf("Upgrade = %v; want a fence above %d and the given random part %x", nk, last, f.rand)
	}
	wantEqual(t, "events", len(f.ev.Grants)+len(f.ev.Releases), 0)

	wantErr(t, "Unlock with the old key", f.unlock("x", k), ErrNotHeld)
	left, err := f.checkKey("x", nk)
	wantErr(t, "Check with the new key", err, nil)
	wantEqual(t, "TTL left (the deadline kept: the re-entry's)", left, 100*ms)
	h := f.lockInfo("x").Holds[0]
	want := HoldInfo{Fence: nk.Fence, Owner: "o", SessionID: int64(s.ID), TTL: 100 * ms, Age: 10 * ms, Count: 2}
	wantEqual(t, "hold", h, want)
	wantSlice(t, "waiters", f.waiting("x"), []string{"x2"})

	// Its owner re-enters it in exclusive mode only.
	_, _, err = f.acquire(s, req, false)
	wantErr(t, "shared re-entry of the upgraded hold", err, ErrModeMismatch)
	wantEqual(t, "exclusive re-entry", f.mustGrant(s, Request{Name: "x", Owner: "o"}), nk)

	// It keeps its lock-delay, and its session binding.
	f.closeSession(s)
	f.wantDelayed("x", 0, 1)
	f.advance(5 * ms)
	f.expire()
	wantSlice(t, "grants at the delay's end", f.grantedTo(), ids(w))
}

// A waiting upgrade goes ahead of every queued request, writers and
// readers, and is granted when the other readers leave, with a fence above
// every grant before.
func TestUpgrade_WaitsAheadOfTheQueueUntilTheOtherReadersLeave(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	a, b, w, r := f.session(), f.session(), f.session(), f.session()
	ka := f.mustGrant(a, Request{Name: "x", Shared: true, TTL: 50 * ms})
	kb := f.mustGrant(b, sharedReq("x"))
	f.mustQueue(w, Request{Name: "x"})
	f.mustQueue(r, sharedReq("x"))

	nk, out, err := f.upgrade(a, "x", ka)
	if err != nil || out != Queued || !nk.IsZero() {
		t.Fatalf("Upgrade = %v, %v, %v; want zero key, Queued, nil", nk, outcomeName(out), err)
	}
	wantEqual(t, "a waits", a.Waiting(), true)
	wantSlice(t, "waiters", f.waiting("x"), []string{"u1", "x3", "s4"})
	wantEqual(t, "the upgrade's listing", f.lockInfo("x").Waiters[0], WaiterInfo{SessionID: int64(a.ID), Upgrade: true})
	f.wantStats(Stats{Locks: 1, Holds: 2, Waiters: 3})
	// The hold is still shared meanwhile, and its key still holds.
	if _, err := f.checkKey("x", ka); err != nil {
		t.Fatalf("Check of the upgrading hold = %v", err)
	}
	f.wantBusy(f.session(), sharedReq("x"))

	f.advance(10 * ms)
	last := f.tb.LastFence()
	f.mustUnlock("x", kb)
	wantSlice(t, "grants", f.grantedTo(), ids(a))
	g := f.ev.Grants[0]
	if !g.Upgrade || g.Lost || g.Key.Fence <= last || g.TTL != 50*ms || g.Deadline != f.now+40*ms {
		t.Fatalf("grant %+v; want an upgrade with a fence above %d, the hold's TTL and deadline", g, last)
	}
	wantEqual(t, "a waits", a.Waiting(), false)
	wantSlice(t, "holders", f.holders("x"), []string{"x1"})
	wantSlice(t, "waiters", f.waiting("x"), []string{"x3", "s4"})
	wantErr(t, "Unlock with the old key", f.unlock("x", ka), ErrNotHeld)

	f.mustUnlock("x", g.Key)
	wantSlice(t, "grants after the writer's turn", f.grantedTo(), ids(w))
}

// Two upgrades of one lock would each wait for the other's hold: the
// second fails at once and changes nothing.
func TestUpgrade_SecondWhileOneWaitsIsADeadlock(t *testing.T) {
	f := newFixture(t, Config{})
	a, b, c := f.session(), f.session(), f.session()
	ka := f.mustGrant(a, sharedReq("x"))
	kb := f.mustGrant(b, sharedReq("x"))
	if _, out, err := f.upgrade(a, "x", ka); out != Queued || err != nil {
		t.Fatalf("first Upgrade = %v, %v; want Queued", outcomeName(out), err)
	}
	before := f.tb.Dump(f.now)
	fence := f.tb.LastFence()
	for _, tc := range []struct {
		s *Session
		k Key
	}{{b, kb}, {c, kb}, {c, ka}, {a, kb}} {
		_, out, err := f.upgrade(tc.s, "x", tc.k)
		wantErr(t, fmt.Sprintf("Upgrade by session %d of %v", tc.s.ID, tc.k), err, ErrDeadlock)
		wantEqual(t, "outcome", out, Outcome(0))
	}
	wantEqual(t, "state", f.tb.Dump(f.now), before)
	wantEqual(t, "last fence", f.tb.LastFence(), fence)
	wantEqual(t, "b waits", b.Waiting(), false)
	wantEqual(t, "c waits", c.Waiting(), false)
}

func TestUpgrade_Errors(t *testing.T) {
	f := newFixture(t, Config{})
	s, other, closed := f.session(), f.session(), f.session()
	ks := f.mustGrant(s, sharedReq("x"))
	f.mustGrant(other, sharedReq("x"))
	kx := f.mustGrant(s, Request{Name: "y"})
	f.closeSession(closed)

	for _, tc := range []struct {
		name string
		s    *Session
		lock string
		k    Key
		want error
	}{
		{"closed session", closed, "x", ks, ErrSessionClosed},
		{"wrong key", s, "x", Key{Fence: ks.Fence, Rand: ks.Rand + 1}, ErrNotHeld},
		{"key of another lock", s, "y", ks, ErrNotHeld},
		{"no such lock", s, "z", ks, ErrNotHeld},
		{"exclusive hold", s, "y", kx, ErrNotShared},
	} {
		before := f.tb.Dump(f.now)
		_, _, err := f.upgrade(tc.s, tc.lock, tc.k)
		wantErr(t, tc.name, err, tc.want)
		wantEqual(t, tc.name+": state", f.tb.Dump(f.now), before)
	}

	// A session waits for one thing at a time; an upgrade that need not
	// wait is granted all the same.
	w := f.session()
	kw := f.mustGrant(w, sharedReq("x"))
	kl := f.mustGrant(w, sharedReq("lone"))
	f.mustGrant(other, Request{Name: "y2"})
	f.mustQueue(w, Request{Name: "y2"}) // not on s's hold: no deadlock
	_, _, err := f.upgrade(w, "x", kw)
	wantErr(t, "Upgrade by a waiting session", err, ErrAlreadyWaiting)
	if _, out, err := f.upgrade(w, "lone", kl); out != Granted || err != nil {
		t.Fatalf("Upgrade of a lone hold by a waiting session = %v, %v; want Granted", outcomeName(out), err)
	}
	// And a waiting upgrade is the session's one wait.
	if _, out, err := f.upgrade(s, "x", ks); out != Queued || err != nil {
		t.Fatalf("Upgrade = %v, %v; want Queued", outcomeName(out), err)
	}
	_, _, err = f.acquire(s, Request{Name: "q"}, true)
	if err != nil {
		t.Fatalf("Acquire of a free lock while upgrading = %v; want granted", err)
	}
	f.mustGrant(other, Request{Name: "q2"})
	_, _, err = f.acquire(s, Request{Name: "q2"}, true)
	wantErr(t, "Acquire that would wait while upgrading", err, ErrAlreadyWaiting)
}

// A WAIT that runs out withdraws the upgrade: the shared hold stays, and
// the readers the upgrade kept waiting are granted.
func TestUpgrade_CancelledKeepsTheSharedHold(t *testing.T) {
	f := newFixture(t, Config{})
	a, b, r := f.session(), f.session(), f.session()
	ka := f.mustGrant(a, sharedReq("x"))
	f.mustGrant(b, sharedReq("x"))
	f.upgrade(a, "x", ka)
	f.mustQueue(r, sharedReq("x"))

	wantEqual(t, "CancelWaitAt", f.cancelWait(a), true)
	wantSlice(t, "grants", f.grantedTo(), ids(r))
	wantEqual(t, "a waits", a.Waiting(), false)
	if _, err := f.checkKey("x", ka); err != nil {
		t.Fatalf("Check of the shared hold after its upgrade was cancelled = %v", err)
	}
	wantSlice(t, "holders", f.holders("x"), []string{"s1", "s2", "s3"})
	wantEqual(t, "CancelWaitAt again", f.cancelWait(a), false)
}

// A writer whose WAIT runs out lets the readers queued behind it in.
func TestCancelWait_GrantsTheReadersAWriterKeptWaiting(t *testing.T) {
	f := newFixture(t, Config{})
	r1, w, r2, r3 := f.session(), f.session(), f.session(), f.session()
	f.mustGrant(r1, sharedReq("x"))
	f.mustQueue(w, Request{Name: "x"})
	f.mustQueue(r2, sharedReq("x"))
	f.mustQueue(r3, sharedReq("x"))

	wantEqual(t, "CancelWaitAt", f.cancelWait(w), true)
	wantSlice(t, "grants", f.grantedTo(), ids(r2, r3))
	wantSlice(t, "holders", f.holders("x"), []string{"s1", "s3", "s4"})

	// So does a closing writer.
	w2, r4 := f.session(), f.session()
	f.mustQueue(w2, Request{Name: "x"})
	f.mustQueue(r4, sharedReq("x"))
	f.closeSession(w2)
	wantSlice(t, "grants at the writer's close", f.grantedTo(), ids(r4))
}

// When the shared hold ends while its upgrade waits, the upgrade is lost
// (a Grant with Lost, which the server answers with -NOTHELD), and the
// queue goes on.
func TestUpgrade_LostWhenItsHoldEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay int64 // the upgrading hold's lock-delay
		end   func(f *fixture, holder *Session, k Key)
		why   []Reason
		// newer: the upgrading hold is granted after the other one (so
		// that FORCEUNLOCK, which releases in grant order, would free it
		// of the other first).
		newer bool
	}{
		{"unlock", 0, func(f *fixture, _ *Session, k Key) { f.mustUnlock("x", k) }, []Reason{ReasonUnlock}, false},
		{"expired", 0, func(f *fixture, _ *Session, _ Key) { f.advance(50 * ms); f.expire() }, []Reason{ReasonExpired}, false},
		{"expired, lock-delay", 10 * ms, func(f *fixture, _ *Session, _ Key) { f.advance(50 * ms); f.expire() }, []Reason{ReasonExpired}, false},
		{"its session closed", 0, func(f *fixture, s *Session, _ Key) { f.closeSession(s) }, []Reason{ReasonDisconnect}, false},
		{"its session killed, lock-delay", 10 * ms, func(f *fixture, s *Session, _ Key) { f.closeSessionFor(s, ReasonKilled) }, []Reason{ReasonKilled}, false},
		{"forced", 0, func(f *fixture, _ *Session, _ Key) { wantEqual(f.t, "ForceUnlock", f.forceUnlock("x"), 2) }, []Reason{ReasonForced, ReasonForced}, false},
		{"forced, the newer hold", 0, func(f *fixture, _ *Session, _ Key) { wantEqual(f.t, "ForceUnlock", f.forceUnlock("x"), 2) }, []Reason{ReasonForced, ReasonForced}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{Shards: 2})
			// The key is the capability: another session than the
			// holder's may upgrade.
			holder, other, up, r := f.session(), f.session(), f.session(), f.session()
			if tc.newer {
				f.mustGrant(other, sharedReq("x"))
			}
			k := f.mustGrant(holder, Request{Name: "x", Shared: true, TTL: 50 * ms, LockDelay: tc.delay})
			if !tc.newer {
				f.mustGrant(other, sharedReq("x"))
			}
			if _, out, err := f.upgrade(up, "x", k); out != Queued || err != nil {
				t.Fatalf("Upgrade = %v, %v; want Queued", outcomeName(out), err)
			}
			f.mustQueue(r, sharedReq("x"))

			last := f.tb.LastFence()
			tc.end(f, holder, k)
			wantSlice(t, "releases", f.released(), tc.why)
			for _, rel := range f.ev.Releases {
				if rel.Fence > last {
					t.Fatalf("released %+v: fence %d was granted meanwhile (an upgrade?)", f.ev.Releases, rel.Fence)
				}
			}
			wantSlice(t, "grants", f.grantedTo(), ids(up, r))
			if g := f.ev.Grants[0]; g.Session != up || g.Name != "x" || !g.Lost || !g.Key.IsZero() || g.Names != nil {
				t.Fatalf("the lost upgrade = %+v; want a Lost grant of x to session %d", g, up.ID)
			}
			wantEqual(t, "up waits", up.Waiting(), false)
			wantEqual(t, "CancelWaitAt after the loss", f.cancelWait(up), false)
		})
	}
}

// An upgrade whose hold is past its deadline, or bound to a session that
// is closing, when the other readers leave is lost rather than granted a
// key released right after.
func TestUpgrade_LostRatherThanGrantedToADoomedHold(t *testing.T) {
	t.Run("past its deadline", func(t *testing.T) {
		f := newFixture(t, Config{})
		a, b := f.session(), f.session()
		ka := f.mustGrant(a, Request{Name: "x", Shared: true, TTL: 20 * ms})
		f.mustGrant(b, Request{Name: "x", Shared: true, TTL: 10 * ms})
		f.upgrade(a, "x", ka)
		f.advance(20 * ms)
		f.expire() // b's hold first, then a's
		wantSlice(t, "releases", f.released(), []Reason{ReasonExpired, ReasonExpired})
		wantEqual(t, "grants", len(f.ev.Grants), 1)
		if g := f.ev.Grants[0]; g.Session != a || g.Name != "x" || !g.Lost || !g.Key.IsZero() || g.Names != nil {
			t.Fatalf("the lost upgrade = %+v; want a Lost grant of x to session %d", g, a.ID)
		}
		for _, r := range f.ev.Releases {
			if r.Fence > ka.Fence+1 {
				t.Fatalf("released fence %d: an upgrade was granted", r.Fence)
			}
		}
		f.wantNoLock("x")
	})
	t.Run("its session closing", func(t *testing.T) {
		f := newFixture(t, Config{})
		holder, up := f.session(), f.session()
		k := f.mustGrant(holder, sharedReq("x"))
		f.mustGrant(holder, sharedReq("x")) // newer: released first on close
		f.upgrade(up, "x", k)
		f.closeSession(holder)
		wantSlice(t, "releases", f.released(), []Reason{ReasonDisconnect, ReasonDisconnect})
		wantEqual(t, "grants", len(f.ev.Grants), 1)
		if g := f.ev.Grants[0]; g.Session != up || g.Name != "x" || !g.Lost || !g.Key.IsZero() || g.Names != nil {
			t.Fatalf("the lost upgrade = %+v; want a Lost grant of x to session %d", g, up.ID)
		}
		if f.ev.Releases[1].Fence != k.Fence {
			t.Fatalf("released %+v; want the upgrading hold released under its own fence", f.ev.Releases)
		}
	})
}

// A downgraded hold keeps its key and lets in the readers at the head of
// the queue at once; those behind a writer wait.
func TestDowngrade_GrantsTheReadersAtTheHead(t *testing.T) {
	f := newFixture(t, Config{})
	w1, r1, r2, w2, r3 := f.session(), f.session(), f.session(), f.session(), f.session()
	k := f.mustGrant(w1, Request{Name: "x", TTL: 30 * ms})
	f.mustQueue(r1, sharedReq("x"))
	f.mustQueue(r2, sharedReq("x"))
	f.mustQueue(w2, Request{Name: "x"})
	f.mustQueue(r3, sharedReq("x"))
	fence := f.tb.LastFence()

	wantErr(t, "Downgrade", f.downgrade("x", k), nil)
	wantSlice(t, "grants", f.grantedTo(), ids(r1, r2))
	wantEqual(t, "releases", len(f.ev.Releases), 0)
	wantSlice(t, "holders", f.holders("x"), []string{"s1", "s2", "s3"})
	wantSlice(t, "waiters", f.waiting("x"), []string{"x4", "s5"})
	if left, err := f.checkKey("x", k); err != nil || left != 30*ms {
		t.Fatalf("Check of the downgraded key = %d, %v; want its TTL left", left, err)
	}
	wantEqual(t, "fences issued", f.tb.LastFence(), fence+2)

	wantErr(t, "Downgrade of a shared hold", f.downgrade("x", k), ErrNotExclusive)
	wantErr(t, "Downgrade with a wrong key", f.downgrade("x", Key{Fence: k.Fence}), ErrNotHeld)

	// Downgrade, then upgrade back once alone.
	s := f.session()
	ky := f.mustGrant(s, Request{Name: "y"})
	wantErr(t, "Downgrade of a lone hold", f.downgrade("y", ky), nil)
	f.mustGrant(f.session(), sharedReq("y"))
	wantSlice(t, "holders of y", f.holders("y"), []string{"s6", "s7"})
}

// A semaphore's holds are never shared: neither by request nor by
// downgrade.
func TestShared_NotOnASemaphore(t *testing.T) {
	f := newFixture(t, Config{})
	a, b := f.session(), f.session()
	k := f.mustGrant(a, Request{Name: "sem", Size: 3})
	before := f.tb.Dump(f.now)

	var sm *SizeMismatchError
	_, _, err := f.acquire(b, sharedReq("sem"), true)
	if !errors.As(err, &sm) || sm.Have != 3 || sm.Want != 1 {
		t.Fatalf("shared Acquire on a semaphore = %v; want SizeMismatchError{3, 1}", err)
	}
	_, _, err = f.acquire(b, Request{Name: "sem", Shared: true, Size: 3}, true)
	wantErr(t, "shared Acquire with size 3", err, ErrBadRequest)
	_, _, err = f.acquire(b, Request{Name: "new", Shared: true, Size: 2}, false)
	wantErr(t, "shared Acquire with size 2 of a new lock", err, ErrBadRequest)
	err = f.downgrade("sem", k)
	if !errors.As(err, &sm) || sm.Have != 3 || sm.Want != 1 || !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("Downgrade of a semaphore's hold = %v; want SizeMismatchError{3, 1}", err)
	}
	wantEqual(t, "state", f.tb.Dump(f.now), before)
}

// An OWNER re-entry is in the hold's own mode only.
func TestShared_ReentryInTheOtherModeIsRefused(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	ks := f.mustGrant(s, Request{Name: "r", Owner: "o", Shared: true})
	kx := f.mustGrant(s, Request{Name: "w", Owner: "o"})
	before := f.tb.Dump(f.now)
	_, _, err := f.acquire(s, Request{Name: "r", Owner: "o"}, true)
	wantErr(t, "exclusive re-entry of a shared hold", err, ErrModeMismatch)
	_, _, err = f.acquire(s, Request{Name: "w", Owner: "o", Shared: true}, true)
	wantErr(t, "shared re-entry of an exclusive hold", err, ErrModeMismatch)
	wantEqual(t, "state", f.tb.Dump(f.now), before)
	wantEqual(t, "shared re-entry", f.mustGrant(s, Request{Name: "r", Owner: "o", Shared: true}), ks)
	wantEqual(t, "exclusive re-entry", f.mustGrant(s, Request{Name: "w", Owner: "o"}), kx)
	wantEqual(t, "count", f.lockInfo("r").Holds[0].Count, uint32(2))
}

// A slot in lock-delay keeps its hold's mode: a shared one blocks writers
// only, an exclusive one everybody.
func TestLockDelay_SharedSlotBlocksWritersOnly(t *testing.T) {
	f := newFixture(t, Config{})
	a, b, w, r := f.session(), f.session(), f.session(), f.session()
	f.mustGrant(a, Request{Name: "x", Shared: true, LockDelay: 20 * ms})
	kb := f.mustGrant(b, sharedReq("x"))
	f.closeSession(a)
	f.wantDelayed("x", 1, 1)

	f.wantBusy(w, Request{Name: "x"})
	kr := f.mustGrant(r, sharedReq("x"))
	f.mustUnlock("x", kb)
	f.mustUnlock("x", kr)
	f.wantDelayed("x", 0, 1)
	f.wantBusy(w, Request{Name: "x"})
	f.mustQueue(w, Request{Name: "x"})
	f.advance(20 * ms)
	f.expire()
	wantSlice(t, "grants at the delay's end", f.grantedTo(), ids(w))

	// An exclusive slot blocks readers too.
	c := f.session()
	f.mustGrant(c, Request{Name: "y", LockDelay: 20 * ms})
	f.closeSession(c)
	f.wantBusy(r, sharedReq("y"))
}

// An upgrade tells watchers the old fence released (upgraded) and the new
// one acquired; a downgrade tells nothing.
func TestUpgrade_Notices(t *testing.T) {
	log := &noticeLog{watched: true}
	f := newFixture(t, log.config(Config{}))
	a, b := f.session(), f.session()
	ka := f.mustGrant(a, sharedReq("x"))
	kb := f.mustGrant(b, sharedReq("x"))
	f.upgrade(a, "x", ka)
	f.mustUnlock("x", kb)
	nk := f.ev.Grants[0].Key
	wantSlice(t, "waiting upgrade", log.take(), []string{
		fmt.Sprintf("acquired x %d unknown 0", ka.Fence),
		fmt.Sprintf("acquired x %d unknown 0", kb.Fence),
		"contended x 0 unknown 1",
		fmt.Sprintf("released x %d unlock 0", kb.Fence),
		fmt.Sprintf("released x %d upgraded 0", ka.Fence),
		fmt.Sprintf("acquired x %d unknown 0", nk.Fence),
	})
	wantEqual(t, "releases (an upgrade is none)", len(f.ev.Releases), 1)

	wantErr(t, "Downgrade", f.downgrade("x", nk), nil)
	wantSlice(t, "downgrade", log.take(), nil)
	nk2, _, _ := f.upgrade(a, "x", nk)
	wantSlice(t, "upgrade at once", log.take(), []string{
		fmt.Sprintf("released x %d upgraded 0", nk.Fence),
		fmt.Sprintf("acquired x %d unknown 0", nk2.Fence),
	})
	wantEqual(t, "events of an upgrade at once", len(f.ev.Grants)+len(f.ev.Releases), 0)
}

// A durable store sees an upgrade as the old fence's record gone and the
// new one's put, and a downgrade as the record put again, shared.
func TestUpgrade_Journal(t *testing.T) {
	f := newFixture(t, Config{})
	f.tb.SetJournaling(true)
	s := f.session()
	k := f.mustGrant(s, Request{Name: "x", Shared: true, Owner: "o", TTL: 10 * ms})
	f.tb.DrainJournal(nil)
	nk, _, _ := f.upgrade(s, "x", k)
	got := f.tb.DrainJournal(nil)
	if len(got) != 2 || !got[0].Delete || got[0].Record.Key.Fence != k.Fence ||
		got[1].Delete || got[1].Record.Key != nk || got[1].Record.Shared || got[1].Record.Owner != "o" || got[1].Record.Deadline != f.now+10*ms {
		t.Fatalf("journal of an upgrade: %+v; want the old fence deleted, the exclusive hold put", got)
	}
	wantErr(t, "Downgrade", f.downgrade("x", nk), nil)
	got = f.tb.DrainJournal(nil)
	if len(got) != 1 || got[0].Delete || got[0].Record.Key != nk || !got[0].Record.Shared {
		t.Fatalf("journal of a downgrade: %+v; want the shared hold put", got)
	}
	if snap := f.tb.Snapshot(); len(snap) != 1 || !snap[0].Shared {
		t.Fatalf("Snapshot = %+v; want the shared hold", snap)
	}
}

// Restore brings holds back in their modes, and drops a record that
// contradicts the modes of those before it.
func TestRestore_KeepsModes(t *testing.T) {
	f := newFixture(t, Config{Shards: 2})
	rec := func(name string, size uint32, fence uint64, shared bool) HoldRecord {
		return HoldRecord{Name: name, Size: size, Key: Key{Fence: fence, Rand: fence}, Count: 1, Granted: f.now, Bound: true, Shared: shared}
	}
	recs := []HoldRecord{
		rec("r", 1, 1, true), rec("r", 1, 2, true), rec("r", 1, 3, false), // an exclusive beside readers
		rec("w", 1, 4, false), rec("w", 1, 5, true), // a reader beside a writer
		rec("sem", 2, 6, true), // shared on a semaphore
		rec("d", 1, 7, true),
	}
	recs[6].Delayed, recs[6].Bound, recs[6].Deadline = true, false, f.now+5*ms
	restored, dropped := f.tb.Restore(recs, f.now, 100*ms)
	wantEqual(t, "restored", restored, 4)
	wantEqual(t, "dropped", dropped, 3)
	f.check()
	wantSlice(t, "holders of r", f.holders("r"), []string{"s-1", "s-1"})
	wantSlice(t, "holders of w", f.holders("w"), []string{"x-1"})
	f.wantNoLock("sem")
	f.wantDelayed("d", 0, 1)
	f.mustGrant(f.session(), sharedReq("d"))
	f.wantBusy(f.session(), Request{Name: "d"})
}
