package integration

import (
	"strings"
	"testing"
	"time"
)

// Lock-delay (README "Lock-delay", SPEC §8.2): after an involuntary
// release the capacity stays taken for the delay; UNLOCK never delays.

// TestLockDelay_DisconnectKeepsTheLockForTheDelay: a holder that
// disconnects leaves its lock taken for its LOCKDELAY: TRYLOCK gets nil,
// LOCKS shows the slot as delayed, and a waiter is granted once the
// delay ends, not before; subscribers see the release at once and the
// next grant at the delay's end, with no free in between.
func TestLockDelay_DisconnectKeepsTheLockForTheDelay(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	sub := subscribe(t, srv, "SUBSCRIBE", "__lock__:d")
	holder := dialRaw(t, srv)
	f := rawFence(t, holder.do(t, "LOCK", "d", "LOCKDELAY", "400"))
	sub.expect("grant", "__lock__:d acquired "+f)
	holder.Close()
	released := time.Now()
	sub.expect("disconnect", "__lock__:d released "+f+" disconnect")

	c := srv.client(t)
	if got, err := doBounded(c, "TRYLOCK", "d").Result(); err == nil || got != nil {
		t.Fatalf("TRYLOCK during the lock-delay: %v, %v; want nil", got, err)
	}
	l, ok := lockOf(t, c, "d")
	if !ok || l.Delayed != 1 || len(l.Holders) != 0 {
		t.Fatalf("LOCKS during the lock-delay: %+v (listed %v); want delayed 1, no holder", l, ok)
	}
	w := dialRaw(t, srv)
	reply := w.do(t, "LOCK", "d", "WAIT", "5000")
	waited := time.Since(released)
	f2 := rawFence(t, reply)
	if waited < 350*time.Millisecond {
		t.Fatalf("waiter granted %v after the release; want the 400 ms lock-delay first", waited)
	}
	sub.expect("delay's end", "__lock__:d contended 1", "__lock__:d acquired "+f2)
	if waited > 3*time.Second {
		t.Errorf("waiter granted %v after the release; want about 400 ms", waited)
	}
}

// TestLockDelay_UnlockAndForceUnlockNeverDelay: a voluntary release frees
// the lock at once whatever its LOCKDELAY, and FORCEUNLOCK ends delays.
func TestLockDelay_UnlockAndForceUnlockNeverDelay(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a := dialRaw(t, srv)
	key := bulks(a.do(t, "LOCK", "u", "LOCKDELAY", "60000"))[0]
	if got := a.do(t, "UNLOCK", "u", key); got != ":1\r\n" {
		t.Fatalf("UNLOCK: %q", got)
	}
	if got := a.do(t, "TRYLOCK", "u"); !strings.HasPrefix(got, "$") || got == "$-1\r\n" {
		t.Fatalf("TRYLOCK after UNLOCK of a lock with a lock-delay: %q; want a key", got)
	}
	b := dialRaw(t, srv)
	b.do(t, "LOCK", "f", "LOCKDELAY", "60000")
	b.Close()
	admin := dialRaw(t, srv)
	eventually(t, 5*time.Second, func() bool { return strings.Contains(admin.do(t, "LOCKS", "MATCH", "f"), "delayed\r\n:1") },
		"the disconnect did not leave a delayed slot")
	if got := admin.do(t, "FORCEUNLOCK", "f"); got != ":0\r\n" {
		t.Fatalf("FORCEUNLOCK of a lock in lock-delay: %q; want :0 (no hold)", got)
	}
	if got := admin.do(t, "TRYLOCK", "f"); !strings.HasPrefix(got, "$") || got == "$-1\r\n" {
		t.Fatalf("TRYLOCK after FORCEUNLOCK ended the delay: %q; want a key", got)
	}
	if got := admin.do(t, "LOCK", "g", "LOCKDELAY", "60001"); !strings.HasPrefix(got, "-ERR LOCKDELAY") {
		t.Fatalf("LOCKDELAY over 60000: %q", got)
	}
}

// TestLockDelay_ExpiryDelaysAndSurvivesRestart: a TTL expiry starts the
// delay, and with --data-dir a restart does not cut it short.
func TestLockDelay_ExpiryDelaysAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, "--data-dir", dir, "--fsync", "always")
	c := srv.client(t)
	mustLock(t, c, "LOCK", "e", "TTL", 50, "LOCKDELAY", 60000)
	eventually(t, 5*time.Second, func() bool {
		l, ok := lockOf(t, c, "e")
		return ok && l.Delayed == 1 && len(l.Holders) == 0
	}, "the expiry did not leave a delayed slot")
	srv.Stop()
	srv = startServer(t, "--data-dir", dir, "--fsync", "always")
	c = srv.client(t)
	if got, err := doBounded(c, "TRYLOCK", "e").Result(); err == nil || got != nil {
		t.Fatalf("TRYLOCK after a restart within the lock-delay: %v, %v; want nil", got, err)
	}
	if l, ok := lockOf(t, c, "e"); !ok || l.Delayed != 1 {
		t.Fatalf("LOCKS after the restart: %+v, %v; want delayed 1", l, ok)
	}
}
