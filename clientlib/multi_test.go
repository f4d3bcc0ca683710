package clientlib_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

// holders returns how many holders name has (0 if the lock does not exist).
func holders(t testing.TB, c *clientlib.Client, name string) int {
	t.Helper()
	info, err := c.Inspect(testCtx(t, 5*time.Second), name)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	if info == nil {
		return 0
	}
	return len(info.Holders)
}

// holderClientID returns the client-id of name's only holder.
func holderClientID(t testing.TB, c *clientlib.Client, name string) int64 {
	t.Helper()
	info := lockInfo(t, c, name)
	if len(info.Holders) != 1 {
		t.Fatalf("%s has %d holders, want 1", name, len(info.Holders))
	}
	return info.Holders[0].ClientID
}

// noneHeld fails the test if any of names has a holder.
func noneHeld(t testing.TB, c *clientlib.Client, names ...string) {
	t.Helper()
	for _, name := range names {
		if n := holders(t, c, name); n != 0 {
			t.Fatalf("%s has %d holders, want none", name, n)
		}
	}
}

// unlockAll unlocks every lock, failing the test on an error.
func unlockAll(t testing.TB, ctx context.Context, locks []*clientlib.Lock) {
	t.Helper()
	for _, l := range locks {
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("unlock %s: %v", l.Name(), err)
		}
	}
}

func TestLockMany_AllOrNothing(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	b, err := other.Lock(ctx, "aon-b")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"aon-a", "aon-b", "aon-c"}
	if got, err := c.TryLockMany(ctx, names); !errors.Is(err, clientlib.ErrWaitTimeout) || got != nil {
		t.Fatalf("TryLockMany with one name held = %v, %v; want nil, ErrWaitTimeout", got, err)
	}
	noneHeld(t, other, "aon-a", "aon-c")
	if got, err := c.LockMany(ctx, names, clientlib.Wait(100*time.Millisecond)); !errors.Is(err, clientlib.ErrWaitTimeout) || got != nil {
		t.Fatalf("LockMany whose Wait ran out = %v, %v; want nil, ErrWaitTimeout", got, err)
	}
	noneHeld(t, other, "aon-a", "aon-c")
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	locks, err := c.TryLockMany(ctx, names, clientlib.TTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != len(names) {
		t.Fatalf("got %d locks, want %d", len(locks), len(names))
	}
	keys := map[string]bool{}
	for i, l := range locks {
		if l.Name() != names[i] {
			t.Fatalf("lock %d is %s, want %s (the order of the names)", i, l.Name(), names[i])
		}
		if keys[l.Key()] {
			t.Fatalf("%s: key %s repeated", l.Name(), l.Key())
		}
		keys[l.Key()] = true
		if l.Fence() <= b.Fence() {
			t.Fatalf("%s: fence %d not above the earlier grant's %d", l.Name(), l.Fence(), b.Fence())
		}
		if got := lockInfo(t, other, l.Name()).Holders; len(got) != 1 || got[0].Fence != l.Fence() {
			t.Fatalf("%s: holders %+v, want the fence %d", l.Name(), got, l.Fence())
		}
	}
	unlockAll(t, ctx, locks)
	noneHeld(t, other, names...)
}

func TestLockMany_WaitsWithoutHoldingAnyNameAndCancelLeavesNothing(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	b, err := other.Lock(ctx, "wait-b")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"wait-a", "wait-b"}

	// A wait cancelled by its ctx leaves no waiter and no hold.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.LockMany(cctx, names)
		errc <- err
	}()
	waitersReach(t, other, "wait-a", 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled LockMany = %v, want context.Canceled", err)
	}
	waitersReach(t, other, "wait-a", 0)
	waitersReach(t, other, "wait-b", 0)
	noneHeld(t, other, "wait-a")

	type result struct {
		locks []*clientlib.Lock
		err   error
	}
	done := make(chan result, 1)
	go func() {
		locks, err := c.LockMany(ctx, names)
		done <- result{locks, err}
	}()
	waitersReach(t, other, "wait-a", 1)
	waitersReach(t, other, "wait-b", 1)
	info := lockInfo(t, other, "wait-a")
	if len(info.Holders) != 0 {
		t.Fatalf("wait-a is held while LockMany waits: %+v", info.Holders)
	}
	if got := info.Waiters[0].Multi; got != 2 {
		t.Fatalf("wait-a's waiter: multi = %d, want 2", got)
	}
	// The free name is not taken by someone else meanwhile: a later
	// request queues behind the multi-lock.
	if l, err := other.TryLock(ctx, "wait-a"); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("TryLock of a name a LockMany waits for = %v, %v; want ErrWaitTimeout", l, err)
	}
	select {
	case r := <-done:
		t.Fatalf("LockMany returned while wait-b is held: %v, %v", r.locks, r.err)
	default:
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	unlockAll(t, ctx, r.locks)
}

func TestLockMany_OppositeOrdersBothFinish(t *testing.T) {
	srv := startServer(t, commands.Config{})
	ctx := testCtx(t, 30*time.Second)
	const rounds = 50
	orders := [][]string{{"opp-x", "opp-y", "opp-z"}, {"opp-z", "opp-y", "opp-x"}}
	var wg sync.WaitGroup
	errs := make(chan error, len(orders))
	var inside sync.Mutex // TryLock fails if two holders overlap
	for _, names := range orders {
		c := newClient(t, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				locks, err := c.LockMany(ctx, names, clientlib.TTL(10*time.Second))
				if err != nil {
					errs <- fmt.Errorf("%v round %d: %w", names, i, err)
					return
				}
				if !inside.TryLock() {
					errs <- fmt.Errorf("%v round %d: another LockMany holds the names too", names, i)
					return
				}
				inside.Unlock()
				for _, l := range locks {
					if err := l.Unlock(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait() // bounded by ctx: a deadlock ends in its error
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A LockMany that would wait for a lock whose holder waits for a lock of
// the LockMany's participant (here: Owner ids, since each Lock of a Client
// has its own connection) gets ErrDeadlock at once and holds nothing; the
// other participant's wait goes on and is granted when the refused one
// releases what it held.
func TestLockMany_CycleWithAHeldLockIsErrDeadlockAndHoldsNothing(t *testing.T) {
	srv := startServer(t, commands.Config{})
	a := newClient(t, srv)
	b := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	ax, err := a.Lock(ctx, "dl-x", clientlib.Owner("A"))
	if err != nil {
		t.Fatal(err)
	}
	by, err := b.Lock(ctx, "dl-y", clientlib.Owner("B"))
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan error, 1)
	go func() {
		l, err := a.Lock(ctx, "dl-y", clientlib.Owner("A"))
		if err == nil {
			err = l.Unlock(ctx)
		}
		granted <- err
	}()
	waitersReach(t, b, "dl-y", 1)

	locks, err := b.LockMany(ctx, []string{"dl-z", "dl-x"}, clientlib.Owner("B"))
	if !errors.Is(err, clientlib.ErrDeadlock) || locks != nil {
		t.Fatalf("LockMany closing a cycle = %v, %v; want nil, ErrDeadlock", locks, err)
	}
	var se *clientlib.ServerError
	if !errors.As(err, &se) || se.Code() != "DEADLOCK" {
		t.Fatalf("error %v is not a DEADLOCK *ServerError", err)
	}
	t.Logf("LockMany: %v", err)
	noneHeld(t, b, "dl-z")
	if got := waiters(t, b, "dl-x"); got != 0 {
		t.Fatalf("dl-x has %d waiters after the refused LockMany, want 0", got)
	}
	if got := waiters(t, b, "dl-y"); got != 1 {
		t.Fatalf("A's wait for dl-y is gone: %d waiters", got)
	}
	if err := by.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-granted; err != nil {
		t.Fatalf("A's wait for dl-y: %v", err)
	}
	if err := ax.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLockMany_EachLockReleasedAndRenewedSeparately(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	const ttl = 300 * time.Millisecond
	names := []string{"sep-a", "sep-b", "sep-c"}
	locks, err := c.LockMany(ctx, names, clientlib.TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	id := holderClientID(t, admin, "sep-a")
	for _, name := range names[1:] {
		if got := holderClientID(t, admin, name); got != id {
			t.Fatalf("%s is bound to client %d, sep-a to %d: want one connection", name, got, id)
		}
	}
	if err := locks[1].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	noneHeld(t, admin, "sep-b")
	// The connection still carries sep-a and sep-c: it is not handed to
	// the next Lock.
	d, err := c.Lock(ctx, "sep-d")
	if err != nil {
		t.Fatal(err)
	}
	if got := holderClientID(t, admin, "sep-d"); got == id {
		t.Fatalf("sep-d got the connection of held locks (client %d)", id)
	}
	// Several TTLs pass: the others are renewed, each by its key.
	timer := time.NewTimer(4 * ttl)
	select {
	case <-timer.C:
	case <-locks[0].Lost():
	case <-locks[2].Lost():
	}
	timer.Stop()
	for _, l := range []*clientlib.Lock{locks[0], locks[2]} {
		notLost(t, l)
		if left, err := l.Check(ctx); err != nil || left <= 0 {
			t.Fatalf("%s: Check = %v, %v", l.Name(), left, err)
		}
	}
	if err := locks[1].Unlock(ctx); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}
	unlockAll(t, ctx, []*clientlib.Lock{d, locks[2], locks[0]})
	noneHeld(t, admin, names...)
	for _, l := range locks {
		if cause := context.Cause(l.Context()); !errors.Is(cause, clientlib.ErrReleased) {
			t.Fatalf("%s: Context cause %v, want ErrReleased", l.Name(), cause)
		}
	}
	// All released: the connection carries nothing and goes back to the
	// idle list, last (after sep-d's): the next Lock reuses it.
	e, err := c.Lock(ctx, "sep-e")
	if err != nil {
		t.Fatal(err)
	}
	if got := holderClientID(t, admin, "sep-e"); got != id {
		t.Fatalf("sep-e on client %d, want the LockMany's connection %d back", got, id)
	}
	if err := e.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLockMany_ConnectionLossMarksEveryLockLost(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	locks, err := c.LockMany(ctx, []string{"loss-a", "loss-b", "loss-c"}, clientlib.TTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	id := holderClientID(t, admin, "loss-a")
	if err := admin.Redis().Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		lostWithin(t, l, time.Second) // far below the TTL
		if !errors.Is(l.Err(), clientlib.ErrConnClosed) {
			t.Fatalf("%s: Err = %v, want ErrConnClosed", l.Name(), l.Err())
		}
		if err := l.Unlock(ctx); !errors.Is(err, clientlib.ErrLost) {
			t.Fatalf("%s: Unlock after the loss = %v, want ErrLost", l.Name(), err)
		}
	}
	noneHeld(t, admin, "loss-a", "loss-b", "loss-c")
}

// A FORCEUNLOCK of one name is that Lock's loss alone, learnt from the
// name's event (no TTL, so no renewal could tell): every name is watched,
// and the connection the others live on stays open.
func TestLockMany_ForceUnlockOfOneNameLosesOnlyThatLock(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	names := []string{"force-a", "force-b", "force-c"}
	locks, err := c.LockMany(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 1} {
		if n, err := admin.ForceUnlock(ctx, names[i]); err != nil || n != 1 {
			t.Fatalf("FORCEUNLOCK %s = %d, %v", names[i], n, err)
		}
		lostWithin(t, locks[i], 2*time.Second)
		if !errors.Is(locks[i].Err(), clientlib.ErrNotHeld) {
			t.Fatalf("%s: Err = %v, want ErrNotHeld", names[i], locks[i].Err())
		}
	}
	notLost(t, locks[0])
	if _, err := locks[0].Check(ctx); err != nil {
		t.Fatalf("force-a after its siblings' loss: %v", err)
	}
	if err := locks[0].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLockMany_RefusedRequests(t *testing.T) {
	srv := startServer(t, commands.Config{MaxMulti: 3})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	if _, err := c.Lock(ctx, "ref-sem", clientlib.Size(2)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		names []string
		opts  []clientlib.LockOption
		is    error // nil: any error
	}{
		{"no names", nil, nil, nil},
		{"empty name", []string{"ref-a", ""}, nil, nil},
		{"named twice", []string{"ref-a", "ref-a"}, nil, nil},
		{"over max-multi", []string{"ref-a", "ref-b", "ref-c", "ref-d"}, nil, clientlib.ErrLimit},
		{"semaphore", []string{"ref-a", "ref-sem"}, nil, clientlib.ErrSizeMismatch},
		{"size option", []string{"ref-a"}, []clientlib.LockOption{clientlib.Size(2)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			locks, err := c.LockMany(ctx, tc.names, tc.opts...)
			if err == nil || locks != nil {
				t.Fatalf("LockMany = %v, %v; want an error", locks, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("LockMany = %v, want %v", err, tc.is)
			}
			t.Logf("%v", err)
		})
	}
	noneHeld(t, c, "ref-a", "ref-b")
}

func TestLockMany_UpgradeWaitsForTheSiblingsRelease(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	locks, err := c.LockMany(ctx, []string{"upg-a", "upg-b"}, clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	if err := locks[0].Upgrade(ctx); err == nil {
		t.Fatal("Upgrade of a Lock sharing its connection succeeded")
	}
	if err := locks[1].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := locks[0].Upgrade(ctx); err != nil {
		t.Fatalf("Upgrade once alone on the connection: %v", err)
	}
	if locks[0].Shared() {
		t.Fatal("still shared after Upgrade")
	}
	if err := locks[0].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// A DETACHed LockMany whose ctx ends while its MLOCK's reply travels
// leaves none of its detached holds behind.
func TestLockMany_DetachedAbortedInFlightLeavesNoHolds(t *testing.T) {
	c, viaProxy := slowReplies(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	names := []string{"inflight:many-a", "inflight:many-b"}
	locks, err := viaProxy.LockMany(ctx, names, clientlib.TTL(30*time.Second), clientlib.Detach())
	if err == nil {
		for _, l := range locks {
			l.Unlock(context.Background())
		}
		t.Skip("granted within the ctx")
	}
	noHoldLeft(t, c, "LockMany", err, names...)
}
