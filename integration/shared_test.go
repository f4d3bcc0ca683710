package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// Shared and exclusive holds with UPGRADE and DOWNGRADE (README "Shared
// holds", SPEC §8.3), on the wire.

// key returns the key of a raw bulk reply, failing on anything else.
func keyOf(t testing.TB, raw string) string {
	t.Helper()
	b := bulks(raw)
	if len(b) != 1 || !strings.Contains(b[0], "-") {
		t.Fatalf("not a key: %q", raw)
	}
	return b[0]
}

// fenceNum returns the fence of a key.
func fenceNum(t testing.TB, key string) int64 {
	t.Helper()
	f, err := strconv.ParseInt(strings.SplitN(key, "-", 2)[0], 10, 64)
	if err != nil {
		t.Fatalf("key %q: %v", key, err)
	}
	return f
}

// pending sends a command whose reply must not come yet, and returns a
// function that reads it later.
func pending(t testing.TB, c *rawConn, args ...string) func() string {
	t.Helper()
	if err := c.send(args...); err != nil {
		t.Fatal(err)
	}
	return func() string {
		t.Helper()
		got, err := c.read()
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return got
	}
}

// rawWaiters waits until name has n waiters and returns its raw LOCKS
// reply.
func rawWaiters(t testing.TB, admin *rawConn, name string, n int) string {
	t.Helper()
	var got string
	eventually(t, 5*time.Second, func() bool {
		got = admin.do(t, "LOCKS", "MATCH", name)
		return strings.Count(got, "$6\r\nwaited\r\n") == n
	}, "%d waiters on %s: %q", n, name, got)
	return got
}

// TestShared_ReadersShareAndWritersAreNotStarved: shared holds coexist; an
// exclusive request waits for them; a shared request behind a waiting
// exclusive one waits too; LOCKS shows each hold's and waiter's mode.
func TestShared_ReadersShareAndWritersAreNotStarved(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	admin := dialRaw(t, srv)
	r1, r2, w, r3 := dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)
	k1 := keyOf(t, r1.do(t, "LOCK", "doc", "SHARED"))
	k2 := keyOf(t, r2.do(t, "TRYLOCK", "doc", "SHARED"))
	if got := w.do(t, "TRYLOCK", "doc"); got != "$-1\r\n" {
		t.Fatalf("exclusive TRYLOCK beside readers: %q; want nil", got)
	}
	writer := pending(t, w, "LOCK", "doc")
	rawWaiters(t, admin, "doc", 1)
	reader := pending(t, r3, "LOCK", "doc", "SHARED")
	l := rawWaiters(t, admin, "doc", 2)
	if strings.Count(l, "$4\r\nmode\r\n$6\r\nshared\r\n") != 3 || strings.Count(l, "$4\r\nmode\r\n$9\r\nexclusive\r\n") != 1 {
		t.Fatalf("LOCKS: two shared holders and waiters exclusive then shared expected: %q", l)
	}
	r1.do(t, "UNLOCK", "doc", k1)
	r2.do(t, "UNLOCK", "doc", k2)
	kw := keyOf(t, writer())
	if got := admin.do(t, "LOCKS", "MATCH", "doc"); strings.Count(got, "$6\r\nwaited\r\n") != 1 {
		t.Fatalf("the reader behind the writer was granted beside it: %q", got)
	}
	w.do(t, "UNLOCK", "doc", kw)
	keyOf(t, reader())
}

// TestShared_UpgradeIsAtomicAndAheadOfTheQueue: UPGRADE of the only hold
// is granted at once with a new, larger fence (the old key holds nothing);
// with other readers it waits ahead of every queued request and is granted
// when they leave; a second UPGRADE gets -DEADLOCK; DOWNGRADE lets queued
// readers in at once.
func TestShared_UpgradeIsAtomicAndAheadOfTheQueue(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	admin := dialRaw(t, srv)
	a, b, w := dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)

	ka := keyOf(t, a.do(t, "LOCK", "cache", "SHARED"))
	up := keyOf(t, a.do(t, "UPGRADE", "cache", ka))
	if fenceNum(t, up) <= fenceNum(t, ka) {
		t.Fatalf("upgraded key %s does not have a larger fence than %s", up, ka)
	}
	if got := a.do(t, "CHECK", "cache", ka); !strings.HasPrefix(got, "-NOTHELD") {
		t.Fatalf("CHECK of the key before the upgrade: %q; want -NOTHELD", got)
	}
	if got := a.do(t, "DOWNGRADE", "cache", up); got != ":1\r\n" {
		t.Fatalf("DOWNGRADE: %q", got)
	}
	kb := keyOf(t, b.do(t, "LOCK", "cache", "SHARED"))
	writer := pending(t, w, "LOCK", "cache")
	rawWaiters(t, admin, "cache", 1)
	upgrade := pending(t, a, "UPGRADE", "cache", up)
	l := rawWaiters(t, admin, "cache", 2)
	if i, j := strings.Index(l, "$7\r\nupgrade\r\n:1"), strings.Index(l, "$7\r\nupgrade\r\n:0"); i < 0 || j < 0 || i > j {
		t.Fatalf("the waiting upgrade is not listed first: %q", l)
	}
	if got := b.do(t, "UPGRADE", "cache", kb); !strings.HasPrefix(got, "-DEADLOCK") {
		t.Fatalf("a second UPGRADE while one waits: %q; want -DEADLOCK", got)
	}
	b.do(t, "UNLOCK", "cache", kb)
	ex := keyOf(t, upgrade())
	// The writer queued before the upgrade still waits: the upgrade went first.
	if got := admin.do(t, "LOCKS", "MATCH", "cache"); strings.Count(got, "$6\r\nwaited\r\n") != 1 {
		t.Fatalf("after the upgrade: %q; want the writer still waiting", got)
	}
	reader := pending(t, b, "LOCK", "cache", "SHARED")
	rawWaiters(t, admin, "cache", 2)
	a.do(t, "UNLOCK", "cache", ex)
	kw := keyOf(t, writer())
	w.do(t, "UNLOCK", "cache", kw)
	keyOf(t, reader())
}

// TestShared_UpgradeWaitAndLoss: an UPGRADE whose WAIT runs out answers
// nil and keeps the shared hold; one whose shared hold expires while it
// waits answers -NOTHELD.
func TestShared_UpgradeWaitAndLoss(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a, b := dialRaw(t, srv), dialRaw(t, srv)
	ka := keyOf(t, a.do(t, "LOCK", "u", "SHARED", "TTL", "60000"))
	keyOf(t, b.do(t, "LOCK", "u", "SHARED"))
	if got := a.do(t, "UPGRADE", "u", ka, "WAIT", "50"); got != "$-1\r\n" {
		t.Fatalf("UPGRADE whose WAIT runs out: %q; want nil", got)
	}
	if got := a.do(t, "CHECK", "u", ka); !strings.HasPrefix(got, ":") {
		t.Fatalf("CHECK after the timed-out UPGRADE: %q; want the shared hold kept", got)
	}
	if got := a.do(t, "RENEW", "u", ka, "TTL", "100"); got != ":100\r\n" {
		t.Fatalf("RENEW: %q", got)
	}
	if got := a.do(t, "UPGRADE", "u", ka); !strings.HasPrefix(got, "-NOTHELD") {
		t.Fatalf("UPGRADE whose shared hold expires while it waits: %q; want -NOTHELD", got)
	}
}

// TestShared_Errors: SHARED with SIZE, SHARED on a semaphore, an OWNER
// re-entry in the other mode, UPGRADE of an exclusive hold, DOWNGRADE of a
// shared one.
func TestShared_Errors(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := dialRaw(t, srv)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"LOCK", "e", "SHARED", "SIZE", "1"}, "-ERR syntax error"},
		{[]string{"TRYLOCK", "sem", "SIZE", "3"}, "$"},
		{[]string{"TRYLOCK", "sem", "SHARED"}, "-SIZEMISMATCH"},
		{[]string{"TRYLOCK", "o", "OWNER", "me", "SHARED"}, "$"},
		{[]string{"TRYLOCK", "o", "OWNER", "me"}, "-ERR this OWNER holds 'o' in the other mode"},
	} {
		if got := c.do(t, tc.args...); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q: %q; want %s…", tc.args, got, tc.want)
		}
	}
	kx := keyOf(t, c.do(t, "TRYLOCK", "x"))
	if got := c.do(t, "UPGRADE", "x", kx); !strings.HasPrefix(got, "-ERR the hold is exclusive already") {
		t.Errorf("UPGRADE of an exclusive hold: %q", got)
	}
	ks := keyOf(t, c.do(t, "TRYLOCK", "s", "SHARED"))
	if got := c.do(t, "DOWNGRADE", "s", ks); !strings.HasPrefix(got, "-ERR the hold is shared already") {
		t.Errorf("DOWNGRADE of a shared hold: %q", got)
	}
	if got := c.do(t, "UPGRADE", "s", ks, "TTL", "5"); got != "-ERR syntax error\r\n" {
		t.Errorf("UPGRADE with TTL: %q", got)
	}
}
