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
