package clientlib_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
	"go.uber.org/goleak"
)

func TestLock_WaitersGrantedInFIFOOrder(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	first, err := c.Lock(ctx, "fifo")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	type grant struct {
		i int
		l *clientlib.Lock
	}
	granted := make(chan grant, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		// Each waiter on a Client of its own, queued only after the one
		// before it is in the queue, so that the queue order is known.
		ci := newClient(t, srv)
		go func() {
			l, err := ci.Lock(ctx, "fifo")
			if err != nil {
				errs <- err
				return
			}
			granted <- grant{i, l}
		}()
		waitersReach(t, c, "fifo", i+1)
	}
	if err := first.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lastFence := first.Fence()
	for want := 0; want < n; want++ {
		select {
		case g := <-granted:
			if g.i != want {
				t.Fatalf("granted waiter %d, want %d", g.i, want)
			}
			if g.l.Fence() <= lastFence {
				t.Fatalf("fence %d not above previous %d", g.l.Fence(), lastFence)
			}
			lastFence = g.l.Fence()
			if err := g.l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		case err := <-errs:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("waiter %d not granted", want)
		}
	}
}

func TestLock_CancelledWaitLeavesQueueAndNextWaiterGetsLock(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	holder, err := c.Lock(ctx, "cancel")
	if err != nil {
		t.Fatal(err)
	}
	bCtx, cancelB := context.WithCancel(ctx)
	defer cancelB()
	bErr := make(chan error, 1)
	go func() {
		l, err := c.Lock(bCtx, "cancel")
		if l != nil {
			l.Unlock(ctx)
			err = errors.New("cancelled waiter was granted")
		}
		bErr <- err
	}()
	waitersReach(t, c, "cancel", 1)
	cGot := make(chan *clientlib.Lock, 1)
	go func() {
		l, err := c.Lock(ctx, "cancel")
		if err != nil {
			t.Error(err)
		}
		cGot <- l
	}()
	waitersReach(t, c, "cancel", 2)

	start := time.Now()
	cancelB()
	select {
	case err := <-bErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Lock returned %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("cancelled Lock returned after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled Lock did not return")
	}
	waitersReach(t, c, "cancel", 1) // the server dropped B's waiter

	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-cGot:
		if l == nil {
			t.Fatal("second waiter failed")
		}
		info, err := c.Inspect(ctx, "cancel")
		if err != nil || info == nil || len(info.Holders) != 1 || info.Holders[0].Fence != l.Fence() {
			t.Fatalf("holders = %+v, %v; want only the second waiter (fence %d)", info, err, l.Fence())
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("second waiter not granted")
	}
}

func TestLock_ContextDeadlineAbortsWait(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	holder, err := c.Lock(ctx, "deadline")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Unlock(ctx)

	// Longer than go-redis's default read timeout would allow, to show
	// that nothing but the ctx ends the wait.
	wctx, cancel := context.WithTimeout(ctx, 3500*time.Millisecond)
	defer cancel()
	start := time.Now()
	l, err := c.Lock(wctx, "deadline")
	took := time.Since(start)
	if l != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v, %v; want context.DeadlineExceeded", l, err)
	}
	if took < 3400*time.Millisecond || took > 4500*time.Millisecond {
		t.Fatalf("Lock returned after %v, want about 3.5s", took)
	}
	waitersReach(t, c, "deadline", 0)
}

func TestLock_WaitOptionAndTryLockReturnErrWaitTimeout(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	holder, err := c.Lock(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Unlock(ctx)

	l, err := c.TryLock(ctx, "busy")
	if l != nil || !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("TryLock = %v, %v; want nil, ErrWaitTimeout", l, err)
	}
	start := time.Now()
	l, err = c.Lock(ctx, "busy", clientlib.Wait(150*time.Millisecond))
	if l != nil || !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("Lock(Wait) = %v, %v; want nil, ErrWaitTimeout", l, err)
	}
	if d := time.Since(start); d < 140*time.Millisecond {
		t.Fatalf("Lock(Wait 150ms) returned after %v", d)
	}
	waitersReach(t, c, "busy", 0)
}

func TestLock_SizeMismatchIsTypedError(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 10*time.Second)
	l, err := c.Lock(ctx, "sized", clientlib.Size(3))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	_, err = c.Lock(ctx, "sized", clientlib.Size(2))
	if !errors.Is(err, clientlib.ErrSizeMismatch) {
		t.Fatalf("err = %v, want ErrSizeMismatch", err)
	}
	var se *clientlib.ServerError
	if !errors.As(err, &se) || se.Code() != "SIZEMISMATCH" {
		t.Fatalf("err = %#v, want a *ServerError with code SIZEMISMATCH", err)
	}
}

func TestLock_AutoRenewKeepsShortTTLLock(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	l, err := c.Lock(ctx, "renewed", clientlib.TTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
		t.Fatalf("lost: %v", l.Err())
	case <-time.After(2 * time.Second): // the duration under test
	}
	left, err := other.Check(ctx, "renewed", l.Key())
	if err != nil || left <= 0 || left > 300*time.Millisecond {
		t.Fatalf("CHECK after 2s = %v, %v; want 0 < ttl ≤ 300ms", left, err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if l.Err() != nil {
		t.Fatalf("Err after Unlock = %v", l.Err())
	}
	if cause := context.Cause(l.Context()); !errors.Is(cause, clientlib.ErrReleased) {
		t.Fatalf("Context cause after Unlock = %v, want ErrReleased", cause)
	}
}

func TestLock_ServerDefaultTTLIsRenewed(t *testing.T) {
	srv := startServer(t, commands.Config{DefaultTTL: 300 * time.Millisecond})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "default-ttl")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
		t.Fatalf("lost: %v", l.Err())
	case <-time.After(time.Second):
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLock_LossReportedWithinRenewIntervalAfterForceUnlock(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	const ttl = 300 * time.Millisecond
	l, err := c.Lock(ctx, "forced", clientlib.TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := admin.ForceUnlock(ctx, "forced"); err != nil || n != 1 {
		t.Fatalf("ForceUnlock = %d, %v; want 1", n, err)
	}
	// One renew interval (TTL/3), plus scheduling slack under -race.
	took := lostWithin(t, l, ttl/3+150*time.Millisecond)
	t.Logf("loss reported %v after FORCEUNLOCK", took)
	err = l.Err()
	var lost *clientlib.LostError
	if !errors.Is(err, clientlib.ErrLost) || !errors.Is(err, clientlib.ErrNotHeld) || !errors.As(err, &lost) {
		t.Fatalf("Err = %v, want a *LostError matching ErrLost and ErrNotHeld", err)
	}
	if lost.Fence != l.Fence() || lost.Name != "forced" {
		t.Fatalf("LostError = %+v", lost)
	}
	if l.Context().Err() == nil || !errors.Is(context.Cause(l.Context()), clientlib.ErrLost) {
		t.Fatalf("Context not cancelled with the loss: %v", context.Cause(l.Context()))
	}
	if err := l.Unlock(ctx); !errors.Is(err, clientlib.ErrLost) {
		t.Fatalf("Unlock after loss = %v, want ErrLost", err)
	}
}

func TestLock_LossReportedAtOnceWhenServerStops(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	withTTL, err := c.Lock(ctx, "stop-ttl", clientlib.TTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	noTTL, err := c.Lock(ctx, "stop-nottl")
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	for _, l := range []*clientlib.Lock{withTTL, noTTL} {
		// Far below the 5 s TTL: the closed connection is seen at once.
		took := lostWithin(t, l, time.Second)
		t.Logf("%s: loss reported %v after the server stopped", l.Name(), took)
		if !errors.Is(l.Err(), clientlib.ErrConnClosed) {
			t.Fatalf("%s: Err = %v, want ErrConnClosed", l.Name(), l.Err())
		}
	}
}

func TestLock_LossReportedWhenConnectionKilled(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "killed")
	if err != nil {
		t.Fatal(err)
	}
	info, err := admin.Inspect(ctx, "killed")
	if err != nil || info == nil || len(info.Holders) != 1 {
		t.Fatalf("inspect = %+v, %v", info, err)
	}
	if err := admin.Redis().Do(ctx, "CLIENT", "KILL", "ID", info.Holders[0].ClientID).Err(); err != nil {
		t.Fatal(err)
	}
	lostWithin(t, l, time.Second)
	if !errors.Is(l.Err(), clientlib.ErrConnClosed) {
		t.Fatalf("Err = %v, want ErrConnClosed", l.Err())
	}
}

func TestLock_NoAutoRenewReportsExpiry(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "manual", clientlib.TTL(200*time.Millisecond), clientlib.NoAutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	took := lostWithin(t, l, 2*time.Second)
	if took < 350*time.Millisecond {
		t.Fatalf("expiry reported after %v, before the renewed 400ms TTL", took)
	}
	if !errors.Is(l.Err(), clientlib.ErrExpired) {
		t.Fatalf("Err = %v, want ErrExpired", l.Err())
	}
	if _, err := c.Check(ctx, "manual", l.Key()); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("CHECK after expiry = %v, want ErrNotHeld", err)
	}
}

func TestLock_OwnerReentryCountsDown(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 10*time.Second)
	a, err := c.Lock(ctx, "reentrant", clientlib.Owner("w1"), clientlib.TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Lock(ctx, "reentrant", clientlib.Owner("w1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Key() != b.Key() || a.Fence() != b.Fence() {
		t.Fatalf("re-entry keys %s, %s differ", a.Key(), b.Key())
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Check(ctx, "reentrant", b.Key()); err != nil {
		t.Fatalf("after one of two unlocks: %v", err)
	}
	if l, err := other.TryLock(ctx, "reentrant"); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("TryLock while re-entered = %v, %v", l, err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := other.TryLock(ctx, "reentrant")
	if err != nil {
		t.Fatalf("TryLock after both unlocks: %v", err)
	}
	l.Unlock(ctx)
	if err := b.Unlock(ctx); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}
}

func TestLock_DetachedHoldUsableByKeyElsewhere(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 10*time.Second)
	l, err := c.Lock(ctx, "detached", clientlib.Detach(), clientlib.TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ttl, err := other.Renew(ctx, "detached", l.Key(), 0); err != nil || ttl != time.Second {
		t.Fatalf("Renew by key = %v, %v", ttl, err)
	}
	if err := other.Unlock(ctx, "detached", l.Key()); err != nil {
		t.Fatal(err)
	}
	lostWithin(t, l, 2*time.Second)
	if !errors.Is(l.Err(), clientlib.ErrNotHeld) {
		t.Fatalf("Err = %v, want ErrNotHeld", l.Err())
	}
}

func TestClient_UnixSocket(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, commands.Config{UnixSocket: filepath.Join(dir, "relock.sock")})
	c := newClient(t, srv)
	ctx := testCtx(t, 10*time.Second)
	l, err := c.Lock(ctx, "unix", clientlib.TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClient_CloseLosesHoldsAndAbortsWaits(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c, err := clientlib.New(clientlib.Options{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	other := newClient(t, srv)
	ctx := testCtx(t, 10*time.Second)
	held, err := c.Lock(ctx, "close", clientlib.TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	otherHeld, err := other.Lock(ctx, "close-2")
	if err != nil {
		t.Fatal(err)
	}
	defer otherHeld.Unlock(ctx)
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.Lock(ctx, "close-2")
		waitErr <- err
	}()
	waitersReach(t, other, "close-2", 1)
	c.Close()
	if !errors.Is(held.Err(), clientlib.ErrClosed) || !errors.Is(held.Err(), clientlib.ErrLost) {
		t.Fatalf("Err after Close = %v", held.Err())
	}
	select {
	case err := <-waitErr:
		if !errors.Is(err, clientlib.ErrClosed) {
			t.Fatalf("waiting Lock returned %v, want ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("waiting Lock did not return after Close")
	}
	waitersReach(t, other, "close-2", 0)
	if l, err := other.TryLock(ctx, "close"); err != nil {
		t.Fatalf("lock of a closed Client not released: %v", err)
	} else {
		l.Unlock(ctx)
	}
	if _, err := c.Lock(ctx, "close"); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("Lock after Close = %v, want ErrClosed", err)
	}
}

func TestClient_CloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, err := runServer(commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	ctx := testCtx(t, 10*time.Second)
	c, err := clientlib.New(clientlib.Options{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	var locks []*clientlib.Lock
	for i := 0; i < 5; i++ {
		l, err := c.Lock(ctx, fmt.Sprintf("leak-%d", i), clientlib.TTL(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, l)
	}
	locks[0].Unlock(ctx)
	if _, err := c.ForceUnlock(ctx, "leak-1"); err != nil {
		t.Fatal(err)
	}
	lostWithin(t, locks[1], 2*time.Second)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestLock_ServerDownIsAnErrorNotAHang(t *testing.T) {
	srv := startServer(t, commands.Config{})
	addr := srv.Addr
	srv.Stop(t)
	c := newClient(t, &testServer{Addr: addr})
	ctx := testCtx(t, 10*time.Second)
	start := time.Now()
	l, err := c.Lock(ctx, "down")
	if l != nil || err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with the server down = %v, %v; want a dial error", l, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Lock failed after %v", d)
	}
}

func BenchmarkLock_UncontendedCycle(b *testing.B) {
	srv := startServer(b, commands.Config{})
	c := newClient(b, srv)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := c.Lock(ctx, "bench", clientlib.TTL(10*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// A DETACHed Lock whose ctx ends while the grant is on its way back (the
// server granted it; the reply had not arrived) returns the ctx's error
// and leaves no hold behind: closing the connection does not release a
// detached hold, so the call releases it by its OWNER in the background.
func TestLock_DetachedLockAbortedInFlightLeavesNoHold(t *testing.T) {
	c, viaProxy := slowReplies(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	l, err := viaProxy.Lock(ctx, "inflight:detach", clientlib.TTL(30*time.Second), clientlib.Detach())
	if err == nil {
		l.Unlock(context.Background())
		t.Skip("granted within the ctx: the proxy did not delay the reply")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v, want the ctx's deadline", err)
	}
	// The caller got no Lock: the lock must be free (within a moment).
	noHoldLeft(t, c, "Lock", err, "inflight:detach")
}

// The same with TryLock, whose reply wait is bounded by
// Options.ReadTimeout: a TryLock DETACH whose reply comes after
// ReadTimeout returns an error and leaves no hold behind.
func TestLock_DetachedTryLockTimingOutLeavesNoHold(t *testing.T) {
	c, viaProxy := slowReplies(t, func(o *clientlib.Options) { o.ReadTimeout = 100 * time.Millisecond })
	_, err := viaProxy.TryLock(testCtx(t, 5*time.Second), "inflight:trydetach", clientlib.TTL(30*time.Second), clientlib.Detach())
	if err == nil {
		t.Skip("granted within ReadTimeout: the proxy did not delay the reply")
	}
	noHoldLeft(t, c, "TryLock", err, "inflight:trydetach")
}
