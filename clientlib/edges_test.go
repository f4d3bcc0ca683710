package clientlib_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
	"github.com/relock/relock/internal/testproxy"
)

// A Wait of time.Duration(math.MaxInt64) ("wait forever") must not become
// WAIT 1 ms: durationMS rounds up with d+1ms-1, which overflows for any d
// within 1 ms of math.MaxInt64 (and the result, negative, is then made 1).
func TestLock_HugeWaitIsNotOneMillisecond(t *testing.T) {
	s := startServer(t, commands.Config{})
	c := newClient(t, s)
	held, err := c.Lock(testCtx(t, 5*time.Second), "h6:wait")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	l, err := c.Lock(ctx, "h6:wait", clientlib.Wait(time.Duration(math.MaxInt64)))
	if l != nil {
		l.Unlock(context.Background())
	}
	// Waiting until the ctx's deadline is right; so is a refusal of the
	// value (above the server's range). Not being granted within a wait
	// of 292 years after a few ms is not.
	if errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("Lock with Wait(MaxInt64) on a held lock returned %v after %v; want it to wait until its ctx's deadline (or refuse the value)", err, time.Since(start))
	}
}

// A TTL of time.Duration(math.MaxInt64) must not become TTL 1 ms (the
// hold expiring at once): it is either refused (above the server's 100
// years) or kept.
func TestLock_HugeTTLIsNotOneMillisecond(t *testing.T) {
	s := startServer(t, commands.Config{})
	c := newClient(t, s)
	l, err := c.Lock(testCtx(t, 5*time.Second), "h6:ttl", clientlib.TTL(time.Duration(math.MaxInt64)))
	if err != nil {
		return // refused: fine
	}
	defer l.Unlock(context.Background())
	select {
	case <-l.Lost():
		t.Fatalf("Lock with TTL(MaxInt64) was granted and then lost at once: %v", l.Err())
	case <-time.After(200 * time.Millisecond):
	}
	if d, err := l.Check(testCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("Check: %v (TTL(MaxInt64) sent as a tiny TTL)", err)
	} else {
		t.Logf("TTL left %v", d)
	}
}

// Upgrade "waits, ahead of every queued request, until the hold is the
// lock's only one", under a ctx that can be cancelled too. It used to be
// sent as UPGRADEs of 500 ms each under such a ctx: between two of them a
// reader queued behind the upgrade was granted, and the upgrade then
// waited for it too. It is now one UPGRADE, called off by CLIENT UNBLOCK
// if the ctx ends.
func TestUpgrade_ReaderQueuedBehindAWaitingUpgradeIsNotGrantedFirst(t *testing.T) {
	s := startServer(t, commands.Config{})
	admin := newClient(t, s)
	ca, cb, cc := newClient(t, s), newClient(t, s), newClient(t, s)
	ctx := testCtx(t, 20*time.Second)
	a, err := ca.Lock(ctx, "h6:up", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	b, err := cb.Lock(ctx, "h6:up", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	upCtx, upCancel := context.WithCancel(ctx) // can be cancelled: sliced
	defer upCancel()
	upgraded := make(chan error, 1)
	go func() { upgraded <- a.Upgrade(upCtx) }()
	upgradeWaits(t, admin, "h6:up")
	// A reader queues behind the waiting upgrade.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	readerGot := make(chan *clientlib.Lock, 1)
	go func() {
		l, err := cc.Lock(rctx, "h6:up", clientlib.Shared())
		if err != nil {
			close(readerGot)
			return
		}
		readerGot <- l
	}()
	eventually(t, 5*time.Second, func() bool {
		info := lockInfo(t, admin, "h6:up")
		return len(info.Waiters) == 2
	}, "the reader does not queue behind the upgrade")
	// While b holds, the upgrade cannot complete; the reader must stay
	// queued behind it. Watch for 1.5 s (three upgrade slices).
	readerDone := false
	select {
	case l, ok := <-readerGot:
		readerDone = true
		if ok {
			defer l.Unlock(context.Background())
			t.Errorf("a reader queued behind a waiting Upgrade was granted before it (the upgrade still waits)")
		}
	case err := <-upgraded:
		t.Fatalf("Upgrade returned %v while another reader held", err)
	case <-time.After(1500 * time.Millisecond):
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-upgraded:
		if err != nil {
			t.Fatalf("Upgrade after the other reader left: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("Upgrade still waits after the only other reader queued before it left (it waits for the reader queued behind it)")
	}
	upCancel()
	rcancel()
	a.Unlock(context.Background())
	if !readerDone {
		if l, ok := <-readerGot; ok && l != nil {
			l.Unlock(context.Background())
		}
	}
}

// "Cancelling the ctx of a waiting Lock returns the ctx's error at once."
// A Lock with Owner that re-enters a hold of this Client waits for the
// hold's opMu, which a waiting Upgrade of that hold keeps for as long as
// it waits: the re-entry then ignores its ctx.
func TestLock_OwnerReentryDuringAWaitingUpgradeHonoursItsCtx(t *testing.T) {
	s := startServer(t, commands.Config{})
	admin := newClient(t, s)
	c, other := newClient(t, s), newClient(t, s)
	ctx := testCtx(t, 20*time.Second)
	l1, err := c.Lock(ctx, "h6:re", clientlib.Shared(), clientlib.Owner("w1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.Lock(ctx, "h6:re", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	upgraded := make(chan error, 1)
	go func() { upgraded <- l1.Upgrade(ctx, clientlib.Wait(10*time.Second)) }()
	upgradeWaits(t, admin, "h6:re")

	rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer rcancel()
	type result struct {
		l   *clientlib.Lock
		err error
	}
	got := make(chan result, 1)
	start := time.Now()
	go func() {
		l, err := c.Lock(rctx, "h6:re", clientlib.Shared(), clientlib.Owner("w1"))
		got <- result{l, err}
	}()
	received := false
	select {
	case r := <-got:
		received = true
		if r.l != nil {
			r.l.Unlock(context.Background())
		}
	case <-time.After(2 * time.Second):
		t.Errorf("Lock with Owner, ctx deadline 200 ms, still blocked after %v (behind the hold's waiting Upgrade)", time.Since(start))
	}
	// End the upgrade: the other reader leaves.
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-upgraded; err != nil {
		t.Logf("Upgrade: %v", err)
	}
	if !received {
		select {
		case r := <-got:
			if r.l != nil {
				r.l.Unlock(context.Background())
			}
		case <-time.After(5 * time.Second):
			t.Error("the re-entering Lock did not return after the upgrade ended")
		}
	}
	l1.Unlock(context.Background())
}

// Two Lock calls of one Client with the same Owner, under way at the same
// time (goroutines of one worker: "host:pid:worker"), each go to the
// server on a connection of their own: Client.reenter only finds holds
// already registered.
func TestLock_ConcurrentLocksWithOneOwner(t *testing.T) {
	s := startServer(t, commands.Config{})
	admin := newClient(t, s)
	c := newClient(t, s)
	ctx := testCtx(t, 20*time.Second)
	blocker, err := admin.Lock(ctx, "h6:own")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *clientlib.Lock
		err error
	}
	got := make(chan result, 2)
	for range 2 {
		go func() {
			l, err := c.Lock(ctx, "h6:own", clientlib.Owner("worker-1"), clientlib.Wait(3*time.Second))
			got <- result{l, err}
		}()
	}
	// One waits on the server; the other waits for it in the Client, to
	// re-enter what it gets.
	waitersReach(t, admin, "h6:own", 1)
	if err := blocker.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	var locks []*clientlib.Lock
	for range 2 {
		r := <-got
		if r.err != nil {
			t.Errorf("Lock with Owner, the other one of the same owner granted: %v", r.err)
			continue
		}
		locks = append(locks, r.l)
	}
	if info := lockInfo(t, admin, "h6:own"); len(info.Holders) != 1 || info.Holders[0].Count != 2 || len(info.Waiters) != 0 {
		t.Errorf("holders %+v, %d waiters; want one hold of worker-1 counted twice", info.Holders, len(info.Waiters))
	}
	for _, l := range locks {
		l.Unlock(context.Background())
	}
}

// Two Lock calls with one Owner under way at the same time on a free
// lock: the second reaches the server before the first's hold is
// registered, and the server re-enters the first's hold for it (same key
// and fence) on the second call's connection. The Client then has two
// holds of one fence: the loss watch routes the fence's events to the
// one attached last, and forgets the fence when that one is unlocked, so
// the other, still held, never learns of a release.
func TestLock_ConcurrentOwnerLocksBothLearnOfARelease(t *testing.T) {
	s := startServer(t, commands.Config{})
	admin := newClient(t, s)
	p := testproxy.Start(t, s.Addr)
	c := newClient(t, s, func(o *clientlib.Options) { o.Addr = p.Addr() })
	warmUp(t, p, c)
	p.SetDelay(300 * time.Millisecond)
	ctx := testCtx(t, 20*time.Second)
	type result struct {
		l   *clientlib.Lock
		err error
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go func() {
		l, err := c.Lock(ctx, "h6:own2", clientlib.Owner("worker-1"))
		first <- result{l, err}
	}()
	eventually(t, 5*time.Second, func() bool {
		info, err := admin.Inspect(ctx, "h6:own2")
		return err == nil && info != nil && len(info.Holders) == 1
	}, "first Lock not granted")
	go func() {
		l, err := c.Lock(ctx, "h6:own2", clientlib.Owner("worker-1"))
		second <- result{l, err}
	}()
	r1, r2 := <-first, <-second
	if r1.err != nil || r2.err != nil {
		t.Fatalf("Lock errors: %v, %v", r1.err, r2.err)
	}
	p.SetDelay(0)
	l1, l2 := r1.l, r2.l
	defer l1.Unlock(context.Background())
	if h := lockInfo(t, admin, "h6:own2").Holders; len(h) != 1 || h[0].Count != 2 {
		t.Fatalf("holders %+v; want one hold counted twice", h)
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if h := lockInfo(t, admin, "h6:own2").Holders; len(h) != 1 || h[0].Count != 1 {
		t.Fatalf("holders %+v; want one hold counted once", h)
	}
	if _, err := admin.ForceUnlock(ctx, "h6:own2"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l1.Lost():
	case <-time.After(3 * time.Second):
		t.Fatalf("the hold was FORCEUNLOCKed, yet the Lock that still holds it (no TTL) is not reported lost within 3 s")
	}
}

// Locks pages through everything when a page is cut short by the
// server's 1 MiB reply bound (fewer locks than Count with more to come):
// paging on with After until an empty page lists every lock once.
func TestLocks_PagesOnPastAPageCutByTheReplyBound(t *testing.T) {
	s := startServer(t, commands.Config{})
	c := newClient(t, s)
	ctx := testCtx(t, 30*time.Second)
	const n = 1500
	long := strings.Repeat("n", 1000) // ~1 KB records: 1000 of them pass 1 MiB
	var names []string
	for i := range n {
		name := fmt.Sprintf("page:%04d:%s", i, long)
		if _, err := c.Redis().Do(ctx, "LOCK", name, "TTL", 60000, "DETACH").Result(); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	var got []string
	short := false
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("more than 100 pages")
		}
		page, err := c.Locks(ctx, clientlib.LocksQuery{Match: "page:*", Count: 1000, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) < 1000 && len(got)+len(page) < n {
			short = true
		}
		for _, li := range page {
			got = append(got, li.Name)
		}
		after = page[len(page)-1].Name
	}
	if !short {
		t.Error("no page was cut short by the reply bound: the test does not test it")
	}
	if !slices.Equal(got, names) {
		t.Fatalf("paged %d names; want the %d locks, each once, in order", len(got), len(names))
	}
}
