package integration

import (
	"strconv"
	"strings"
	"testing"
)

// Atomic multi-lock and deadlock detection (README "Taking several locks",
// SPEC §8.4, §8.5), on the wire.

// keysOf returns the keys of a raw array-of-keys reply.
func keysOf(t testing.TB, raw string, n int) []string {
	t.Helper()
	if !strings.HasPrefix(raw, "*"+strconv.Itoa(n)+"\r\n") {
		t.Fatalf("not an array of %d keys: %q", n, raw)
	}
	ks := bulks(raw)
	if len(ks) != n {
		t.Fatalf("not an array of %d keys: %q", n, raw)
	}
	return ks
}

// TestMulti_AllOrNothing: MLOCK grants every name at once, each its own
// hold released by its own UNLOCK; MTRYLOCK gets nil and takes nothing if
// any name is taken; a waiting MLOCK holds none of its names, and a later
// request for one of them queues behind it even when that one is free.
func TestMulti_AllOrNothing(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a, b, c, admin := dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)
	ks := keysOf(t, a.do(t, "MLOCK", "2", "m1", "m2", "TTL", "60000"), 2)
	if fenceNum(t, ks[1]) <= fenceNum(t, ks[0]) {
		t.Errorf("keys %q: not in name order of grant", ks)
	}
	if got := a.do(t, "UNLOCK", "m2", ks[1]); got != ":1\r\n" {
		t.Fatalf("UNLOCK of one name: %q", got)
	}
	if got := b.do(t, "MTRYLOCK", "2", "m1", "m2"); got != "*-1\r\n" {
		t.Fatalf("MTRYLOCK with m1 taken: %q; want a null array", got)
	}
	if got := admin.do(t, "LOCKS", "MATCH", "m2"); got != "*0\r\n" {
		t.Fatalf("MTRYLOCK that failed took m2: %q", got)
	}
	wait := pending(t, b, "MLOCK", "2", "m1", "m2")
	l := rawWaiters(t, admin, "m2", 1)
	if strings.Contains(l, "holders\r\n*1") || !strings.Contains(l, "$5\r\nmulti\r\n:2") {
		t.Fatalf("the waiting MLOCK holds m2 or is not listed as a multi-lock: %q", l)
	}
	if got := c.do(t, "TRYLOCK", "m2"); got != "$-1\r\n" {
		t.Fatalf("TRYLOCK of a free name an MLOCK waits on: %q; want nil (it queues behind)", got)
	}
	a.do(t, "UNLOCK", "m1", ks[0])
	got := keysOf(t, wait(), 2)
	for i, name := range []string{"m1", "m2"} {
		if r := b.do(t, "CHECK", name, got[i]); !strings.HasPrefix(r, ":") {
			t.Errorf("CHECK %s with its key: %q", name, r)
		}
	}
	if got := b.do(t, "MLOCK", "2", "w1", "w2", "WAIT", "1"); !strings.HasPrefix(got, "*2") {
		t.Fatalf("MLOCK of free names: %q", got)
	}
	if got := c.do(t, "MLOCK", "2", "w2", "w3", "WAIT", "30"); got != "*-1\r\n" {
		t.Fatalf("MLOCK whose WAIT runs out: %q; want a null array", got)
	}
	if got := admin.do(t, "LOCKS", "MATCH", "w3"); got != "*0\r\n" {
		t.Fatalf("a timed-out MLOCK left a leg or a hold: %q", got)
	}
}

// TestMulti_OppositeOrdersNeverDeadlock: MLOCKs that name the same locks
// in opposite orders, queued while both are held, are both granted in turn.
func TestMulti_OppositeOrdersNeverDeadlock(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	h, p, q, admin := dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)
	hk := keysOf(t, h.do(t, "MLOCK", "2", "x", "y"), 2)
	first := pending(t, p, "MLOCK", "2", "x", "y")
	rawWaiters(t, admin, "x", 1)
	second := pending(t, q, "MLOCK", "2", "y", "x")
	rawWaiters(t, admin, "x", 2)
	h.do(t, "UNLOCK", "x", hk[0])
	h.do(t, "UNLOCK", "y", hk[1])
	pk := keysOf(t, first(), 2)
	p.do(t, "UNLOCK", "x", pk[0])
	p.do(t, "UNLOCK", "y", pk[1])
	keysOf(t, second(), 2)
}

// TestMulti_DeadlockDetected: a request that would close a cycle of waits
// fails at once with -DEADLOCK naming the cycle's locks, and changes
// nothing; the other keeps waiting.
func TestMulti_DeadlockDetected(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a, b, admin := dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)
	keyOf(t, a.do(t, "LOCK", "dx"))
	by := keyOf(t, b.do(t, "LOCK", "dy"))
	aWaits := pending(t, a, "LOCK", "dy")
	rawWaiters(t, admin, "dy", 1)
	got := b.do(t, "LOCK", "dx")
	if !strings.HasPrefix(got, "-DEADLOCK") || !strings.Contains(got, "'dx'") || !strings.Contains(got, "'dy'") {
		t.Fatalf("LOCK closing a cycle: %q; want -DEADLOCK naming dx and dy", got)
	}
	if l := admin.do(t, "LOCKS", "MATCH", "dx"); strings.Contains(l, "waited") {
		t.Fatalf("the refused request was queued: %q", l)
	}
	// An MLOCK closing the same cycle is refused too.
	if got := b.do(t, "MLOCK", "2", "dz", "dx"); !strings.HasPrefix(got, "-DEADLOCK") {
		t.Fatalf("MLOCK closing a cycle: %q; want -DEADLOCK", got)
	}
	b.do(t, "UNLOCK", "dy", by)
	keyOf(t, aWaits())
}

// TestMulti_Errors: argument errors and limits.
func TestMulti_Errors(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := dialRaw(t, srv)
	c.do(t, "TRYLOCK", "sem", "SIZE", "2")
	many := []string{"MTRYLOCK", "65"}
	for i := range 65 {
		many = append(many, "n"+strconv.Itoa(i))
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"MLOCK", "2", "a", "a"}, "-ERR lock 'a' is named twice"},
		{[]string{"MLOCK", "0", "a"}, "-ERR numnames must be at least 1"},
		{[]string{"MLOCK", "x", "a"}, "-ERR value is not an integer"},
		{[]string{"MLOCK", "3", "a", "b"}, "-ERR syntax error"},
		{[]string{"MLOCK", "1", "a", "SIZE", "2"}, "-ERR syntax error"},
		{[]string{"MTRYLOCK", "1", "a", "WAIT", "5"}, "-ERR syntax error"},
		{[]string{"MLOCK", "2", "a", "sem"}, "-SIZEMISMATCH lock 'sem' has size 2"},
		{many, "-LIMIT more than max-multi (64) names"},
	} {
		if got := c.do(t, tc.args...); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%.60q: %q; want %s…", tc.args, got, tc.want)
		}
	}
	if got := c.do(t, "DBSIZE"); got != ":1\r\n" {
		t.Errorf("DBSIZE after refused MLOCKs: %q; want only sem", got)
	}
}
