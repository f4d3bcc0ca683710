package locktable

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestMulti_AllOrNothingAtOnce(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	a, b := f.session(), f.session()
	ky := f.mustGrant(b, Request{Name: "y"})
	before := f.tb.Dump(f.now)
	if ks, out, err := f.acquireMulti(a, multiReqs(Request{}, "x", "y"), false); out != Busy || err != nil || ks != nil {
		t.Fatalf("MTRYLOCK x y with y held = %v, %v, %v; want Busy", ks, outcomeName(out), err)
	}
	wantEqual(t, "state after a busy MTRYLOCK", f.tb.Dump(f.now), before)
	f.mustUnlock("y", ky)
	ks := f.mustGrantMulti(a, Request{TTL: 10 * ms}, "y", "x", "z")
	if !(ks[0].Fence < ks[1].Fence && ks[1].Fence < ks[2].Fence) {
		t.Fatalf("keys %v; want fences in request order", ks)
	}
	wantEqual(t, "bound", a.Bound(), 3)
	for i, name := range []string{"y", "x", "z"} {
		if _, err := f.checkKey(name, ks[i]); err != nil {
			t.Fatalf("Check(%s) = %v", name, err)
		}
	}
	for _, tc := range []struct {
		what string
		reqs []Request
	}{
		{"no names", nil},
		{"a name twice", multiReqs(Request{}, "p", "p")},
		{"a size", multiReqs(Request{Size: 2}, "p", "q")},
		{"options that differ", []Request{{Name: "p"}, {Name: "q", TTL: 1}}},
	} {
		_, _, err := f.acquireMulti(b, tc.reqs, true)
		wantErr(t, tc.what, err, ErrBadRequest)
	}
	f.mustGrant(b, Request{Name: "sem", Size: 2})
	_, _, err := f.acquireMulti(a, multiReqs(Request{}, "p", "sem"), true)
	wantErr(t, "a semaphore's name", err, ErrSizeMismatch)
	f.wantNoLock("p")
}

func TestMulti_WaitsWithoutHoldingAndLaterRequestsQueueBehind(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	a, b, c := f.session(), f.session(), f.session()
	ky := f.mustGrant(b, Request{Name: "y"})
	f.mustQueueMulti(a, Request{}, "x", "y")
	wantEqual(t, "a bound while waiting", a.Bound(), 0)
	li := f.lockInfo("x")
	if len(li.Holds) != 0 || len(li.Waiters) != 1 || li.Waiters[0].Multi != 2 {
		t.Fatalf("x = %+v; want no hold, the multi-lock's leg", li)
	}
	// x is free, but the multi-lock waits on it: later requests queue.
	if _, out, _ := f.acquire(c, Request{Name: "x"}, false); out != Busy {
		t.Fatalf("TRYLOCK x = %v; want Busy behind the multi-lock", outcomeName(out))
	}
	f.mustQueue(c, Request{Name: "x"})
	wantSlice(t, "x's queue", f.waiters("x"), []int64{int64(a.ID), int64(c.ID)})

	// The last name frees: all granted at once, in b's events.
	f.mustUnlock("y", ky)
	if len(f.ev.Grants) != 1 || !slices.Equal(f.ev.Grants[0].Names, []string{"x", "y"}) || len(f.ev.Grants[0].Keys) != 2 || f.ev.Grants[0].Session != a {
		t.Fatalf("grants on unlock = %+v; want the multi-lock's, x and y", f.ev.Grants)
	}
	wantEqual(t, "a bound", a.Bound(), 2)
	wantEqual(t, "c waits", c.Waiting(), true)
	g := f.ev.Grants[0]
	f.mustUnlock("x", g.Keys[0])
	wantSlice(t, "granted after x", f.grantedTo(), []uint64{c.ID})
}

func TestMulti_OppositeOrdersBothComplete(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	h, a, b := f.session(), f.session(), f.session()
	kx, ky := f.mustGrant(h, Request{Name: "x"}), f.mustGrant(h, Request{Name: "y"})
	f.mustQueueMulti(a, Request{}, "x", "y")
	f.mustQueueMulti(b, Request{}, "y", "x")
	f.mustUnlock("x", kx)
	wantEqual(t, "grants after x", len(f.ev.Grants), 0)
	f.mustUnlock("y", ky)
	wantSlice(t, "granted after y", f.grantedTo(), []uint64{a.ID})
	ka := f.ev.Grants[0].Keys
	f.mustUnlock("x", ka[0])
	f.mustUnlock("y", ka[1])
	wantSlice(t, "granted after a", f.grantedTo(), []uint64{b.ID})
	wantEqual(t, "b's names", slices.Equal(f.ev.Grants[0].Names, []string{"y", "x"}), true)
}

func TestMulti_CancelAndCloseRemoveEveryLeg(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	h, a, r := f.session(), f.session(), f.session()
	f.mustGrant(h, Request{Name: "y"})
	f.mustQueueMulti(a, Request{}, "x", "y", "z")
	f.mustQueue(r, Request{Name: "x"})
	wantEqual(t, "CancelWaitAt", f.cancelWait(a), true)
	wantSlice(t, "granted on cancel", f.grantedTo(), []uint64{r.ID})
	wantSlice(t, "y's queue", f.waiters("y"), nil)
	f.wantNoLock("z")
	wantEqual(t, "a waits", a.Waiting(), false)

	f.mustQueueMulti(a, Request{}, "y", "z")
	f.closeSession(a)
	wantSlice(t, "y's queue after close", f.waiters("y"), nil)
	f.wantNoLock("z")
}

func TestMulti_Shared(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	h, a, b, w := f.session(), f.session(), f.session(), f.session()
	f.mustGrant(h, sharedReq("x"))
	f.mustGrantMulti(a, Request{Shared: true}, "x", "q")
	ky := f.mustGrant(h, Request{Name: "y"})
	f.mustQueueMulti(b, Request{Shared: true}, "x", "y")
	f.mustQueue(w, Request{Name: "x"})
	f.mustUnlock("y", ky)
	wantSlice(t, "granted", f.grantedTo(), []uint64{b.ID})
	li := f.lockInfo("x")
	wantEqual(t, "x's holds", len(li.Holds), 3)
	wantEqual(t, "w waits", w.Waiting(), true)
}

func TestDeadlock_TwoSessions(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	a, b := f.session(), f.session()
	f.mustGrant(a, Request{Name: "x"})
	f.mustGrant(b, Request{Name: "y"})
	f.mustQueue(a, Request{Name: "y"})
	before := f.tb.Dump(f.now)
	_, _, err := f.acquire(b, Request{Name: "x"}, true)
	wantDeadlock(t, "LOCK x by b", err, "x", "y")
	wantEqual(t, "state", f.tb.Dump(f.now), before)
	wantEqual(t, "b waits", b.Waiting(), false)
	wantSlice(t, "x's queue", f.waiters("x"), nil)
	// A multi-lock that would wait on x deadlocks alike.
	_, _, err = f.acquireMulti(b, multiReqs(Request{}, "z", "x"), true)
	wantDeadlock(t, "MLOCK z x by b", err, "x", "y")
	f.wantNoLock("z")
}

func TestDeadlock_OwnerAcrossSessions(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s1, s2, b := f.session(), f.session(), f.session()
	f.mustGrant(s1, Request{Name: "x", Owner: "o"})
	f.mustGrant(b, Request{Name: "y"})
	f.mustQueue(s2, Request{Name: "y", Owner: "o"})
	_, _, err := f.acquire(b, Request{Name: "x"}, true)
	wantDeadlock(t, "LOCK x by b", err, "x", "y")
	// Without the owner, s2's wait is its own: no cycle.
	f.cancelWait(s2)
	f.mustQueue(s2, Request{Name: "y"})
	f.mustQueue(b, Request{Name: "x"})
}

func TestDeadlock_ChainOfThree(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	a, b, c := f.session(), f.session(), f.session()
	f.mustGrant(a, Request{Name: "x"})
	f.mustGrant(b, Request{Name: "y"})
	f.mustGrant(c, Request{Name: "z"})
	f.mustQueue(a, Request{Name: "y"})
	f.mustQueue(b, Request{Name: "z"})
	_, _, err := f.acquire(c, Request{Name: "x"}, true)
	wantDeadlock(t, "LOCK x by c", err, "x", "y", "z")
}

func TestDeadlock_Upgrade(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	a, b := f.session(), f.session()
	ka := f.mustGrant(a, sharedReq("x"))
	f.mustGrant(b, sharedReq("x"))
	f.mustGrant(a, Request{Name: "y"})
	f.mustQueue(b, Request{Name: "y"})
	_, _, err := f.upgrade(a, "x", ka)
	wantDeadlock(t, "UPGRADE x by a", err, "x", "y")
	wantEqual(t, "a waits", a.Waiting(), false)
}

func TestDeadlock_NoFalseReportWhenTheChainEndsInAHolderThatDoesNotWait(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	a, b, c, d := f.session(), f.session(), f.session(), f.session()
	f.mustGrant(a, Request{Name: "x"})
	f.mustGrant(b, Request{Name: "y"})
	f.mustGrant(c, Request{Name: "z"})
	f.mustQueue(a, Request{Name: "y"})
	f.mustQueue(b, Request{Name: "z"})
	f.mustQueue(d, Request{Name: "x"}) // d → a → b → c, who waits for nothing
	e := f.session()
	f.mustQueueMulti(e, Request{}, "q", "x") // e → a → b → c likewise
	// But c asking for x closes c → a → b → c.
	_, _, err := f.acquire(c, Request{Name: "x"}, true)
	wantDeadlock(t, "LOCK x by c", err, "x", "y", "z")
}

// TestMulti_Liveness: sessions take random sets of names with MLOCK, in
// random orders, hold them a while and release them; every request is
// granted in the end, and none ever fails.
func TestMulti_Liveness(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e"}
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		f := newFixture(t, Config{Shards: 1 << rng.IntN(4)})
		const n = 6
		var ss []*Session
		held := map[*Session][]Key{}
		heldNames := map[*Session][]string{}
		asked := 0
		for range n {
			ss = append(ss, f.session())
		}
		collect := func() {
			for _, g := range f.ev.Grants {
				held[g.Session], heldNames[g.Session] = g.Keys, g.Names
			}
		}
		for step := 0; step < 300 || len(held) > 0 || slices.ContainsFunc(ss, (*Session).Waiting); step++ {
			s := ss[rng.IntN(n)]
			switch {
			case held[s] != nil && (step >= 300 || rng.IntN(2) == 0):
				ks, ns := held[s], heldNames[s]
				delete(held, s)
				for i := range ks {
					f.mustUnlock(ns[i], ks[i])
					collect()
				}
			case held[s] == nil && !s.Waiting() && step < 300:
				pick := slices.Clone(names)
				rng.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
				pick = pick[:1+rng.IntN(3)]
				ks, out, err := f.acquireMulti(s, multiReqs(Request{Shared: rng.IntN(4) == 0}, pick...), true)
				if err != nil {
					t.Fatalf("seed %d: MLOCK %q = %v", seed, pick, err)
				}
				asked++
				collect()
				if out == Granted {
					held[s], heldNames[s] = ks, pick
				}
			}
			if step > 100_000 {
				t.Fatalf("seed %d: requests still wait after %d steps: %s", seed, step, f.tb.Dump(f.now))
			}
		}
		f.wantEmpty()
	}
}
