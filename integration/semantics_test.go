package integration

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lock semantics of docs/protocol.md end to end: each simulated process is a
// go-redis client on one dedicated connection (srv.client).

func TestLock_WaitersGrantedInFIFOOrder(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, holder := srv.client(t), srv.client(t)
	key := mustLock(t, holder, "LOCK", "fifo")

	const n = 12
	type granted struct {
		i   int
		key string
	}
	grants := make(chan granted, n)
	clients := make([]*redis.Client, n)
	ids := make([]int64, n)
	for i := range n {
		clients[i] = srv.client(t)
		ids[i] = clientID(t, clients[i])
		go func() {
			key, err := clients[i].Do(ctx, "LOCK", "fifo").Text()
			if err != nil {
				t.Errorf("waiter %d: LOCK: %v", i, err)
				return
			}
			grants <- granted{i, key}
		}()
		// Enqueue one at a time, so that the queue order is known.
		waitForWaiters(t, admin, "fifo", i+1)
	}
	if got := waiterIDs(t, admin, "fifo"); !slices.Equal(got, ids) {
		t.Fatalf("LOCKS waiters = %v; want queue order %v", got, ids)
	}

	mustUnlock(t, holder, "fifo", key)
	var order []int
	lastFence := fenceOf(t, key)
	for range n {
		var g granted
		select {
		case g = <-grants:
		case <-time.After(5 * time.Second):
			t.Fatalf("no grant within 5s; order so far %v", order)
		}
		order = append(order, g.i)
		if f := fenceOf(t, g.key); f <= lastFence {
			t.Errorf("grant %d has fence %d, not above the previous %d", len(order), f, lastFence)
		} else {
			lastFence = f
		}
		if l, _ := lockOf(t, admin, "fifo"); len(l.Holders) != 1 || l.Holders[0].ClientID != ids[g.i] {
			t.Fatalf("after granting waiter %d: holders %+v; want client %d", g.i, l.Holders, ids[g.i])
		}
		mustUnlock(t, clients[g.i], "fifo", g.key)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; !slices.Equal(order, want) {
		t.Errorf("grant order = %v; want %v", order, want)
	}
	if got := dbsize(t, admin); got != 0 {
		t.Errorf("DBSIZE after the last release = %d; want 0", got)
	}
}

func TestSemaphore_NeverMoreHoldersThanSize(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin := srv.client(t)
	const size, clients, rounds = 3, 10, 15

	var holding, peak atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		c := srv.client(t)
		wg.Go(func() {
			for r := range rounds {
				key, err := c.Do(ctx, "LOCK", "sem", "SIZE", size).Text()
				if err != nil {
					t.Errorf("client %d round %d: LOCK: %v", i, r, err)
					return
				}
				// Counted from the grant's arrival to before the release is
				// sent, so the count never exceeds the server's.
				n := holding.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				if n > size {
					t.Errorf("%d clients hold a semaphore of size %d", n, size)
				}
				holding.Add(-1)
				if err := c.Do(ctx, "UNLOCK", "sem", key).Err(); err != nil {
					t.Errorf("client %d round %d: UNLOCK: %v", i, r, err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// Meanwhile, LOCKS must never show more than size holders.
	maxSeen, samples := 0, 0
	deadline := time.Now().Add(20 * time.Second)
watch:
	for samples < 100_000 {
		select {
		case <-done:
			break watch
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("clients did not finish within 20s")
		}
		ls, err := readLocks(ctx, admin, "MATCH", "sem")
		if err != nil {
			t.Fatalf("LOCKS: %v", err)
		}
		samples++
		for _, l := range ls {
			if l.Size != size || len(l.Holders) > size {
				t.Fatalf("LOCKS shows size %d with %d holders", l.Size, len(l.Holders))
			}
			maxSeen = max(maxSeen, len(l.Holders))
		}
	}
	<-done
	t.Logf("peak holders: %d counted by clients, %d seen in %d LOCKS samples", peak.Load(), maxSeen, samples)
	if got := infoField(t, admin, "grants"); got != itoa(clients*rounds) {
		t.Errorf("INFO grants = %s; want %d", got, clients*rounds)
	}
	if got := infoField(t, admin, "grants_after_wait"); got == "0" {
		t.Error("no LOCK ever waited: the test did not contend")
	}
	if got := dbsize(t, admin); got != 0 {
		t.Errorf("DBSIZE = %d; want 0", got)
	}
}

func TestLock_DisconnectedWaiterIsSkipped(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, holder, next := srv.client(t), srv.client(t), srv.client(t)
	key := mustLock(t, holder, "LOCK", "dw")

	dead := dialRaw(t, srv)
	deadID := dead.do(t, "CLIENT", "ID")
	if err := dead.send("LOCK", "dw"); err != nil {
		t.Fatal(err)
	}
	waitForWaiters(t, admin, "dw", 1)
	nextID := clientID(t, next)
	nextCh := lockAsync(ctx, next, "dw")
	waitForWaiters(t, admin, "dw", 2)
	if got := waiterIDs(t, admin, "dw"); ":"+itoa(int(got[0]))+"\r\n" != deadID {
		t.Fatalf("first waiter is client %d; want the raw connection (%q)", got[0], deadID)
	}

	dead.Close()
	start := time.Now()
	eventually(t, 500*time.Millisecond, func() bool {
		return slices.Equal(waiterIDs(t, admin, "dw"), []int64{nextID})
	}, "the closed waiter is still queued: %v", waiterIDs(t, admin, "dw"))
	t.Logf("closed waiter left the queue within %v", time.Since(start))

	mustUnlock(t, holder, "dw", key)
	g := awaitGrant(t, nextCh, 5*time.Second)
	if l, _ := lockOf(t, admin, "dw"); len(l.Holders) != 1 || l.Holders[0].ClientID != nextID || len(l.Waiters) != 0 {
		t.Fatalf("LOCKS dw = %+v; want held by client %d only", l, nextID)
	}
	mustUnlock(t, next, "dw", g.key)
}

// TestLock_TTLExpiryHandsLockToNextWaiter is not parallel: it times the
// expiry loosely (docs/protocol.md: acted on within 10 ms of the deadline).
func TestLock_TTLExpiryHandsLockToNextWaiter(t *testing.T) {
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, first, second := srv.client(t), srv.client(t), srv.client(t)
	const ttl = 300 * time.Millisecond

	sent := time.Now()
	key := mustLock(t, first, "LOCK", "ttl", "TTL", ttl.Milliseconds())
	received := time.Now()
	ch := lockAsync(ctx, second, "ttl")
	waitForWaiters(t, admin, "ttl", 1)
	if time.Since(sent) >= ttl {
		t.Fatalf("setting up took %v, longer than the TTL", time.Since(sent))
	}
	g := awaitGrant(t, ch, 5*time.Second)

	// The hold was granted between sent and received; the next waiter got
	// it after the deadline plus the expiry delay.
	if early := g.at.Sub(sent); early < ttl {
		t.Errorf("waiter granted %v after the LOCK was sent; the TTL is %v", early, ttl)
	}
	const slack = 100 * time.Millisecond // scheduling and -race, far above 10 ms
	if late := g.at.Sub(received) - ttl; late > 10*time.Millisecond+slack {
		t.Errorf("expiry handed over %v after the deadline; want within 10 ms (+%v slack)", late, slack)
	} else {
		t.Logf("handed over at most %v after the deadline", late)
	}
	if err := first.Do(ctx, "CHECK", "ttl", key).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
		t.Errorf("CHECK with the expired key: %v; want NOTHELD", err)
	}
	if got := infoField(t, admin, "releases_expired"); got != "1" {
		t.Errorf("INFO releases_expired = %s; want 1", got)
	}
	mustUnlock(t, second, "ttl", g.key)
}

// TestLock_TTLStartsAtGrant: a waiter's TTL runs from its grant, not from
// its request. Not parallel: it is timed.
func TestLock_TTLStartsAtGrant(t *testing.T) {
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, first, second := srv.client(t), srv.client(t), srv.client(t)
	mustLock(t, first, "LOCK", "tg", "TTL", 400)
	requested := time.Now()
	ch := lockAsync(ctx, second, "tg", "TTL", 150)
	waitForWaiters(t, admin, "tg", 1)
	g := awaitGrant(t, ch, 5*time.Second)
	if waited := g.at.Sub(requested); waited < 150*time.Millisecond {
		t.Fatalf("granted after %v; the test needs a wait longer than the TTL", waited)
	}
	left, err := second.Do(ctx, "CHECK", "tg", g.key).Int()
	if err != nil || left <= 0 || left > 150 {
		t.Fatalf("CHECK right after a grant that waited longer than its TTL = %v, %v; want 1..150 ms left", left, err)
	}
	mustUnlock(t, second, "tg", g.key)
}

// TestLocks_PagesSortedByName: LOCKS lists at most 1000 locks by default,
// sorted by name, and AFTER pages through all of them.
func TestLocks_PagesSortedByName(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin := srv.client(t)
	const n = 1005
	// One pipeline of TRYLOCKs on a raw connection, in shuffled order.
	c := dialRaw(t, srv)
	var batch []byte
	for i := range n {
		batch = append(batch, encodeCommand("TRYLOCK", fmt.Sprintf("page:%04d", (i*7919)%n))...)
	}
	if _, err := c.Write(batch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if r, err := c.read(); err != nil || !keyRE.MatchString(r) {
			t.Fatalf("TRYLOCK %d: %q, %v", i, r, err)
		}
	}
	if got := dbsize(t, admin); got != n {
		t.Fatalf("DBSIZE = %d; want %d", got, n)
	}
	first, err := readLocks(ctx, admin)
	if err != nil || len(first) != 1000 || first[0].Name != "page:0000" || first[999].Name != "page:0999" {
		t.Fatalf("LOCKS without COUNT: %d entries, %v", len(first), err)
	}
	var names []string
	after := ""
	for page := 0; page < 10; page++ {
		ls, err := readLocks(ctx, admin, "COUNT", 300, "AFTER", after)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			break
		}
		for _, l := range ls {
			names = append(names, l.Name)
		}
		after = ls[len(ls)-1].Name
	}
	if len(names) != n || !slices.IsSorted(names) {
		t.Fatalf("paging gave %d names (sorted: %v); want %d", len(names), slices.IsSorted(names), n)
	}
	for i, name := range names {
		if want := fmt.Sprintf("page:%04d", i); name != want {
			t.Fatalf("page entry %d = %q; want %q", i, name, want)
		}
	}
	c.Close() // releases them all
	eventually(t, 5*time.Second, func() bool { return dbsize(t, admin) == 0 }, "locks outlived their connection")
}

func TestLock_WaitTimeoutReturnsNilAndLeavesQueue(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, holder, waiter := srv.client(t), srv.client(t), srv.client(t)
	key := mustLock(t, holder, "LOCK", "wt")

	start := time.Now()
	err := waiter.Do(ctx, "LOCK", "wt", "WAIT", 50).Err()
	if !errors.Is(err, redis.Nil) {
		t.Fatalf("LOCK WAIT 50 on a held lock = %v; want nil", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("WAIT 50 ran out after %v", d)
	}
	// The reply comes after the waiter left the queue: no polling needed.
	if l, _ := lockOf(t, admin, "wt"); len(l.Waiters) != 0 {
		t.Fatalf("waiters after the WAIT ran out: %+v", l.Waiters)
	}
	if got := infoField(t, admin, "wait_timeouts"); got != "1" {
		t.Errorf("INFO wait_timeouts = %s; want 1", got)
	}
	mustUnlock(t, holder, "wt", key)
	if got := dbsize(t, admin); got != 0 {
		t.Errorf("DBSIZE = %d after the release; the timed-out waiter must not be granted", got)
	}
	if err := waiter.Ping(ctx).Err(); err != nil {
		t.Errorf("PING on the waiter's connection: %v", err)
	}
}

// TestRenew_KeepsHoldAlive is not parallel: it renews on a schedule.
func TestRenew_KeepsHoldAlive(t *testing.T) {
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, holder, waiter := srv.client(t), srv.client(t), srv.client(t)
	const ttl = 200 // ms
	key := mustLock(t, holder, "LOCK", "rn", "TTL", ttl)

	// The waiter's WAIT spans 3 TTLs: it must run out, as the holder renews.
	ch := lockAsync(ctx, waiter, "rn", "WAIT", 3*ttl)
	tick := time.NewTicker(ttl / 5 * time.Millisecond)
	defer tick.Stop()
	renewals := 0
renew:
	for renewals < 100 {
		select {
		case g := <-ch:
			if !errors.Is(g.err, redis.Nil) {
				t.Fatalf("waiter got %q, %v while the hold was renewed; want nil", g.key, g.err)
			}
			break renew
		case <-tick.C:
		}
		got, err := holder.Do(ctx, "RENEW", "rn", key).Int()
		if err != nil || got != ttl {
			t.Fatalf("RENEW = %v, %v; want %d", got, err, ttl)
		}
		renewals++
	}
	if left, err := holder.Do(ctx, "CHECK", "rn", key).Int(); err != nil || left <= 0 || left > ttl {
		t.Fatalf("CHECK after %d renewals = %v, %v", renewals, left, err)
	}
	if got, err := holder.Do(ctx, "RENEW", "rn", key, "TTL", 100).Int(); err != nil || got != 100 {
		t.Fatalf("RENEW TTL 100 = %v, %v", got, err)
	}
	// Without renewals the hold expires, and RENEW never re-acquires it.
	eventually(t, 2*time.Second, func() bool {
		return holder.Do(ctx, "CHECK", "rn", key).Err() != nil
	}, "hold did not expire")
	if err := holder.Do(ctx, "RENEW", "rn", key).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
		t.Errorf("RENEW after expiry: %v; want NOTHELD", err)
	}
	if got := dbsize(t, admin); got != 0 {
		t.Errorf("DBSIZE after expiry and RENEW = %d; want 0", got)
	}
}

func TestLock_ReentryWithOwner(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, first, other := srv.client(t), srv.client(t), srv.client(t)
	key := mustLock(t, first, "LOCK", "re", "OWNER", "host:1:main")
	if again := mustLock(t, first, "LOCK", "re", "OWNER", "host:1:main", "TTL", 5000); again != key {
		t.Fatalf("re-entry key %q; want the same key %q", again, key)
	}
	if left, err := first.Do(ctx, "CHECK", "re", key).Int(); err != nil || left <= 0 || left > 5000 {
		t.Errorf("CHECK after a re-entry with TTL 5000 = %v, %v", left, err)
	}
	if err := other.Do(ctx, "TRYLOCK", "re", "OWNER", "host:2:main").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("TRYLOCK by another owner = %v; want nil", err)
	}
	// The same owner from another connection re-enters too, but the hold
	// stays bound to the first connection.
	if again := mustLock(t, other, "TRYLOCK", "re", "OWNER", "host:1:main"); again != key {
		t.Fatalf("re-entry from another connection: %q; want %q", again, key)
	}
	firstID := clientID(t, first)
	l, _ := lockOf(t, admin, "re")
	if len(l.Holders) != 1 || l.Holders[0].Count != 3 || l.Holders[0].Owner != "host:1:main" || l.Holders[0].ClientID != firstID {
		t.Fatalf("LOCKS re = %+v; want one hold, count 3, bound to client %d", l, firstID)
	}
	mustUnlock(t, other, "re", key)
	if l, _ := lockOf(t, admin, "re"); len(l.Holders) != 1 || l.Holders[0].Count != 2 {
		t.Fatalf("after one UNLOCK: %+v; want count 2", l)
	}
	// Closing the first connection releases the hold with all its counts.
	first.Close()
	eventually(t, 2*time.Second, func() bool { return dbsize(t, admin) == 0 }, "hold outlived its connection")
	if err := other.Do(ctx, "UNLOCK", "re", key).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
		t.Errorf("UNLOCK after the connection closed: %v; want NOTHELD", err)
	}
}

func TestLock_DetachedHoldSurvivesItsConnection(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, taker, other := srv.client(t), srv.client(t), srv.client(t)
	key := mustLock(t, taker, "LOCK", "dt", "TTL", 60000, "DETACH")
	mustLock(t, taker, "LOCK", "bound")
	taker.Close()
	// The bound hold going shows that the server saw the close.
	eventually(t, 2*time.Second, func() bool { _, ok := lockOf(t, admin, "bound"); return !ok },
		"the bound hold outlived its connection")

	l, ok := lockOf(t, admin, "dt")
	if !ok || len(l.Holders) != 1 || !l.Holders[0].Detached || l.Holders[0].ClientID != -1 {
		t.Fatalf("LOCKS dt = %+v, %v; want one detached hold with client-id -1", l, ok)
	}
	if left, err := other.Do(ctx, "CHECK", "dt", key).Int(); err != nil || left <= 0 {
		t.Fatalf("CHECK from another connection = %v, %v", left, err)
	}
	if got, err := other.Do(ctx, "RENEW", "dt", key).Int(); err != nil || got != 60000 {
		t.Fatalf("RENEW from another connection = %v, %v", got, err)
	}
	// A detached LOCK that had to wait is detached too once granted.
	waiter := srv.client(t)
	ch := lockAsync(ctx, waiter, "dt", "TTL", 60000, "DETACH")
	waitForWaiters(t, admin, "dt", 1)
	mustUnlock(t, other, "dt", key)
	g := awaitGrant(t, ch, 5*time.Second)
	waiter.Close()
	mustLock(t, other, "LOCK", "bound2")
	other.Close()
	eventually(t, 2*time.Second, func() bool { _, ok := lockOf(t, admin, "bound2"); return !ok },
		"the bound hold outlived its connection")
	if l, ok := lockOf(t, admin, "dt"); !ok || !l.Holders[0].Detached {
		t.Fatalf("LOCKS dt after the waiter's connection closed = %+v, %v; want its detached hold", l, ok)
	}
	mustUnlock(t, admin, "dt", g.key)
	if got := dbsize(t, admin); got != 0 {
		t.Errorf("DBSIZE = %d; want 0", got)
	}
}

func TestForceUnlock_HandsOffToWaiters(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin := srv.client(t)
	h1, h2, w1, w2 := srv.client(t), srv.client(t), srv.client(t), srv.client(t)
	k1 := mustLock(t, h1, "LOCK", "fu", "SIZE", 2, "OWNER", "o")
	mustLock(t, h1, "LOCK", "fu", "SIZE", 2, "OWNER", "o") // re-entered: counts once
	k2 := mustLock(t, h2, "LOCK", "fu", "SIZE", 2)
	c1 := lockAsync(ctx, w1, "fu", "SIZE", 2)
	waitForWaiters(t, admin, "fu", 1)
	c2 := lockAsync(ctx, w2, "fu", "SIZE", 2)
	waitForWaiters(t, admin, "fu", 2)

	if n, err := admin.Do(ctx, "FORCEUNLOCK", "fu").Int(); err != nil || n != 2 {
		t.Fatalf("FORCEUNLOCK = %v, %v; want 2", n, err)
	}
	g1, g2 := awaitGrant(t, c1, 5*time.Second), awaitGrant(t, c2, 5*time.Second)
	l, _ := lockOf(t, admin, "fu")
	ids := []int64{clientID(t, w1), clientID(t, w2)}
	if len(l.Holders) != 2 || l.Holders[0].ClientID != ids[0] || l.Holders[1].ClientID != ids[1] || len(l.Waiters) != 0 {
		t.Fatalf("LOCKS fu after FORCEUNLOCK = %+v; want held by %v", l, ids)
	}
	for _, k := range []string{k1, k2} {
		if err := admin.Do(ctx, "UNLOCK", "fu", k).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
			t.Errorf("UNLOCK with a forced-out key: %v; want NOTHELD", err)
		}
	}
	mustUnlock(t, w1, "fu", g1.key)
	mustUnlock(t, w2, "fu", g2.key)
	if got := infoField(t, admin, "releases_forced"); got != "2" {
		t.Errorf("INFO releases_forced = %s; want 2", got)
	}
}

func TestClientKill_ReleasesVictimHolds(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, victim, waiter := srv.client(t), srv.client(t), srv.client(t)
	victimID := clientID(t, victim)
	queued := srv.client(t) // a second victim, killed while it waits
	queuedID := clientID(t, queued)
	mustLock(t, victim, "LOCK", "ck")
	mustLock(t, victim, "LOCK", "ck2", "TTL", 60000)
	dkey := mustLock(t, victim, "LOCK", "ckd", "TTL", 60000, "DETACH")
	ch := lockAsync(ctx, waiter, "ck")
	waitForWaiters(t, admin, "ck", 1)
	lockAsync(ctx, queued, "ck")
	waitForWaiters(t, admin, "ck", 2)
	if n, err := admin.Do(ctx, "CLIENT", "KILL", "ID", queuedID).Int(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL ID of a waiter = %v, %v; want 1", n, err)
	}
	if got := waiterIDs(t, admin, "ck"); len(got) != 1 || got[0] == queuedID {
		t.Fatalf("waiters after killing the second one: %v", got)
	}

	if n, err := admin.Do(ctx, "CLIENT", "KILL", "ID", victimID).Int(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL ID = %v, %v; want 1", n, err)
	}
	// The reply means "released": no polling.
	if _, ok := lockOf(t, admin, "ck2"); ok {
		t.Error("the victim's hold on ck2 survived CLIENT KILL")
	}
	g := awaitGrant(t, ch, 5*time.Second)
	// go-redis replaces the dead connection with a new one.
	if id := clientID(t, victim); id == victimID {
		t.Error("the victim's connection still answers after CLIENT KILL")
	}
	if l, ok := lockOf(t, admin, "ckd"); !ok || !l.Holders[0].Detached {
		t.Errorf("the detached hold did not survive CLIENT KILL: %+v", l)
	}
	mustUnlock(t, waiter, "ck", g.key)
	mustUnlock(t, admin, "ckd", dkey)
}

func TestLock_BlockedLockBlocksOnlyItsConnection(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, holder, waiter, bystander := srv.client(t), srv.client(t), srv.client(t), srv.client(t)
	key := mustLock(t, holder, "LOCK", "bl")
	ch := lockAsync(ctx, waiter, "bl")
	waitForWaiters(t, admin, "bl", 1)

	// Other clients are served while the LOCK waits.
	if err := bystander.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING while another client waits: %v", err)
	}
	other := mustLock(t, bystander, "TRYLOCK", "other")
	mustUnlock(t, bystander, "other", other)

	// Commands pipelined behind a blocked LOCK are answered after it, in
	// order: the LOCKS behind the LOCK sees the pipelining client holding.
	pipe := dialRaw(t, srv)
	pipeID := pipe.do(t, "CLIENT", "ID")
	batch := slices.Concat(encodeCommand("LOCK", "bl"), encodeCommand("LOCKS", "MATCH", "bl"),
		encodeCommand("PING"), encodeCommand("ECHO", "last"))
	if _, err := pipe.Write(batch); err != nil {
		t.Fatal(err)
	}
	waitForWaiters(t, admin, "bl", 2)
	notReady(t, ch, "the first waiter's LOCK")

	mustUnlock(t, holder, "bl", key)
	g := awaitGrant(t, ch, 5*time.Second)
	mustUnlock(t, waiter, "bl", g.key)

	var replies []string
	for range 4 {
		r, err := pipe.read()
		if err != nil {
			t.Fatalf("pipelined replies so far %q: %v", replies, err)
		}
		replies = append(replies, r)
	}
	if !keyRE.MatchString(replies[0]) {
		t.Errorf("reply 1 (LOCK) = %q; want a key", replies[0])
	}
	if want := "$9\r\nclient-id\r\n" + pipeID; !strings.Contains(replies[1], want) {
		t.Errorf("reply 2 (LOCKS) = %q; want the pipelining client (%q) holding", replies[1], pipeID)
	}
	if replies[2] != "+PONG\r\n" || replies[3] != "$4\r\nlast\r\n" {
		t.Errorf("replies 3 and 4 = %q, %q; want PONG, last", replies[2], replies[3])
	}
}

func TestFence_StrictlyIncreasingAcrossGrants(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, a, b := srv.client(t), srv.client(t), srv.client(t)
	var fences []int64
	take := func(c *redis.Client, cmd string, args ...any) string {
		t.Helper()
		k := mustLock(t, c, cmd, args...)
		fences = append(fences, fenceOf(t, k))
		return k
	}
	k1 := take(a, "LOCK", "f1")
	take(b, "TRYLOCK", "f2", "TTL", 60000)
	take(a, "LOCK", "f3", "SIZE", 2)
	take(b, "LOCK", "f3", "SIZE", 2)
	ko := take(a, "LOCK", "f4", "OWNER", "me")
	if again := mustLock(t, b, "LOCK", "f4", "OWNER", "me"); again != ko {
		t.Fatalf("re-entry gave a new key %q; want %q", again, ko)
	}
	ch := lockAsync(ctx, b, "f1")
	waitForWaiters(t, admin, "f1", 1)
	mustUnlock(t, a, "f1", k1)
	fences = append(fences, fenceOf(t, awaitGrant(t, ch, 5*time.Second).key))
	k5 := take(a, "LOCK", "f5", "TTL", 60000, "DETACH")
	mustUnlock(t, a, "f5", k5)
	take(a, "LOCK", "f5") // a lock taken again gets a new fence

	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Errorf("fences not strictly increasing: %v", fences)
			break
		}
	}
	if got := infoField(t, admin, "last_fence"); got != itoa(int(fences[len(fences)-1])) {
		t.Errorf("INFO last_fence = %s; want %d", got, fences[len(fences)-1])
	}
	if l, _ := lockOf(t, admin, "f1"); len(l.Holders) != 1 || l.Holders[0].Fence != fences[len(fences)-3] {
		t.Errorf("LOCKS f1 fence = %+v; want %d (the key's prefix)", l.Holders, fences[len(fences)-3])
	}
	// Fences start at the server's start time in µs (docs/protocol.md).
	if now := time.Now().UnixMicro(); fences[0] > now || fences[0] < now-int64(time.Minute/time.Microsecond) {
		t.Errorf("first fence %d is not near the current unix time in µs (%d)", fences[0], now)
	}
}

func TestLock_FreeLocksDeletedAtOnce(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, a, b := srv.client(t), srv.client(t), srv.client(t)
	zero := func(after string) {
		t.Helper()
		if got := dbsize(t, admin); got != 0 {
			t.Fatalf("DBSIZE after %s = %d; want 0", after, got)
		}
		if got := infoField(t, admin, "locks"); got != "0" {
			t.Fatalf("INFO locks after %s = %s; want 0", after, got)
		}
	}
	zero("start")
	k := mustLock(t, a, "LOCK", "free")
	if got := dbsize(t, admin); got != 1 {
		t.Fatalf("DBSIZE while held = %d; want 1", got)
	}
	mustUnlock(t, a, "free", k)
	zero("UNLOCK")

	k = mustLock(t, a, "LOCK", "free", "SIZE", 2)
	k2 := mustLock(t, b, "LOCK", "free", "SIZE", 2)
	mustUnlock(t, a, "free", k)
	mustUnlock(t, b, "free", k2)
	zero("releasing a semaphore's last hold")

	k = mustLock(t, a, "LOCK", "free")
	if err := b.Do(ctx, "LOCK", "free", "WAIT", 10).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("LOCK WAIT 10 = %v; want nil", err)
	}
	mustUnlock(t, a, "free", k)
	zero("a waiter timed out and the holder released")

	mustLock(t, a, "LOCK", "free")
	if err := a.Do(ctx, "RESET").Err(); err != nil {
		t.Fatal(err)
	}
	zero("RESET")

	if n, err := admin.Do(ctx, "FORCEUNLOCK", "never").Int(); err != nil || n != 0 {
		t.Fatalf("FORCEUNLOCK of a missing lock = %v, %v", n, err)
	}
	if err := admin.Do(ctx, "UNLOCK", "never", k).Err(); err == nil {
		t.Fatal("UNLOCK of a missing lock succeeded")
	}
	zero("FORCEUNLOCK and UNLOCK of a missing lock")
}

// TestServer_StopsWithBlockedLock: SIGTERM while a LOCK waits (on its
// detached connection) and others hold: the server exits 0 promptly (the
// harness checks the exit status) and the waiter's connection closes.
func TestServer_StopsWithBlockedLock(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, holder, waiter := srv.client(t), srv.client(t), srv.client(t)
	mustLock(t, holder, "LOCK", "stop")
	mustLock(t, holder, "LOCK", "stop-detached", "TTL", 60000, "DETACH")
	ch := lockAsync(ctx, waiter, "stop")
	waitForWaiters(t, admin, "stop", 1)

	stopped := time.Now()
	srv.Stop()
	if d := time.Since(stopped); d > 5*time.Second {
		t.Errorf("stopping took %v; want a few seconds at most", d)
	}
	select {
	case g := <-ch:
		if g.err == nil {
			t.Errorf("the blocked LOCK was granted %q while the server stopped", g.key)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked LOCK did not end when the server stopped")
	}
}
