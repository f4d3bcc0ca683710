package clientlib_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/internal/testproxy"
)

// lockResult is what a Lock call running in a goroutine returned.
type lockResult struct {
	l   *clientlib.Lock
	err error
}

func lockAsync(ctx context.Context, c *clientlib.Client, name string, opts ...clientlib.LockOption) <-chan lockResult {
	done := make(chan lockResult, 1)
	go func() {
		l, err := c.Lock(ctx, name, opts...)
		done <- lockResult{l, err}
	}()
	return done
}

// inspectUntil polls LOCKS for name through c (its leader) until cond
// holds, at most 2000 times within d, and returns the last view.
func inspectUntil(t *testing.T, c *clientlib.Client, name string, d time.Duration, cond func(*clientlib.LockInfo) bool, what string) *clientlib.LockInfo {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
		info, err := c.Inspect(testCtx(t, 5*time.Second), name)
		if err == nil && cond(info) {
			return info
		}
		last = fmt.Sprintf("%+v, %v", info, err)
		time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
	}
	t.Fatalf("%s: not within %v (last: %s)", what, d, last)
	return nil
}

// waiterOwner waits until name has exactly one waiter and returns its
// OWNER, the one clientlib gave the Lock call.
func waiterOwner(t *testing.T, c *clientlib.Client, name string) string {
	t.Helper()
	info := inspectUntil(t, c, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Waiters) == 1
	}, name+" has one waiter")
	owner := info.Waiters[0].Owner
	if !strings.HasPrefix(owner, "clientlib:") {
		t.Fatalf("the waiter's owner is %q, want one made by clientlib for the call", owner)
	}
	return owner
}

// assertSoleHolder checks the end state: l is the one hold of its lock,
// bound to a connection, counted once, with nobody waiting, and CHECK by
// its key succeeds.
func assertSoleHolder(t *testing.T, c *clientlib.Client, l *clientlib.Lock) {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	if _, err := c.Check(ctx, l.Name(), l.Key()); err != nil {
		t.Fatalf("CHECK by the Lock's key: %v", err)
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatalf("Lock.Check: %v", err)
	}
	info := inspectUntil(t, c, l.Name(), 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Holders) == 1 && li.Holders[0].ClientID > 0
	}, l.Name()+" bound to one connection")
	h := info.Holders[0]
	if h.Fence != l.Fence() || h.Count != 1 || len(info.Waiters) != 0 {
		t.Fatalf("%s: %+v; want only fence %d, count 1, no waiters", l.Name(), info, l.Fence())
	}
}

// A waiter queued on a leader that crashes is queued again on the new
// leader by Lock itself, and gets the lock when the holder releases it or
// the holder's orphan expires.
func TestCluster_WaiterRequeuedAfterLeaderCrash(t *testing.T) {
	for _, release := range []string{"unlock", "orphan expires"} {
		t.Run(release, func(t *testing.T) {
			cl := startCluster(t, 3)
			old := cl.leader()
			addrs := cl.addrs(old)
			admin := newClusterClient(t, addrs)
			ctx := testCtx(t, 30*time.Second)
			const name = "requeue"

			var holder *clientlib.Lock
			var holderFence uint64
			if release == "unlock" {
				hc := newClusterClient(t, addrs)
				l, err := hc.Lock(ctx, name, clientlib.TTL(3*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				holder, holderFence = l, l.Fence()
			} else {
				// A raw connection: nothing re-attaches its hold, which the
				// new leader keeps as an orphan until its TTL runs out.
				raw := redis.NewClient(&redis.Options{Addr: cl.nodes[old].srv.Addr, PoolSize: 1, MaxRetries: -1})
				t.Cleanup(func() { raw.Close() })
				key, err := raw.Do(ctx, "LOCK", name, "TTL", 3000).Text()
				if err != nil {
					t.Fatal(err)
				}
				fmt.Sscanf(key, "%d-", &holderFence)
			}

			wc := newClusterClient(t, addrs)
			waited := lockAsync(ctx, wc, name)
			owner := waiterOwner(t, admin, name)

			cl.crash(old)
			if cl.leader() == old {
				t.Fatal("the crashed node still leads")
			}
			// Queued again on the new leader, with the same owner.
			inspectUntil(t, admin, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
				return li != nil && len(li.Waiters) == 1 && li.Waiters[0].Owner == owner
			}, "the waiter queued again on the new leader")
			select {
			case r := <-waited:
				t.Fatalf("Lock returned while the lock was held: %v, %v", r.l, r.err)
			default:
			}
			if holder != nil {
				if err := holder.Unlock(ctx); err != nil {
					t.Fatalf("the holder's Unlock: %v", err)
				}
			}
			var r lockResult
			select {
			case r = <-waited:
			case <-ctx.Done():
				t.Fatal("the waiter was not granted the lock")
			}
			if r.err != nil {
				t.Fatalf("Lock after the failover: %v", r.err)
			}
			if r.l.Fence() <= holderFence {
				t.Fatalf("the waiter's fence %d, want > %d", r.l.Fence(), holderFence)
			}
			assertSoleHolder(t, admin, r.l)
			if err := r.l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The grant was committed just before the leader died and its key never
// reached the client: the new leader keeps the hold as an orphan, and
// Lock's request, sent again with the same owner, re-enters and adopts it
// instead of queueing behind it (or returning an error).
func TestCluster_GrantCommittedBeforeCrashIsAdopted(t *testing.T) {
	cl := startCluster(t, 3)
	old := cl.leader()
	addrs := cl.addrs(old)
	admin := newClusterClient(t, addrs)
	hc := newClusterClient(t, addrs)
	ctx := testCtx(t, 30*time.Second)
	const name = "adopt"

	holder, err := hc.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	// The waiter reaches the leader through a proxy first, the followers
	// directly.
	p := testproxy.Start(t, cl.nodes[old].srv.Addr)
	var waddrs []string
	waddrs = append(waddrs, p.Addr())
	for i, cn := range cl.nodes {
		if i != old {
			waddrs = append(waddrs, cn.srv.Addr)
		}
	}
	wc := newClusterClient(t, waddrs)
	waited := lockAsync(ctx, wc, name)
	owner := waiterOwner(t, admin, name)

	// The grant happens on the leader, but its key goes nowhere.
	p.Freeze()
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	info := inspectUntil(t, admin, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Holders) == 1 && li.Holders[0].Owner == owner
	}, "the waiter granted on the leader")
	grant := info.Holders[0].Fence

	cl.crash(old)
	p.Kill()
	var r lockResult
	select {
	case r = <-waited:
	case <-ctx.Done():
		t.Fatal("Lock did not return after the failover")
	}
	if r.err != nil {
		t.Fatalf("Lock after a grant lost in the crash: %v", r.err)
	}
	if r.l.Fence() != grant {
		t.Fatalf("Lock returned fence %d, want the orphaned grant's %d (adopted, not a new grant)", r.l.Fence(), grant)
	}
	assertSoleHolder(t, admin, r.l)
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := admin.Inspect(ctx, name); err != nil || info != nil {
		t.Fatalf("after Unlock: %+v, %v; want no lock", info, err)
	}
}

// The holder's UNLOCK grants the waiter right as the leader crashes:
// whether the grant was committed, delivered, or lost is left to timing.
// Either way Lock returns the lock, held by CHECK, and no two Locks ever
// believe they hold it at once.
func TestCluster_GrantRacingLeaderCrash(t *testing.T) {
	cl := startCluster(t, 3)
	old := cl.leader()
	addrs := cl.addrs(old)
	admin := newClusterClient(t, addrs)
	hc := newClusterClient(t, addrs)
	wc := newClusterClient(t, addrs)
	ctx := testCtx(t, 30*time.Second)
	const name = "race"

	holder, err := hc.Lock(ctx, name, clientlib.TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waited := lockAsync(ctx, wc, name, clientlib.TTL(2*time.Second))
	waiterOwner(t, admin, name)

	unlocked := make(chan error, 1)
	go func() { unlocked <- holder.Unlock(ctx) }()
	cl.crash(old)
	uerr := <-unlocked
	t.Logf("the holder's Unlock: %v", uerr)

	var r lockResult
	select {
	case r = <-waited:
	case <-ctx.Done():
		t.Fatal("Lock did not return after the failover")
	}
	if r.err != nil {
		t.Fatalf("Lock: %v", r.err)
	}
	t.Logf("waiter: fence %d (holder's %d)", r.l.Fence(), holder.Fence())
	if r.l.Fence() <= holder.Fence() {
		t.Fatalf("the waiter's fence %d, want > the holder's %d", r.l.Fence(), holder.Fence())
	}
	// The holder's Lock ended before the waiter's began: Unlock returned,
	// and whatever it left (an orphan whose UNLOCK was lost) is gone.
	select {
	case <-holder.Context().Done():
	default:
		t.Fatal("the holder's Lock still believes it holds the lock")
	}
	if _, err := admin.Check(ctx, name, holder.Key()); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("CHECK by the holder's key = %v, want NOTHELD", err)
	}
	assertSoleHolder(t, admin, r.l)
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
