package integration

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// a hold with a lock-delay whose TTL runs out while the server
// is down ended involuntarily (expiry): its capacity must stay taken for
// the delay after the restart ("The delay is part of the durable state:
// with --data-dir a restart does not cut it short"). Restore drops the
// hold (its deadline has passed) and leaves no slot in lock-delay, so the
// lock is free at once.
func TestRestart_LockDelayOfHoldExpiredWhileDownSurvivesRestart(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond
	for _, kill := range []bool{false, true} {
		dir := t.TempDir()
		srv := startServer(t, "--data-dir", dir, "--fsync", "always")
		c := srv.client(t)
		before := time.Now()
		mustLock(t, c, "LOCK", "det", "TTL", ttl.Milliseconds(), "LOCKDELAY", 60000, "DETACH")
		mustLock(t, c, "LOCK", "bound", "TTL", ttl.Milliseconds(), "LOCKDELAY", 60000)
		if l, ok := lockOf(t, c, "det"); !ok || len(l.Holders) != 1 {
			t.Fatalf("det before the stop: %+v, %v", l, ok)
		}
		if kill {
			srv.Kill()
		} else {
			srv.Stop()
		}
		stopped := time.Now()
		if stopped.Sub(before) >= ttl {
			t.Skipf("the server took %v to stop: the TTL ran out while it ran", stopped.Sub(before))
		}
		// Wait (bounded) until both TTLs have run out while it is down.
		deadline := time.NewTimer(before.Add(ttl + 200*time.Millisecond).Sub(time.Now()))
		<-deadline.C
		srv = startServer(t, "--data-dir", dir, "--fsync", "always")
		c = srv.client(t)
		for _, name := range []string{"det", "bound"} {
			// The delay runs until at least the TTL's end plus 60 s.
			if got, err := doBounded(c, "TRYLOCK", name).Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("kill=%v: TRYLOCK %s after a restart within its lock-delay: %v, %v; want nil (the slot in lock-delay)", kill, name, got, err)
			}
		}
		srv.Stop()
	}
}

// a start that restores the data dir and then fails (here its
// --listen address is taken) has already rewritten relock.db with the
// orphans' grace deadlines (Store.Attach runs in commands.New, before Run
// listens). The next start, later than that grace, drops every
// connection-bound hold, though no client could reach a server to RENEW
// it: the failed start consumed the restore grace.
func TestRestart_FailedStartDoesNotConsumeTheRestoreGrace(t *testing.T) {
	t.Parallel()
	const grace = 1 * time.Second
	dir := t.TempDir()
	srv := startServer(t, "--data-dir", dir)
	c := srv.client(t)
	mustLock(t, c, "LOCK", "bound")
	srv.Stop()

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	failedAt := time.Now()
	code, stderr, _ := serverExit(t, 20*time.Second, "--data-dir", dir, "--restore-grace", grace.String(), "--listen", taken.Addr().String())
	if code == 0 || !strings.Contains(stderr, "listen") {
		t.Fatalf("start on a taken address: exit %d; want a listen error\n%s", code, stderr)
	}
	// The next start comes after the failed one's grace would have ended.
	wait := time.NewTimer(time.Until(failedAt.Add(grace + 200*time.Millisecond)))
	<-wait.C
	srv = startServer(t, "--data-dir", dir, "--restore-grace", "30s")
	if n := restoredHolds(t, srv); n != 1 {
		t.Fatalf("restored %d holds after a failed start, want 1 (the bound hold as an orphan)", n)
	}
}
