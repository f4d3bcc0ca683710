package locktable

import (
	"strconv"
	"testing"
	"time"
)

// ExpireBatch releases at most max due holds per call, in the order one
// unbounded Expire would, and tells whether more are due.
func TestExpireBatch_ReleasesAtMostMaxInDeadlineOrder(t *testing.T) {
	build := func() *fixture {
		f := newFixture(t, Config{Shards: 8})
		s, w := f.session(), f.session()
		for i, ttl := range []int64{5, 3, 9, 3, 1, 7, 2} {
			f.mustGrant(s, Request{Name: "l" + strconv.Itoa(i), TTL: ttl * ms})
		}
		f.mustQueue(w, Request{Name: "l4", TTL: 1 * ms}) // granted when l4 expires, due at +11
		f.advance(10 * ms)
		return f
	}
	one := build()
	wantEqual(t, "unbounded Expire's next", one.expire(), one.now+1*ms)
	want := fences(one.ev.Releases)

	f := build()
	var got []uint64
	for i := 0; ; i++ {
		f.ev.Reset()
		next, more := f.tb.ExpireBatch(&f.ev, f.now, 3)
		f.check()
		if n := len(f.ev.Releases); n > 3 || (more && n != 3) {
			t.Fatalf("batch %d released %d holds, more=%v; want 3 while more are due, at most 3", i, n, more)
		}
		got = append(got, fences(f.ev.Releases)...)
		if !more {
			wantEqual(t, "last batch's next", next, f.now+1*ms)
			break
		}
		if next > f.now {
			t.Fatalf("batch %d: more with next %d after now %d", i, next, f.now)
		}
	}
	wantSlice(t, "released fences in batches", got, want)
	wantEqual(t, "holds released", len(got), 7)
}

func fences(rs []Release) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Fence)
	}
	return out
}

// A batch of 0 releases nothing only when nothing is due; with nothing at
// all it reports no deadline.
func TestExpireBatch_EmptyAndNothingDue(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	f.ev.Reset()
	next, more := f.tb.ExpireBatch(&f.ev, f.now, 1)
	wantEqual(t, "next of an empty table", next, int64(0))
	wantEqual(t, "more of an empty table", more, false)

	s := f.session()
	k := f.mustGrant(s, Request{Name: "a", TTL: 5 * ms})
	f.ev.Reset()
	next, more = f.tb.ExpireBatch(&f.ev, f.now, 1)
	wantEqual(t, "next", next, f.now+5*ms)
	wantEqual(t, "more", more, false)
	// Released by its key, the hold leaves the schedule stale; the next
	// batch finds nothing and says so exactly.
	f.mustUnlock("a", k)
	f.advance(10 * ms)
	f.ev.Reset()
	next, more = f.tb.ExpireBatch(&f.ev, f.now, 1)
	wantEqual(t, "next after unlock", next, int64(0))
	wantEqual(t, "more after unlock", more, false)
	wantEqual(t, "releases after unlock", len(f.ev.Releases), 0)
	f.wantEmpty()
}

// Expiry takes one shard mutex at a time: a shard held by someone else
// (here, the test) does not stop the expiry of holds in other shards.
// Expire used to take every shard mutex at once, so that one busy shard
// stalled expiry and, during a mass expiry, every other operation.
func TestExpire_DoesNotWaitForUnrelatedShards(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	busy := &f.tb.shards[shardIndex(f.tb, "busy")]
	for i := 0; f.tb.Stats().Holds < 50; i++ {
		name := "h" + strconv.Itoa(i)
		if sh, _ := f.tb.shardOf(name); sh != busy {
			f.mustGrant(s, Request{Name: name, TTL: 1 * ms})
		}
	}
	f.advance(1 * ms)
	busy.mu.Lock()
	done := make(chan int)
	go func() {
		var ev Events
		f.tb.Expire(&ev, f.now)
		done <- len(ev.Releases)
	}()
	select {
	case n := <-done:
		busy.mu.Unlock()
		wantEqual(t, "released", n, 50)
	case <-time.After(10 * time.Second):
		busy.mu.Unlock()
		<-done
		t.Fatal("Expire waited for a shard with nothing to expire")
	}
}

// The work of expiring a hold does not grow with the shard count. It
// compares the time to expire the same holds in tables of 8 and of 4096
// shards, with a generous bound (the rescan of every shard per release
// made 4096 shards hundreds of times slower).
func TestExpire_WorkPerHoldDoesNotGrowWithShards(t *testing.T) {
	n := 20_000
	if raceEnabled || testing.Short() {
		n = 5_000
	}
	cost := func(shards int) time.Duration {
		best := time.Duration(1<<63 - 1)
		for range 3 {
			tb := New(Config{Shards: shards})
			s := tb.NewSession(1, nil)
			holdMany(t, tb, s, "x", n, 1)
			var ev Events
			start := time.Now()
			tb.Expire(&ev, 1+60_000*ms)
			best = min(best, time.Since(start))
			if len(ev.Releases) != n {
				t.Fatalf("%d shards: Expire released %d; want %d", shards, len(ev.Releases), n)
			}
		}
		return best
	}
	few, many := cost(8), cost(4096)
	t.Logf("expiring %d holds: %v with 8 shards, %v with 4096", n, few, many)
	if many > 8*few {
		t.Fatalf("expiring %d holds took %v with 4096 shards, %v with 8; want at most 8 times as long", n, many, few)
	}
}
