package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/internal/testproxy"
)

// clientlib's Lock across a SIGKILL of the leader (relock processes): a
// waiter queues again on the new leader, and a grant the dead leader
// committed but never delivered is adopted, not queued behind.

type libLockResult struct {
	l   *clientlib.Lock
	err error
}

func libLockAsync(ctx context.Context, c *clientlib.Client, name string, opts ...clientlib.LockOption) <-chan libLockResult {
	done := make(chan libLockResult, 1)
	go func() {
		l, err := c.Lock(ctx, name, opts...)
		done <- libLockResult{l, err}
	}()
	return done
}

func newLibClient(t *testing.T, addrs ...string) *clientlib.Client {
	t.Helper()
	c, err := clientlib.New(clientlib.Options{Addrs: addrs, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// libLockUntil polls LOCKS for name through c (the leader) until cond
// holds, within d and at most 2000 times.
func libLockUntil(t *testing.T, c *clientlib.Client, name string, d time.Duration, cond func(*clientlib.LockInfo) bool, what string) *clientlib.LockInfo {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *clientlib.LockInfo
	var lastErr error
	for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
		last, lastErr = c.Inspect(ctxFor(t, 5*time.Second), name)
		if lastErr == nil && cond(last) {
			return last
		}
		time.Sleep(min(20*time.Millisecond, time.Until(deadline)))
	}
	t.Fatalf("%s: not within %v (last: %+v, %v)", what, d, last, lastErr)
	return nil
}

// soleHolder checks that l is the lock's one hold, bound, counted once,
// with nobody waiting, and that CHECK by its key succeeds.
func soleHolder(t *testing.T, c *clientlib.Client, l *clientlib.Lock) {
	t.Helper()
	if _, err := c.Check(ctxFor(t, 10*time.Second), l.Name(), l.Key()); err != nil {
		t.Fatalf("CHECK by the Lock's key: %v", err)
	}
	info := libLockUntil(t, c, l.Name(), 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Holders) == 1 && li.Holders[0].ClientID > 0
	}, l.Name()+" bound to one connection")
	if h := info.Holders[0]; h.Fence != l.Fence() || h.Count != 1 || len(info.Waiters) != 0 {
		t.Fatalf("%s: %+v; want only fence %d, count 1, no waiters", l.Name(), info, l.Fence())
	}
}

func TestRequeue_WaiterQueuesAgainAfterLeaderKill(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	old, _ := c.waitLeader(c.nodes, 15*time.Second)
	var addrs []string
	for _, nd := range c.nodes {
		addrs = append(addrs, nd.addr)
	}
	admin := newLibClient(t, addrs...)
	ctx := ctxFor(t, 60*time.Second)
	const name = "requeue"

	// The holder is a raw connection: its hold becomes an orphan on the
	// new leader and expires with its TTL.
	holdKey := mustKey(t, old.srv.client(t), "LOCK", name, "TTL", "3000")
	wc := newLibClient(t, addrs...)
	waited := libLockAsync(ctx, wc, name)
	info := libLockUntil(t, admin, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Waiters) == 1
	}, "the waiter queued")
	owner := info.Waiters[0].Owner
	if !strings.HasPrefix(owner, "clientlib:") {
		t.Fatalf("waiter owner %q, want clientlib's per-call owner", owner)
	}

	old.srv.Kill()
	leader, took := c.waitLeader(c.others(old), 10*time.Second)
	t.Logf("leader %s killed; %s took over within %v", old.id, leader.id, took)

	var r libLockResult
	select {
	case r = <-waited:
	case <-ctx.Done():
		t.Fatal("the waiter was not granted after the orphan expired")
	}
	if r.err != nil {
		t.Fatalf("Lock across the leader kill: %v", r.err)
	}
	if r.l.Fence() <= uint64(fenceOf(t, holdKey)) {
		t.Fatalf("waiter fence %d, want > the holder's %d", r.l.Fence(), fenceOf(t, holdKey))
	}
	soleHolder(t, admin, r.l)
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRequeue_UndeliveredGrantAdoptedAfterLeaderKill(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	old, _ := c.waitLeader(c.nodes, 15*time.Second)
	var addrs []string
	for _, nd := range c.nodes {
		addrs = append(addrs, nd.addr)
	}
	admin := newLibClient(t, addrs...)
	ctx := ctxFor(t, 60*time.Second)
	const name = "adopt"

	holder := old.srv.client(t)
	holdKey := mustKey(t, holder, "LOCK", name)
	// The waiter reaches the leader through the proxy, the others directly.
	p := testproxy.Start(t, old.addr)
	waddrs := []string{p.Addr()}
	for _, nd := range c.others(old) {
		waddrs = append(waddrs, nd.addr)
	}
	wc := newLibClient(t, waddrs...)
	waited := libLockAsync(ctx, wc, name, clientlib.TTL(5*time.Second))
	info := libLockUntil(t, admin, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Waiters) == 1
	}, "the waiter queued")
	owner := info.Waiters[0].Owner

	// Granted on the leader, committed, the key dropped on its way.
	p.Freeze()
	if err := doBounded(holder, "UNLOCK", name, holdKey).Err(); err != nil {
		t.Fatal(err)
	}
	info = libLockUntil(t, admin, name, 10*time.Second, func(li *clientlib.LockInfo) bool {
		return li != nil && len(li.Holders) == 1 && li.Holders[0].Owner == owner
	}, "the waiter granted on the leader")
	grant := info.Holders[0].Fence

	old.srv.Kill()
	p.Kill()
	leader, took := c.waitLeader(c.others(old), 10*time.Second)
	t.Logf("leader %s killed; %s took over within %v", old.id, leader.id, took)

	var r libLockResult
	select {
	case r = <-waited:
	case <-ctx.Done():
		t.Fatal("Lock did not return after the leader kill")
	}
	if r.err != nil {
		t.Fatalf("Lock after its grant was lost with the leader: %v", r.err)
	}
	if r.l.Fence() != grant {
		t.Fatalf("fence %d, want the undelivered grant's %d (adopted, not granted anew)", r.l.Fence(), grant)
	}
	soleHolder(t, admin, r.l)
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := admin.Inspect(ctx, name); err != nil || info != nil {
		t.Fatalf("after Unlock: %+v, %v; want no lock", info, err)
	}
}
