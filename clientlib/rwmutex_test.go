package clientlib_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

// lockInfo returns name's LOCKS record, failing the test if it has none.
func lockInfo(t testing.TB, c *clientlib.Client, name string) *clientlib.LockInfo {
	t.Helper()
	info, err := c.Inspect(testCtx(t, 5*time.Second), name)
	if err != nil || info == nil {
		t.Fatalf("inspect %s = %v, %v", name, info, err)
	}
	return info
}

// upgradeWaits waits until name has a waiting UPGRADE.
func upgradeWaits(t testing.TB, c *clientlib.Client, name string) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool {
		info := lockInfo(t, c, name)
		return len(info.Waiters) > 0 && info.Waiters[0].Upgrade
	}, "%s has no waiting UPGRADE", name)
}

// notLost fails the test if l was reported lost.
func notLost(t testing.TB, l *clientlib.Lock) {
	t.Helper()
	select {
	case <-l.Lost():
		t.Fatalf("lock %s reported lost: %v", l.Name(), l.Err())
	default:
	}
}

func TestRWMutex_ReadersShareAndAWriterWaitsForThem(t *testing.T) {
	srv := startServer(t, commands.Config{})
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	r1 := newClient(t, srv).RWMutex("doc", clientlib.TTL(10*time.Second))
	r2 := newClient(t, srv).RWMutex("doc", clientlib.TTL(10*time.Second))
	w := newClient(t, srv).RWMutex("doc", clientlib.TTL(10*time.Second))

	if err := r1.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.RLock(ctx); err != nil { // granted while r1 reads
		t.Fatal(err)
	}
	info := lockInfo(t, admin, "doc")
	if len(info.Holders) != 2 || info.Holders[0].Mode != "shared" || info.Holders[1].Mode != "shared" {
		t.Fatalf("holders = %+v; want two shared", info.Holders)
	}
	if !r1.RHeld().Shared() || r1.RHeld().Fence() == r2.RHeld().Fence() {
		t.Fatal("the readers' holds are not two shared holds")
	}
	if w.TryLock(ctx) {
		t.Fatal("TryLock by a writer succeeded while readers read")
	}
	locked := make(chan error, 1)
	go func() { locked <- w.Lock(ctx) }()
	waitersReach(t, admin, "doc", 1)
	if info := lockInfo(t, admin, "doc"); info.Waiters[0].Mode != "exclusive" {
		t.Fatalf("waiter = %+v; want exclusive", info.Waiters[0])
	}
	// A reader behind a waiting writer waits too (writers never starve).
	if r1.TryRLock(ctx) {
		t.Fatal("TryRLock overtook a waiting writer")
	}
	if err := r1.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		t.Fatalf("writer granted while a reader reads (err %v)", err)
	default:
	}
	if err := r2.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("writer not granted after the readers left")
	}
	if l := w.Held(); l == nil || l.Shared() {
		t.Fatalf("Held = %v; want the exclusive hold", l)
	}
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Unlock(ctx); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("second Unlock = %v; want ErrNotHeld", err)
	}
	if err := r1.RUnlock(ctx); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("RUnlock without a read lock = %v; want ErrNotHeld", err)
	}
}

func TestLock_UpgradeRenewsWithTheNewKey(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	const ttl = 300 * time.Millisecond

	l, err := c.Lock(ctx, "up", clientlib.Shared(), clientlib.TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	oldKey, oldFence := l.Key(), l.Fence()
	if !l.Shared() {
		t.Fatal("Shared() = false for a shared hold")
	}
	if err := l.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if l.Shared() || l.Key() == oldKey || l.Fence() <= oldFence {
		t.Fatalf("after Upgrade: shared %v, key %q (was %q), fence %d (was %d)",
			l.Shared(), l.Key(), oldKey, l.Fence(), oldFence)
	}
	if _, err := other.Check(ctx, "up", oldKey); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("CHECK with the old key = %v; want ErrNotHeld", err)
	}
	if info := lockInfo(t, other, "up"); len(info.Holders) != 1 ||
		info.Holders[0].Mode != "exclusive" || info.Holders[0].Fence != l.Fence() {
		t.Fatalf("holders = %+v; want one exclusive hold with fence %d", info.Holders, l.Fence())
	}
	// Several TTLs: only renewals with the new key keep it. Every CHECK
	// must find it held with a TTL of at most ttl.
	start := time.Now()
	for n := 0; time.Since(start) < 6*ttl; n++ {
		if n > 10000 {
			t.Fatal("too many checks")
		}
		left, err := other.Check(ctx, "up", l.Key())
		if err != nil || left <= 0 || left > ttl {
			t.Fatalf("CHECK %v after the upgrade = %v, %v; want 0 < ttl ≤ %v", time.Since(start), left, err, ttl)
		}
		notLost(t, l)
		time.Sleep(20 * time.Millisecond) // pacing, not waiting for a condition
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := other.Inspect(ctx, "up"); info != nil {
		t.Fatalf("after Unlock: %+v", info)
	}
}

func TestLock_UpgradeWaitRunningOutKeepsTheSharedHold(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	a, err := c.Lock(ctx, "rw", clientlib.Shared(), clientlib.TTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.Lock(ctx, "rw", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	key := a.Key()
	start := time.Now()
	if err := a.Upgrade(ctx, clientlib.Wait(200*time.Millisecond)); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("Upgrade with b reading = %v; want ErrWaitTimeout", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Fatalf("Upgrade returned after %v; want about 200ms", d)
	}
	// A ctx cancelled while the upgrade waits (in slices) ends it too.
	cctx, cancel := context.WithCancel(ctx)
	upgraded := make(chan error, 1)
	go func() { upgraded <- a.Upgrade(cctx) }()
	upgradeWaits(t, other, "rw")
	cancel()
	select {
	case err := <-upgraded:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Upgrade with a cancelled ctx = %v; want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Upgrade did not return within 5s of its ctx's cancel")
	}
	if !a.Shared() || a.Key() != key {
		t.Fatalf("after the failed upgrades: shared %v, key changed %v", a.Shared(), a.Key() != key)
	}
	if _, err := other.Check(ctx, "rw", key); err != nil {
		t.Fatalf("CHECK of the kept shared hold: %v", err)
	}
	notLost(t, a)
	if info := lockInfo(t, other, "rw"); len(info.Holders) != 2 || len(info.Waiters) != 0 {
		t.Fatalf("LOCKS = %+v; want two shared holders, no waiter", info)
	}
	// Once b leaves, the upgrade goes through.
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Upgrade(ctx, clientlib.Wait(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLock_SecondUpgradeGetsErrDeadlock(t *testing.T) {
	srv := startServer(t, commands.Config{})
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	a, err := newClient(t, srv).Lock(ctx, "pair", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	b, err := newClient(t, srv).Lock(ctx, "pair", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	upgraded := make(chan error, 1)
	go func() { upgraded <- a.Upgrade(ctx) }()
	upgradeWaits(t, admin, "pair")
	err = b.Upgrade(ctx)
	var se *clientlib.ServerError
	if !errors.Is(err, clientlib.ErrDeadlock) || !errors.As(err, &se) || se.Code() != "DEADLOCK" {
		t.Fatalf("second Upgrade = %v; want ErrDeadlock", err)
	}
	notLost(t, b)
	if !b.Shared() {
		t.Fatal("b is no longer shared after ErrDeadlock")
	}
	// b gives way: a's upgrade completes.
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-upgraded:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("a's upgrade did not complete")
	}
	if a.Shared() {
		t.Fatal("a is still shared after its upgrade")
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLock_UpgradedHoldIsNotReportedLostAndItsNewFenceIsWatched(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	w, err := admin.Watch(ctx, "watched")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// No TTL: nothing renews, only the events can tell a loss.
	l, err := c.Lock(ctx, "watched", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	old := l.Fence()
	if err := l.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	// By the time the watcher has the events, so has c's loss watch.
	expectEvents(t, w,
		"watched acquired fence="+itoa(old),
		"watched released fence="+itoa(old)+" reason=upgraded",
		"watched acquired fence="+itoa(l.Fence()))
	notLost(t, l)
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
	// A release of the new fence is a loss, noticed from its event.
	if n, err := admin.ForceUnlock(ctx, "watched"); err != nil || n != 1 {
		t.Fatalf("ForceUnlock = %d, %v", n, err)
	}
	lostWithin(t, l, time.Second)
	var lost *clientlib.LostError
	if err := l.Err(); !errors.As(err, &lost) || lost.Fence != l.Fence() || lost.Reason != clientlib.ReasonForced {
		t.Fatalf("Err = %v; want a loss of fence %d, reason forced", err, l.Fence())
	}
}

func TestLock_UpgradeOfAHoldReleasedWhileWaitingIsALoss(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	a, err := c.Lock(ctx, "ending", clientlib.Shared(), clientlib.TTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.Lock(ctx, "ending", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unlock(ctx)
	upgraded := make(chan error, 1)
	go func() { upgraded <- a.Upgrade(ctx) }()
	upgradeWaits(t, other, "ending")
	// Someone with a's key releases it while the upgrade waits.
	if err := other.Unlock(ctx, "ending", a.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-upgraded:
		if !errors.Is(err, clientlib.ErrLost) || !errors.Is(err, clientlib.ErrNotHeld) {
			t.Fatalf("Upgrade of a hold released meanwhile = %v; want a loss matching ErrNotHeld", err)
		}
	case <-ctx.Done():
		t.Fatal("Upgrade did not return")
	}
	lostWithin(t, a, time.Second)
}

func TestRWMutex_DowngradeLetsAQueuedReaderIn(t *testing.T) {
	srv := startServer(t, commands.Config{})
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	w := newClient(t, srv).RWMutex("cache", clientlib.TTL(10*time.Second))
	r := newClient(t, srv).RWMutex("cache", clientlib.TTL(10*time.Second))

	if err := w.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	key, fence := w.Held().Key(), w.Held().Fence()
	read := make(chan error, 1)
	go func() { read <- r.RLock(ctx) }()
	waitersReach(t, admin, "cache", 1)
	if err := w.Downgrade(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the queued reader was not granted after Downgrade")
	}
	if w.Held() != nil {
		t.Fatal("Held() after Downgrade; want nil")
	}
	l := w.RHeld()
	if l == nil || !l.Shared() || l.Key() != key || l.Fence() != fence {
		t.Fatalf("after Downgrade: %v; want the same key, shared", l)
	}
	info := lockInfo(t, admin, "cache")
	if len(info.Holders) != 2 || info.Holders[0].Mode != "shared" || info.Holders[1].Mode != "shared" {
		t.Fatalf("holders = %+v; want two shared", info.Holders)
	}
	// Upgrade again once the reader left: the RWMutex is the writer.
	if err := r.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Held() == nil || w.RHeld() != nil || w.Held().Fence() <= fence {
		t.Fatalf("after Upgrade: Held %v, RHeld %v", w.Held(), w.RHeld())
	}
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLock_SharedHoldIsRenewedWhileItsUpgradeWaits(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	const ttl = 300 * time.Millisecond
	a, err := c.Lock(ctx, "long-wait", clientlib.Shared(), clientlib.TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.Lock(ctx, "long-wait", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	key := a.Key()
	upgraded := make(chan error, 1)
	go func() { upgraded <- a.Upgrade(ctx) }()
	upgradeWaits(t, other, "long-wait")
	// The hold's connection waits for the UPGRADE; the renewals go by key
	// on another one. Several TTLs later it is still held.
	start := time.Now()
	for n := 0; time.Since(start) < 5*ttl; n++ {
		if n > 10000 {
			t.Fatal("too many checks")
		}
		if left, err := other.Check(ctx, "long-wait", key); err != nil || left <= 0 || left > ttl {
			t.Fatalf("CHECK %v into the upgrade's wait = %v, %v", time.Since(start), left, err)
		}
		notLost(t, a)
		time.Sleep(20 * time.Millisecond) // pacing, not waiting for a condition
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-upgraded:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the upgrade did not complete")
	}
	notLost(t, a)
	if _, err := other.Check(ctx, "long-wait", a.Key()); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// Upgrade sends one UPGRADE: without Wait or a ctx deadline the server's
// --default-wait bounds it, whatever the ctx; a ctx that ends first calls
// it off (CLIENT UNBLOCK) at once. Either way the shared hold is kept.
func TestLock_UpgradeWithoutWaitFollowsDefaultWait(t *testing.T) {
	srv := startServer(t, commands.Config{DefaultWait: 300 * time.Millisecond})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	a, err := c.Lock(ctx, "upgrade:dw", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unlock(ctx)
	b, err := other.Lock(ctx, "upgrade:dw", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unlock(ctx)
	// No Wait, no deadline: --default-wait, under a ctx that cannot end
	// and under one that can.
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	for _, uctx := range []context.Context{context.Background(), bctx} {
		start := time.Now()
		if err := a.Upgrade(uctx); !errors.Is(err, clientlib.ErrWaitTimeout) || time.Since(start) > 3*time.Second {
			t.Fatalf("Upgrade without Wait or deadline, server --default-wait 300ms = %v after %v; want ErrWaitTimeout after about 300ms", err, time.Since(start))
		}
	}
	// A ctx (here with a long deadline) cancelled while it waits: the
	// wait is called off then.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const cancelAfter = time.Second
	time.AfterFunc(cancelAfter, cancel)
	start := time.Now()
	err = a.Upgrade(cctx)
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) || took < cancelAfter || took > cancelAfter+2*time.Second {
		t.Fatalf("Upgrade(ctx cancelled after %v) = %v after %v; want the ctx's error when it is cancelled", cancelAfter, err, took)
	}
	// With Wait, the wait is bounded whatever the ctx.
	cctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	if err := a.Upgrade(cctx2, clientlib.Wait(300*time.Millisecond)); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("Upgrade(cancellable ctx, Wait 300ms) = %v; want ErrWaitTimeout", err)
	}
	if !a.Shared() || a.Err() != nil {
		t.Fatalf("after the failed upgrades: shared %v, Err %v; want the shared hold kept", a.Shared(), a.Err())
	}
}
