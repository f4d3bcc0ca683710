package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Ways one client could stall an event loop (--io auto, one loop: the
// attacker and the prober share it), found by an adversarial review. Each
// test runs one bounded attack while stallProbe PINGs; each failed before
// its fix, with PINGs of 0.3–7 s.

// pipeline sends reqs on c at once and reads as many replies (60 s).
func pipeline(t *testing.T, c *rawConn, reqs ...[]byte) []string {
	t.Helper()
	var b []byte
	for _, r := range reqs {
		b = append(b, r...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	out := make([]string, len(reqs))
	for i := range reqs {
		got, err := readReply(c.r)
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i, len(reqs), err)
		}
		out[i] = got
	}
	return out
}

// Every pattern subscription is matched against every change, inside the
// change (the lock's shard mutex, the changer's loop). --max-patterns
// allows 1024 per connection and a glob may be as long as a name (1024
// bytes); "*" + k a's + "b" against a 1024-byte name of a's costs
// O(k·(1024−k)) steps. Measured without -race: one LOCK or UNLOCK of such
// a name costs ~0.3 s, and the bystander's PING waited 0.3–2 s.
func TestStall_PatternsAreNotMatchedInsideEveryChange(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "1")
	sub := dialRaw(t, srv)
	var reqs [][]byte
	for k := 1; k <= 1024; k++ {
		reqs = append(reqs, encodeCommand("PSUBSCRIBE", "__lock__:*"+strings.Repeat("a", k%1000)+"b"+strconv.Itoa(k)))
	}
	pipeline(t, sub, reqs...)
	withoutStall(t, srv, func() {
		c := dialRaw(t, srv)
		name := strings.Repeat("a", 1024)
		for range 2 {
			key := pipeline(t, c, encodeCommand("LOCK", name))[0]
			if !keyRE.MatchString(key) {
				t.Fatalf("LOCK = %q", key)
			}
			if got := pipeline(t, c, encodeCommand("UNLOCK", name, strings.TrimSuffix(key[strings.Index(key, "\n")+1:], "\r\n")))[0]; got != ":1\r\n" {
				t.Fatalf("UNLOCK = %q", got)
			}
		}
	}, "while one LOCK notified 1024 patterns")
}

// A LOCKS step examines locksBudget (4096) names, however long the names
// and the MATCH glob: "*" + 500 a's + "b" against 4096 names of 1000 a's
// costs ~250k steps a name, ~1 s a step (measured without -race: the
// bystander's PING waited 3.5–6.8 s while two such pages were served).
func TestStall_LOCKSMatchStepIsBoundedByWork(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "1")
	fill(t, srv, strings.Repeat("a", 1000), 4096, 600_000)
	withoutStall(t, srv, func() {
		c := dialRaw(t, srv)
		got := pipeline(t, c, encodeCommand("LOCKS", "MATCH", "*"+strings.Repeat("a", 500)+"b", "COUNT", "10"))
		if got[0] != "*0\r\n" {
			t.Fatalf("LOCKS = %.40q, want no locks", got[0])
		}
	}, "while one LOCKS MATCH step ran over 4096 long names")
}

// A LOCKS page of COUNT 100000 (the largest allowed) was gathered in
// steps but written in one go, and held whole in the connection's output:
// a bystander's PING waited up to 0.7 s while two connections read such
// pages over 200k locks, and 20 connections that sent one and never read
// grew the server from ~50 MB to ~990 MB. A reply is now at most 1 MiB.
func TestStall_LargestLOCKSPageIsBoundedAndPagedOn(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "1")
	const n = 100_000
	fill(t, srv, "p:", n, 600_000)
	withoutStall(t, srv, func() {
		c := dialRaw(t, srv)
		for range 2 {
			// A page is at most 1 MiB: page on with AFTER until an empty one.
			listed, after := 0, ""
			for pages := 0; ; pages++ {
				if pages > 1000 {
					t.Fatal("more than 1000 pages")
				}
				args := []string{"LOCKS", "COUNT", "100000"}
				if after != "" {
					args = append(args, "AFTER", after)
				}
				got := pipeline(t, c, encodeCommand(args...))[0]
				if len(got) > 1<<20+1024 {
					t.Fatalf("a LOCKS reply of %d bytes, over the 1 MiB bound", len(got))
				}
				var k int
				if _, err := fmt.Sscanf(got, "*%d\r\n", &k); err != nil {
					t.Fatalf("LOCKS = %.40q", got)
				}
				if k == 0 {
					break
				}
				listed += k
				after = lastLockName(t, got)
			}
			if listed != n {
				t.Fatalf("paged %d locks; want %d", listed, n)
			}
		}
	}, "while a LOCKS page of 100000 locks was written")
}

// A lock's holds are a singly linked list that every acquisition walks
// twice (expireLock looks for due holds, appendHold for the tail): with
// N shared holds (or a semaphore of size N) each LOCK of it costs O(N)
// in its shard's critical section, and a connection runs 256 requests a
// round. Without -race, with 40k holds, a bystander's PING waited
// 0.2–0.5 s while two connections pipelined such LOCKs; taking the holds
// costs O(N²).
func TestStall_ManyHoldsOfOneLockDoNotCostEveryAcquisition(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "1")
	c := dialRaw(t, srv)
	shared := encodeCommand("LOCK", "big", "SHARED", "DETACH", "TTL", "600000")
	// Taking the holds costs O(n²): fewer under -race (the default
	// build), about as slow.
	n := 6_000
	if os.Getenv("RELOCK_IT_NORACE") != "" {
		n = 20_000
	}
	for i := 0; i < n; i += 1000 {
		var reqs [][]byte
		for range 1000 {
			reqs = append(reqs, shared)
		}
		pipeline(t, c, reqs...)
	}
	withoutStall(t, srv, func() {
		var reqs [][]byte
		for range 1024 {
			reqs = append(reqs, shared)
		}
		got := pipeline(t, c, reqs...)
		if !keyRE.MatchString(got[len(got)-1]) {
			t.Fatalf("LOCK SHARED = %q", got[len(got)-1])
		}
	}, fmt.Sprintf("while 1024 shared LOCKs of a lock with %d holds ran", n))
}

// lastLockName is the greatest lock name ("p:…", as fill names them) in a
// raw LOCKS reply: the AFTER of the next page.
func lastLockName(t *testing.T, reply string) string {
	t.Helper()
	last := ""
	for _, line := range strings.Split(reply, "\r\n") {
		if strings.HasPrefix(line, "p:") && line > last {
			last = line
		}
	}
	if last == "" {
		t.Fatalf("no lock name in %.80q", reply)
	}
	return last
}

// withoutStall runs attack while stallProbe PINGs srv, and fails the test
// if a PING took over stallBound; while names the attack for the message.
func withoutStall(t *testing.T, srv *server, attack func(), while string) {
	t.Helper()
	stop := make(chan struct{})
	worst := stallProbe(t, srv, "", stop)
	attack()
	close(stop)
	w := worst()
	t.Logf("worst bystander PING: %v", w)
	if w > stallBound {
		t.Errorf("%s, another client's PING took %v (want < %v)", while, w, stallBound)
	}
}
