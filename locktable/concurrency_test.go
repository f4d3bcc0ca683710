package locktable

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrent_SharedLocksSmoke lets several goroutines acquire (shared
// or exclusive), wait, cancel, unlock, renew, upgrade, downgrade, expire
// and close sessions on a few shared names,
// while one more goroutine kills sessions from outside (as a connection's
// close callback or CLIENT KILL would). Run it with -race. Afterwards the
// table must be consistent, and empty once every session is closed and the
// detached holds have expired.
func TestConcurrent_SharedLocksSmoke(t *testing.T) {
	const workers = 8
	iters := 20000
	if raceEnabled || testing.Short() {
		iters = 10000
	}
	tb := New(Config{Shards: 4, MaxWaiters: 6, MaxHoldsPerSession: 3})
	names := []string{"n0", "n1", "n2", "sem"}
	sizes := map[string]uint32{"sem": 3}

	var (
		clock   atomic.Int64 // every op takes the next tick
		nextID  atomic.Uint64
		allMu   sync.Mutex
		all     []*Session // every session made, for the final checks
		victims = make(chan *Session, workers)
		grants  atomic.Int64
		// Interleavings worth seeing happen at all: a wait granted before
		// its cancel, and a session closed under its user's feet.
		lateCancels, killedUnderFeet atomic.Int64
		start                        = make(chan struct{})
	)
	clock.Store(1)
	newSession := func() *Session {
		s := tb.NewSession(nextID.Add(1), nil)
		allMu.Lock()
		all = append(all, s)
		allMu.Unlock()
		return s
	}
	expected := func(err error) bool {
		for _, e := range []error{nil, ErrNotHeld, ErrAlreadyWaiting, ErrTooManyWaiters, ErrTooManyHolds, ErrSessionClosed, ErrDetachMismatch,
			ErrModeMismatch, ErrNotShared, ErrNotExclusive, ErrDeadlock, ErrSizeMismatch} {
			if errors.Is(err, e) {
				return true
			}
		}
		return false
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			var ev Events
			type held struct {
				name string
				key  Key
			}
			var keys []held
			s := newSession()
			for range iters {
				ev.Reset()
				name := names[rng.IntN(len(names))]
				switch n := rng.IntN(23); {
				case n < 8:
					req := Request{Name: name, Size: sizes[name], Rand: rng.Uint64(), Shared: name != "sem" && rng.IntN(2) == 0}
					if rng.IntN(3) == 0 {
						req.TTL = 1 + rng.Int64N(200)
						req.Detach = rng.IntN(4) == 0
					}
					if rng.IntN(4) == 0 {
						req.Owner = "w"
					}
					k, out, err := tb.Acquire(&ev, s, req, clock.Add(1), rng.IntN(2) == 0)
					if !expected(err) {
						t.Errorf("Acquire: unexpected error %v", err)
						return
					}
					switch {
					case errors.Is(err, ErrSessionClosed):
						killedUnderFeet.Add(1)
						s, keys = newSession(), nil
					case out == Granted:
						keys = append(keys, held{name, k})
					case out == Queued && rng.IntN(2) == 0:
						// Granted meanwhile if false; its key then went to
						// whoever freed the capacity, and closing the session
						// will release it.
						if !tb.CancelWaitAt(&ev, s, clock.Add(1)) {
							lateCancels.Add(1)
						}
					}
				case n >= 20 && n < 22 && len(keys) > 0:
					i := rng.IntN(len(keys))
					k, out, err := tb.Upgrade(&ev, s, keys[i].name, keys[i].key, rng.Uint64(), clock.Add(1))
					if !expected(err) {
						t.Errorf("Upgrade: unexpected error %v", err)
						return
					}
					switch {
					case errors.Is(err, ErrSessionClosed):
						killedUnderFeet.Add(1)
						s, keys = newSession(), nil
					case out == Granted:
						keys[i].key = k
					case out == Queued && rng.IntN(2) == 0:
						tb.CancelWaitAt(&ev, s, clock.Add(1))
					}
				case n == 22 && len(keys) > 0:
					h := keys[rng.IntN(len(keys))]
					if err := tb.Downgrade(&ev, h.name, h.key, clock.Add(1)); !expected(err) {
						t.Errorf("Downgrade: unexpected error %v", err)
						return
					}
				case n < 13 && len(keys) > 0:
					i := rng.IntN(len(keys))
					if err := tb.Unlock(&ev, keys[i].name, keys[i].key, clock.Add(1)); !expected(err) {
						t.Errorf("Unlock: unexpected error %v", err)
						return
					}
					keys = append(keys[:i], keys[i+1:]...)
				case n < 15 && len(keys) > 0:
					h := keys[rng.IntN(len(keys))]
					if _, err := tb.Renew(&ev, s, h.name, h.key, rng.Int64N(100), clock.Add(1)); !expected(err) {
						t.Errorf("Renew: unexpected error %v", err)
					}
					if _, err := tb.Check(&ev, h.name, h.key, clock.Add(1)); !expected(err) {
						t.Errorf("Check: unexpected error %v", err)
					}
				case n < 16:
					tb.Expire(&ev, clock.Add(1))
				case n < 18:
					tb.CloseSession(&ev, s, clock.Add(1))
					s, keys = newSession(), nil
				case n < 19:
					select {
					case victims <- s: // the killer may close it any time
					default:
					}
				case n == 19:
					if rng.IntN(10) == 0 {
						tb.ForceUnlock(&ev, name, clock.Add(1))
					}
				}
				grants.Add(int64(len(ev.Grants)))
				for _, g := range ev.Grants {
					if g.Name == "" || g.Key.IsZero() != g.Lost || (g.Lost && g.Upgrade) {
						t.Errorf("malformed grant %+v", g)
					}
				}
			}
			ev.Reset()
			tb.CloseSession(&ev, s, clock.Add(1))
		}()
	}

	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		var ev Events
		for s := range victims {
			ev.Reset()
			tb.CloseSession(&ev, s, clock.Add(1))
		}
	}()
	close(start)
	wg.Wait()
	close(victims)
	<-killerDone
	if t.Failed() {
		return
	}
	if grants.Load() == 0 {
		t.Errorf("no waiter was ever granted; the test does not exercise hand-off")
	}
	t.Logf("%d grants to waiters, %d waits granted before their cancel, %d sessions killed under their user",
		grants.Load(), lateCancels.Load(), killedUnderFeet.Load())

	checkInvariants(t, tb, all...)
	for _, s := range all {
		var ev Events
		tb.CloseSession(&ev, s, clock.Load())
	}
	checkInvariants(t, tb, all...)
	// Only detached holds can be left; they go at their deadline.
	for _, li := range tb.Locks(Query{}, clock.Load()) {
		if len(li.Waiters) > 0 {
			t.Fatalf("lock %q has waiters after every session closed: %+v", li.Name, li.Waiters)
		}
		for _, h := range li.Holds {
			if !h.Detached {
				t.Fatalf("lock %q has a bound hold after every session closed: %+v", li.Name, h)
			}
		}
	}
	var ev Events
	if next := tb.Expire(&ev, clock.Load()+1_000); next != 0 {
		t.Fatalf("Expire left a deadline at %d", next)
	}
	if len(ev.Grants) != 0 {
		t.Fatalf("Expire granted %d requests of closed sessions", len(ev.Grants))
	}
	checkInvariants(t, tb, all...)
	if got := tb.Stats(); got != (Stats{}) {
		t.Fatalf("Stats() = %+v after every session closed and every TTL ran out; want zero", got)
	}
	if got := tb.Locks(Query{}, clock.Load()); len(got) != 0 {
		t.Fatalf("Locks() = %+v; want none", got)
	}
}

// TestConcurrent_DumpWhileLocksComeAndGo calls Dump while other goroutines
// create and delete the locks it lists. The package promises that a Table
// is safe for concurrent use, Dump included.
func TestConcurrent_DumpWhileLocksComeAndGo(t *testing.T) {
	const flickerers, names = 3, 16
	tb := New(Config{Shards: 4})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range flickerers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ev Events
			s := tb.NewSession(uint64(w+1), nil)
			for now := int64(1); ; now++ {
				select {
				case <-stop:
					return
				default:
				}
				name := "flicker/" + strconv.Itoa(w) + "/" + strconv.Itoa(int(now%names))
				ev.Reset()
				k, _, err := tb.Acquire(&ev, s, Request{Name: name, Rand: 1}, now, false)
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				if err := tb.Unlock(&ev, name, k, now); err != nil {
					t.Errorf("Unlock: %v", err)
					return
				}
			}
		}()
	}
	iters := 30000
	if raceEnabled {
		iters = 3000
	}
	for range iters {
		if p := dumpPanic(tb); p != nil {
			// The panic left a shard mutex locked, so the other goroutines
			// may be stuck for good: fail without waiting for them.
			t.Fatalf("Dump panicked: %v", p)
		}
	}
	close(stop)
	wg.Wait()
}

// dumpPanic calls tb.Dump and returns what it panicked with, if anything.
func dumpPanic(tb *Table) (p any) {
	defer func() { p = recover() }()
	tb.Dump(1)
	return nil
}
