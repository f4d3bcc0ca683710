package clientlib_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
	"github.com/relock/relock/internal/testproxy"
)

// nextEvent returns the watcher's next event, failing the test if none
// comes within d or Events closes.
func nextEvent(t testing.TB, w *clientlib.Watcher, d time.Duration) clientlib.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("Events closed (Err %v)", w.Err())
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return clientlib.Event{}
}

// expectEvents reads len(want) events and compares them to want, as
// "name kind field=value" lines (Event.String).
func expectEvents(t testing.TB, w *clientlib.Watcher, want ...string) {
	t.Helper()
	for i, line := range want {
		ev := nextEvent(t, w, 5*time.Second)
		if got := ev.String(); got != line {
			t.Fatalf("event %d = %q; want %q", i, got, line)
		}
		if ev.At.IsZero() || time.Since(ev.At) > time.Minute {
			t.Fatalf("event %d: At = %v", i, ev.At)
		}
	}
}

// subscribers returns the CLIENT LIST lines of connections with a
// subscription (sub= or psub= above 0).
func subscribers(t testing.TB, c *clientlib.Client) []string {
	t.Helper()
	list, err := c.Redis().ClientList(testCtx(t, 5*time.Second)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(list, "\n") {
		if line != "" && (!strings.Contains(line, " sub=0 ") || !strings.Contains(line, " psub=0 ")) {
			out = append(out, line)
		}
	}
	return out
}

func TestWatch_SeesAcquiredReleasedFreeInOrder(t *testing.T) {
	srv := startServer(t, commands.Config{})
	watcher := newClient(t, srv)
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	all, err := watcher.Watch(ctx, "jobs:*")
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	one, err := watcher.Watch(ctx, "jobs:b") // no glob: SUBSCRIBE
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()

	a, err := c.Lock(ctx, "jobs:a", clientlib.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := c.Lock(ctx, "jobs:b")
	if err != nil {
		t.Fatal(err)
	}
	// A waiter on another Client: contended, then granted at the release.
	other := newClient(t, srv)
	granted := make(chan *clientlib.Lock, 1)
	go func() {
		l, err := other.Lock(ctx, "jobs:b")
		if err != nil {
			t.Error(err)
		}
		granted <- l
	}()
	waitersReach(t, c, "jobs:b", 1)
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := <-granted
	if b2 == nil {
		t.FailNow()
	}
	if err := b2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lock(ctx, "other"); err != nil { // not matched
		t.Fatal(err)
	}

	fa, fb, fb2 := itoa(a.Fence()), itoa(b.Fence()), itoa(b2.Fence())
	expectEvents(t, all,
		"jobs:a acquired fence="+fa,
		"jobs:a released fence="+fa+" reason=unlock",
		"jobs:a free",
		"jobs:b acquired fence="+fb,
		"jobs:b contended waiters=1",
		"jobs:b released fence="+fb+" reason=unlock",
		"jobs:b acquired fence="+fb2,
		"jobs:b released fence="+fb2+" reason=unlock",
		"jobs:b free",
	)
	expectEvents(t, one,
		"jobs:b acquired fence="+fb,
		"jobs:b contended waiters=1",
		"jobs:b released fence="+fb+" reason=unlock",
		"jobs:b acquired fence="+fb2,
		"jobs:b released fence="+fb2+" reason=unlock",
		"jobs:b free",
	)
	select {
	case ev := <-all.Events():
		t.Fatalf("unexpected event %v", ev)
	default:
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestWatch_EndsWithCtxAndClose(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)

	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.Watch(ctx, "*")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-w.Events():
		if ok {
			t.Fatal("an event after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Events not closed within 5s of the ctx's cancel")
	}
	if err := w.Err(); err != nil {
		t.Fatalf("Err after cancel = %v", err)
	}
	w.Close()

	w2, err := c.Watch(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	w3, err := c.Watch(context.Background(), "y")
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if _, ok := <-w2.Events(); ok {
		t.Fatal("an event after Close")
	}
	c.Close() // closes w3
	if _, ok := <-w3.Events(); ok {
		t.Fatal("an event after Client.Close")
	}
	if _, err := c.Watch(context.Background(), "z"); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("Watch after Close = %v; want ErrClosed", err)
	}
}

func TestWatch_OutsideLockChannelsRefused(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 10*time.Second)
	// The server refuses a pattern, not a glob character of it: an empty
	// pattern is refused by Watch itself.
	if _, err := c.Watch(ctx, ""); err == nil {
		t.Fatal("Watch of an empty pattern succeeded")
	}
}

func TestWatch_ReconnectsAfterItsConnectionIsKilled(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	w, err := c.Watch(ctx, "re*")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	subs := subscribers(t, admin)
	if len(subs) != 1 || !strings.Contains(subs[0], " psub=1 ") {
		t.Fatalf("subscribed connections: %q; want the Watcher's", subs)
	}
	id := strings.TrimPrefix(strings.Fields(subs[0])[0], "id=")
	if err := admin.Redis().Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	// Subscribed again on a new connection.
	eventually(t, 5*time.Second, func() bool {
		subs := subscribers(t, admin)
		return len(subs) == 1 && !strings.HasPrefix(subs[0], "id="+id+" ")
	}, "the Watcher did not subscribe again")
	l, err := admin.Lock(ctx, "reconnected")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	// Events of the lock taken by admin, and of admin's own loss watch...
	ev := nextEvent(t, w, 5*time.Second)
	if ev.Kind != clientlib.Acquired || ev.Lock != "reconnected" || ev.Fence != l.Fence() {
		t.Fatalf("after the reconnect: %v; want reconnected acquired", ev)
	}
}

func TestLock_ForceUnlockNoticedFromEventWithoutRenewal(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	// A 60 s TTL renews every 20 s; no TTL never renews: only the event
	// can tell.
	withTTL, err := c.Lock(ctx, "forced-ttl", clientlib.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	noTTL, err := c.Lock(ctx, "forced-nottl")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*clientlib.Lock{withTTL, noTTL} {
		start := time.Now()
		if n, err := admin.ForceUnlock(ctx, l.Name()); err != nil || n != 1 {
			t.Fatalf("ForceUnlock = %d, %v", n, err)
		}
		took := lostWithin(t, l, 100*time.Millisecond)
		t.Logf("%s: loss reported %v after FORCEUNLOCK was sent (%v after it returned)", l.Name(), time.Since(start), took)
		var lost *clientlib.LostError
		if err := l.Err(); !errors.As(err, &lost) || lost.Reason != clientlib.ReasonForced ||
			!errors.Is(err, clientlib.ErrLost) || !errors.Is(err, clientlib.ErrNotHeld) {
			t.Fatalf("Err = %v; want a *LostError matching ErrLost and ErrNotHeld, reason forced", err)
		}
		if context.Cause(l.Context()) != l.Err() {
			t.Fatalf("Context's cause = %v", context.Cause(l.Context()))
		}
	}
	// Both unsubscribed: no connection of c subscribes any more.
	eventually(t, 5*time.Second, func() bool {
		for _, line := range subscribers(t, admin) {
			if !strings.Contains(line, " sub=0 ") {
				return false
			}
		}
		return true
	}, "the loss watch is still subscribed: %q", subscribers(t, admin))
}

func TestLock_ExpiryNoticedFromEvent(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "expires", clientlib.TTL(300*time.Millisecond), clientlib.NoAutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	lostWithin(t, l, 2*time.Second)
	var lost *clientlib.LostError
	if err := l.Err(); !errors.As(err, &lost) || !errors.Is(err, clientlib.ErrExpired) {
		t.Fatalf("Err = %v; want a *LostError matching ErrExpired", err)
	}
	// The event (reason expired) or the client's own deadline, whichever
	// came first.
	if lost.Reason != "" && lost.Reason != clientlib.ReasonExpired {
		t.Fatalf("Reason = %q", lost.Reason)
	}
}

func TestLock_UnlockByKeyElsewhereNoticedFromEvent(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "handed", clientlib.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Unlock(ctx, "handed", l.Key()); err != nil {
		t.Fatal(err)
	}
	lostWithin(t, l, time.Second)
	var lost *clientlib.LostError
	if err := l.Err(); !errors.As(err, &lost) || lost.Reason != clientlib.ReasonUnlock || !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("Err = %v; want ErrNotHeld with reason unlock", err)
	}
}

func TestLock_OwnUnlockIsNotALoss(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	watcher := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	w, err := watcher.Watch(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 50; i++ {
		start := time.Now()
		l, err := c.Lock(ctx, "own", clientlib.TTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		// Far below ReadTimeout (3 s), the most Lock waits for the
		// subscription of a name it unsubscribes and subscribes again.
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Lock %d took %v", i, d)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock %d: %v", i, err)
		}
		// By the time the watcher has the release, so has c's loss watch
		// (one server, delivered alike); c's Lock must not call it a loss.
		for ev := nextEvent(t, w, 5*time.Second); ev.Kind != clientlib.Free; ev = nextEvent(t, w, 5*time.Second) {
		}
		select {
		case <-l.Lost():
			t.Fatalf("Unlock %d reported as a loss: %v", i, l.Err())
		default:
		}
		if !errors.Is(context.Cause(l.Context()), clientlib.ErrReleased) {
			t.Fatalf("Context's cause = %v; want ErrReleased", context.Cause(l.Context()))
		}
	}
}

func TestLock_LossWatchResubscribesAndChecksAfterReconnect(t *testing.T) {
	srv := startServer(t, commands.Config{})
	c := newClient(t, srv)
	admin := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "rewatch", clientlib.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	subs := subscribers(t, admin)
	if len(subs) != 1 || !strings.Contains(subs[0], " sub=1 ") {
		t.Fatalf("subscribed connections: %q; want c's loss watch", subs)
	}
	id := strings.TrimPrefix(strings.Fields(subs[0])[0], "id=")
	if err := admin.Redis().Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	// Released while the watch reconnects, or after: either the event or
	// the check made on subscribing again tells the Lock at once.
	if _, err := admin.ForceUnlock(ctx, "rewatch"); err != nil {
		t.Fatal(err)
	}
	lostWithin(t, l, 2*time.Second)
	if !errors.Is(l.Err(), clientlib.ErrNotHeld) {
		t.Fatalf("Err = %v; want ErrNotHeld", l.Err())
	}
}

func TestClient_CloseStopsWatchersAndLossWatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, err := runServer(commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	ctx := testCtx(t, 30*time.Second)
	before := runtime.NumGoroutine()

	c, err := clientlib.New(clientlib.Options{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "*")
	if err != nil {
		t.Fatal(err)
	}
	held, err := c.Lock(ctx, "g1", clientlib.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	released, err := c.Lock(ctx, "g2")
	if err != nil {
		t.Fatal(err)
	}
	if err := released.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w, 5*time.Second)
	if runtime.NumGoroutine() <= before {
		t.Fatalf("goroutines %d, %d before: is the watch running?", runtime.NumGoroutine(), before)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if held.Err() == nil {
		t.Fatal("a held lock not lost at Close")
	}
	for range w.Events() { // buffered events, then closed
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestLock_LockDelayKeepsTheSlotAfterAnInvoluntaryRelease(t *testing.T) {
	srv := startServer(t, commands.Config{})
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	c := newClient(t, srv)
	if _, err := c.Lock(ctx, "delayed", clientlib.LockDelay(400*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	c.Close() // its connection closes: an involuntary release
	closed := time.Now()
	eventually(t, 5*time.Second, func() bool {
		info, err := other.Inspect(ctx, "delayed")
		return err == nil && info != nil && len(info.Holders) == 0 && info.Delayed == 1
	}, "LOCKS shows no slot in lock-delay")
	if l, err := other.TryLock(ctx, "delayed"); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("TryLock during the lock-delay = %v, %v; want ErrWaitTimeout", l, err)
	}
	l, err := other.Lock(ctx, "delayed", clientlib.Wait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(closed); d < 350*time.Millisecond {
		t.Fatalf("granted %v after the release, within the 400ms lock-delay", d)
	}
	l.Unlock(ctx)
}

func TestLock_LockDelayZeroOverridesTheServerDefault(t *testing.T) {
	srv := startServer(t, commands.Config{LockDelay: time.Minute})
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)

	for _, tt := range []struct {
		opts    []clientlib.LockOption
		delayed int
	}{
		{[]clientlib.LockOption{clientlib.LockDelay(0)}, 0},
		{nil, 1}, // the server's --lock-delay
	} {
		c := newClient(t, srv)
		name := "override-" + strconv.Itoa(tt.delayed)
		if _, err := c.Lock(ctx, name, tt.opts...); err != nil {
			t.Fatal(err)
		}
		c.Close()
		eventually(t, 5*time.Second, func() bool {
			info, err := other.Inspect(ctx, name)
			if err != nil || (info != nil && len(info.Holders) > 0) {
				return false
			}
			return tt.delayed == 0 && info == nil || tt.delayed == 1 && info != nil && info.Delayed == 1
		}, "%s: want %d slots in lock-delay", name, tt.delayed)
	}
	if _, err := other.Lock(ctx, "bad", clientlib.LockDelay(61*time.Second)); err == nil || !strings.Contains(err.Error(), "ERR") {
		t.Fatalf("LockDelay(61s) = %v; want the server's ERR", err)
	}
	if _, err := other.Lock(ctx, "bad", clientlib.LockDelay(-time.Second)); err == nil {
		t.Fatal("LockDelay(-1s) accepted")
	}
}

// A hold without a TTL that the server releases (here FORCEUNLOCK) while
// its grant is on its way to the client is reported lost: the "released
// <fence> forced" event comes before the hold is attached to the loss
// watch (only after the LOCK reply was read), and a hold without a TTL is
// never renewed, so the event must not be dropped.
func TestLock_ForceUnlockWhileTheGrantIsInFlightIsReportedLost(t *testing.T) {
	s := startServer(t, commands.Config{})
	p := testproxy.Start(t, s.Addr)
	admin := newClient(t, s)
	c := newClient(t, s, func(o *clientlib.Options) { o.Addr = p.Addr() })
	// Let c learn that the server has no --default-ttl (its first hold
	// without a TTL asks, with RENEW), as any long-running client has.
	l0, err := c.Lock(testCtx(t, 5*time.Second), "inflight:warm")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := l0.Unlock(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// From now on the LOCK's key reply takes 400 ms to arrive; events do not.
	p.BulkOnly()
	p.SetDelay(400 * time.Millisecond)
	type res struct {
		l   *clientlib.Lock
		err error
	}
	done := make(chan res, 1)
	go func() {
		l, err := c.Lock(testCtx(t, 10*time.Second), "inflight:flight")
		done <- res{l, err}
	}()
	// The grant is made at once; force it off while its reply travels.
	eventually(t, 5*time.Second, func() bool {
		info, err := admin.Inspect(testCtx(t, 5*time.Second), "inflight:flight")
		return err == nil && info != nil && len(info.Holders) == 1
	}, "inflight:flight granted")
	if n, err := admin.ForceUnlock(testCtx(t, 5*time.Second), "inflight:flight"); err != nil || n != 1 {
		t.Fatalf("FORCEUNLOCK = %d, %v", n, err)
	}
	r := <-done
	if r.err != nil {
		return // refusing the lock would be fine too
	}
	defer r.l.Unlock(context.Background())
	select {
	case <-r.l.Lost():
	case <-time.After(3 * time.Second):
		info, _ := admin.Inspect(testCtx(t, 5*time.Second), "inflight:flight")
		t.Fatalf("Lock returned a hold (fence %d) the server had already released (LOCKS: %+v); 3 s later Lost is still open and Err = %v",
			r.l.Fence(), info, r.l.Err())
	}
}
