package clientlib_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

// Review finding: Lock.Upgrade's documentation says "The wait is bounded
// by ctx and by opts' Wait ...; without either, by the server's
// --default-wait", and the server applies --default-wait to an UPGRADE
// without WAIT. But with a ctx that can be cancelled and has no deadline
// (signal.NotifyContext, a request's ctx, errgroup's), Upgrade sends its
// wait as UPGRADEs of 500 ms each, every one with an explicit WAIT, so
// --default-wait never applies and Upgrade waits until the ctx ends,
// where Lock with the same ctx gives up at --default-wait.
func TestReview_UpgradeWithCancellableCtxHonoursServerDefaultWait(t *testing.T) {
	srv := startServer(t, commands.Config{DefaultWait: 300 * time.Millisecond})
	c := newClient(t, srv)
	other := newClient(t, srv)
	ctx := testCtx(t, 30*time.Second)
	a, err := c.Lock(ctx, "review:rw", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unlock(ctx)
	b, err := other.Lock(ctx, "review:rw", clientlib.Shared())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unlock(ctx)
	// For comparison: a LOCK with such a ctx gives up at --default-wait.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	if _, err := other.Lock(cctx, "review:w"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lock(cctx, "review:w"); !errors.Is(err, clientlib.ErrWaitTimeout) || time.Since(start) > 3*time.Second {
		t.Fatalf("Lock = %v after %v; want ErrWaitTimeout after --default-wait", err, time.Since(start))
	}
	// The same ctx for Upgrade (cancelled after 4 s at the latest).
	time.AfterFunc(4*time.Second, cancel)
	start = time.Now()
	err = a.Upgrade(cctx)
	took := time.Since(start)
	if !errors.Is(err, clientlib.ErrWaitTimeout) || took > 3*time.Second {
		t.Fatalf("Upgrade without Wait, server --default-wait 300ms = %v after %v; want ErrWaitTimeout after about 300ms", err, took)
	}
}

// Review finding: in cluster mode a Watcher is a pub/sub connection to
// one member (the leader the Client knew of, else the first address), and
// when that member goes away it "reconnects" to the same address only, for
// ever: the Watcher stays open, Err is nil, and no event of the cluster
// reaches it again, although every other member publishes them. (The
// Client's own loss watch has the same connection.)
func TestReview_ClusterWatcherSurvivesTheLossOfItsMember(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	addrs := cl.addrs(leader) // followers first
	c := newClusterClient(t, addrs)
	ctx := testCtx(t, 30*time.Second)
	w, err := c.Watch(ctx, "review:*")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The Watcher is on addrs[0], a follower: it goes away (the cluster
	// keeps its leader and majority).
	for i, cn := range cl.nodes {
		if cn.srv.Addr == addrs[0] {
			cl.crash(i)
		}
	}
	l, err := c.Lock(ctx, "review:watched")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("Events closed (Err %v)", w.Err())
			}
			if ev.Kind == clientlib.Acquired && ev.Lock == "review:watched" {
				return
			}
		case <-timeout:
			t.Fatalf("no event for review:watched within 10s after the Watcher's member went away (Err %v): the Watcher is deaf", w.Err())
		}
	}
}

// Review finding, the same for a held lock: the Client's loss watch is a
// pub/sub connection to one member too. Once that member is gone, a hold
// without a TTL (never renewed) that the leader then releases — here
// FORCEUNLOCK — is never reported lost: Lost stays open although the
// package documentation promises that the "released" event marks it lost
// "within milliseconds — holds without a TTL, which never renew,
// included".
func TestReview_ClusterLossWatchSurvivesTheLossOfItsMember(t *testing.T) {
	cl := startCluster(t, 3)
	leader := cl.leader()
	addrs := cl.addrs(leader) // followers first
	c := newClusterClient(t, addrs)
	admin := newClusterClient(t, []string{cl.nodes[leader].srv.Addr})
	ctx := testCtx(t, 30*time.Second)
	l, err := c.Lock(ctx, "review:nottl")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	time.Sleep(200 * time.Millisecond) // the keeper learns there is no default TTL
	for i, cn := range cl.nodes {
		if cn.srv.Addr == addrs[0] { // the loss watch's member, a follower
			cl.crash(i)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n, err := admin.ForceUnlock(ctx, "review:nottl"); err != nil || n != 1 {
		t.Fatalf("ForceUnlock = %d, %v", n, err)
	}
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatalf("FORCEUNLOCK of a no-TTL hold not reported within 10s after the loss watch's member went away (Err %v)", l.Err())
	}
}
