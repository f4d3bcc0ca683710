package clientlib_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

// A Wait of time.Duration(math.MaxInt64) ("wait forever") must not become
// WAIT 1 ms: durationMS rounds up with d+1ms-1, which overflows for any d
// within 1 ms of math.MaxInt64 (and the result, negative, is then made 1).
func TestReviewH6_HugeWaitIsNotOneMillisecond(t *testing.T) {
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
func TestReviewH6_HugeTTLIsNotOneMillisecond(t *testing.T) {
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
