package integration

import (
	"strings"
	"testing"
	"time"
)

// Nothing a reply revealed is undone by a crash (--fsync always): a
// release that no client asked for (the holder disconnected, was killed,
// or RESET its connection) is committed before any reply that shows it.
// The holder lets go, another client's CHECK says NOTHELD, the server is
// killed with SIGKILL before anything else happens, and the restart must
// not bring the released hold back.
func TestCrash_RevealedReleaseIsNeverUndone(t *testing.T) {
	t.Parallel()
	ends := map[string]func(t *testing.T, holder *rawConn, admin *rawConn){
		"disconnect": func(t *testing.T, holder, _ *rawConn) { holder.Close() },
		"reset": func(t *testing.T, holder, _ *rawConn) {
			if got := holder.do(t, "RESET"); got != "+RESET\r\n" {
				t.Fatalf("RESET = %q", got)
			}
		},
		"client-kill": func(t *testing.T, holder, admin *rawConn) {
			id := strings.TrimSpace(strings.TrimPrefix(holder.do(t, "CLIENT", "ID"), ":"))
			if got := admin.do(t, "CLIENT", "KILL", "ID", id); got != ":1\r\n" {
				t.Fatalf("CLIENT KILL ID %s = %q", id, got)
			}
		},
	}
	for _, io := range []string{"auto", "goroutine"} {
		for how, end := range ends {
			t.Run(io+"/"+how, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				srv := startServer(t, "--data-dir", dir, "--fsync", "always", "--io", io)
				holder, other := dialRaw(t, srv), dialRaw(t, srv)
				got := holder.do(t, "LOCK", "a", "TTL", "60000")
				if !keyRE.MatchString(got) {
					t.Fatalf("LOCK a = %q", got)
				}
				key := strings.TrimSpace(got[strings.Index(got, "\n")+1:])
				end(t, holder, other)
				// The release may take a moment to happen (a disconnect is
				// seen by the server's loop), never to be revealed.
				eventually(t, 5*time.Second, func() bool {
					return strings.HasPrefix(other.do(t, "CHECK", "a", key), "-NOTHELD")
				}, "the %s hold was not released", how)
				srv.Kill()

				srv = startServer(t, "--data-dir", dir, "--fsync", "always", "--io", io)
				admin := srv.client(t)
				if l, held := lockOf(t, admin, "a"); held {
					t.Fatalf("after a crash, the hold released by %s and shown free by CHECK is back: %+v", how, l)
				}
				c := dialRaw(t, srv)
				if got := c.do(t, "TRYLOCK", "a"); !keyRE.MatchString(got) {
					t.Fatalf("TRYLOCK a after the restart = %q; want a key", got)
				}
			})
		}
	}
}

// A grant whose commit failed is never delivered, on either transport,
// to a waiter or to a detached request: the waiter's connection is
// closed unanswered, the detached hold is undone, and the holder whose
// UNLOCK passed the lock on is not told the lock was handed over. The
// lock ends free, and the next commits succeed.
func TestCommit_FailedCommitDeliversNoGrant(t *testing.T) {
	t.Parallel()
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io+"/waiter", func(t *testing.T) {
			t.Parallel()
			// Commits: 1 LOCK w (holder); the waiter queues (no commit);
			// 2 the holder's UNLOCK, which grants the waiter: fails.
			srv := startServerEnv(t, []string{"RELOCK_FAILPOINT=before-fsync:2:error"},
				"--data-dir", t.TempDir(), "--fsync", "always", "--io", io)
			holder, waiter := dialRaw(t, srv), dialRaw(t, srv)
			got := holder.do(t, "LOCK", "w")
			if !keyRE.MatchString(got) {
				t.Fatalf("LOCK w = %q", got)
			}
			key := strings.TrimSpace(got[strings.Index(got, "\n")+1:])
			if err := waiter.send("LOCK", "w", "DETACH", "TTL", "60000"); err != nil {
				t.Fatal(err)
			}
			admin := srv.client(t)
			eventually(t, 5*time.Second, func() bool {
				l, ok := lockOf(t, admin, "w")
				return ok && len(l.Waiters) == 1
			}, "the waiter did not queue")
			if err := holder.send("UNLOCK", "w", key); err != nil {
				t.Fatal(err)
			}
			holder.read() // -ERR, or closed unanswered: either way not acknowledged
			if got, err := waiter.read(); err == nil {
				t.Fatalf("a grant whose commit failed was delivered: %q", got)
			}
			eventually(t, 5*time.Second, func() bool {
				_, held := lockOf(t, admin, "w")
				return !held
			}, "the grant whose commit failed is still held (a detached hold under a key nobody received)")
			c := dialRaw(t, srv)
			if got := c.do(t, "TRYLOCK", "w"); !keyRE.MatchString(got) {
				t.Fatalf("TRYLOCK w after the failure = %q", got)
			}
		})
		t.Run(io+"/detached", func(t *testing.T) {
			t.Parallel()
			srv := startServerEnv(t, []string{"RELOCK_FAILPOINT=before-fsync:1:error"},
				"--data-dir", t.TempDir(), "--fsync", "always", "--io", io)
			c := dialRaw(t, srv)
			if err := c.send("LOCK", "d", "DETACH", "TTL", "60000"); err != nil {
				t.Fatal(err)
			}
			if got, err := c.read(); err == nil && !strings.HasPrefix(got, "-ERR") {
				t.Fatalf("a detached LOCK whose commit failed was answered %q", got)
			}
			admin := srv.client(t)
			eventually(t, 5*time.Second, func() bool {
				_, held := lockOf(t, admin, "d")
				return !held
			}, "the detached hold whose commit failed is still held until its TTL")
			if got := dialRaw(t, srv).do(t, "TRYLOCK", "d"); !keyRE.MatchString(got) {
				t.Fatalf("TRYLOCK d after the failure = %q", got)
			}
		})
	}
}
