package locktable

import (
	"errors"
	"math"
	"strconv"
	"testing"
)

// namesInBucket returns n distinct names whose hashes end in bucket
// (mod maxShards): the names an attacker would pick to fill one shard at
// any shard count. FNV-1a's low bits depend only on the low bits of its
// state, so two steering bytes after a counter always suffice.
func namesInBucket(prefix string, bucket uint64, n int) []string {
	const mask = maxShards - 1
	const prime = 1099511628211
	// target: the state whose next step (x ^ 0) * prime lands in bucket.
	inv := uint64(1)
	for inv*prime&mask != 1 {
		inv += 2
	}
	target := bucket * inv & mask
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		base := prefix + strconv.Itoa(i)
		h := hashName(base)
		for c1 := range 256 {
			h1 := (h ^ uint64(c1)) * prime
			if h1&mask&^0xff != target&^0xff {
				continue
			}
			c2 := byte((h1 ^ target) & 0xff)
			out = append(out, base+string([]byte{byte(c1), c2}))
			break
		}
	}
	return out
}

// Names crafted to share one bucket fill it to its cap and then are
// refused with ErrTableFull, changing nothing, at any shard count: with
// 4096 shards the bucket is a whole shard, whose hold ids would otherwise
// run out (the table panicked, killing the process, or every replica).
func TestAcquire_FullBucketRefusedNotPanics(t *testing.T) {
	if testing.Short() {
		t.Skip("a million holds")
	}
	tb := New(Config{Shards: maxShards})
	s := tb.NewSession(1, nil)
	names := namesInBucket("crafted/", 5, maxBucketHolds+1)
	var ev Events
	for i, name := range names[:maxBucketHolds] {
		ev.Reset()
		if _, out, err := tb.Acquire(&ev, s, Request{Name: name, TTL: 60_000 * ms, Rand: uint64(i)}, 1, false); err != nil || out != Granted {
			t.Fatalf("Acquire #%d (%q) = %v, %v; want Granted", i, name, out, err)
		}
	}
	before, fence := tb.Stats(), tb.LastFence()
	last := names[maxBucketHolds]
	_, _, err := tb.Acquire(&ev, s, Request{Name: last, TTL: 60_000 * ms, Rand: 1}, 1, false)
	wantErr(t, "Acquire past the bucket's cap", err, ErrTableFull)
	wantEqual(t, "stats after the refusal", tb.Stats(), before)
	wantEqual(t, "fence after the refusal", tb.LastFence(), fence)
	if _, ok := tb.Lock(last, 1); ok {
		t.Fatalf("refused lock %q exists", last)
	}
	// A release makes room for exactly one more.
	wantErr(t, "Unlock", tb.Unlock(&ev, names[0], Key{Fence: fence - maxBucketHolds + 1, Rand: 0}, 1), nil)
	if _, out, err := tb.Acquire(&ev, s, Request{Name: last, Rand: 2}, 1, false); err != nil || out != Granted {
		t.Fatalf("Acquire after a release = %v, %v; want Granted", out, err)
	}
	// Other buckets, in other shards, are not affected.
	if _, out, err := tb.Acquire(&ev, s, Request{Name: "elsewhere", Rand: 3}, 1, false); err != nil || out != Granted {
		t.Fatalf("Acquire elsewhere = %v, %v; want Granted", out, err)
	}
	tb.CloseSession(&ev, s, 1)
	checkInvariants(t, tb, s)
}

// The bucket cap answers alike at any shard count (replicas may have
// different ones), counts holds not locks, never blocks a grant to a
// waiter (whose hold replaces the one released), and a refused request
// changes nothing.
func TestAcquire_BucketCapSameAtAnyShardCount(t *testing.T) {
	names := namesInBucket("b", 9, 3)
	other := namesInBucket("o", 10, 1)[0]
	for _, shards := range []int{1, 8, maxShards} {
		t.Run(strconv.Itoa(shards)+" shards", func(t *testing.T) {
			f := newFixture(t, Config{Shards: shards, bucketCap: 3})
			s, w := f.session(), f.session()
			k0 := f.mustGrant(s, Request{Name: names[0], Size: 2})
			f.mustGrant(s, Request{Name: names[0], Size: 2})
			f.mustGrant(s, Request{Name: names[1], Owner: "o", TTL: 5 * ms})
			f.mustGrant(s, Request{Name: other})
			dump := f.tb.Dump(f.now)
			_, _, err := f.acquire(s, Request{Name: names[2]}, true)
			wantErr(t, "a fourth hold in the bucket", err, ErrTableFull)
			wantEqual(t, "state after the refusal", f.tb.Dump(f.now), dump)
			// Re-entry takes no new hold.
			f.mustGrant(s, Request{Name: names[1], Owner: "o", TTL: 5 * ms})
			// A full lock still queues, and its waiter is granted when a
			// hold ends, though the bucket is full.
			f.mustQueue(w, Request{Name: names[0], Size: 2})
			f.mustUnlock(names[0], k0)
			wantSlice(t, "granted", f.grantedTo(), []uint64{w.ID})
			// Expiry frees room.
			f.advance(5 * ms)
			f.expire()
			f.mustGrant(s, Request{Name: names[2]})
		})
	}
}

// A hold re-entered 2^32-1 times refuses one more re-entry instead of
// wrapping its count to zero.
func TestAcquire_ReentryCountDoesNotWrap(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	k := f.mustGrant(s, Request{Name: "r", Owner: "me"})
	sh, hash := f.tb.shardOf("r")
	id := sh.findHold(sh.find("r", hash), k)
	sh.hold(id).count = math.MaxUint32 - 1
	f.mustGrant(s, Request{Name: "r", Owner: "me"})
	_, _, err := f.acquire(s, Request{Name: "r", Owner: "me"}, false)
	wantErr(t, "re-entry past the count's range", err, ErrTooManyReentries)
	wantEqual(t, "count", f.lockInfo("r").Holds[0].Count, uint32(math.MaxUint32))
	f.mustUnlock("r", k)
	wantEqual(t, "count after one unlock", f.lockInfo("r").Holds[0].Count, uint32(math.MaxUint32-1))
}

// A shard whose name arena is full keeps further names beside it, as it
// does long names, instead of panicking.
func TestAcquire_FullNameArenaSpillsNotPanics(t *testing.T) {
	f := newFixture(t, Config{})
	s := f.session()
	sh := &f.tb.shards[0]
	sh.names.limit = 20 // grains: room for about 17 of these names
	keys := map[string]Key{}
	for i := range 30 {
		name := "spill/" + strconv.Itoa(i)
		keys[name] = f.mustGrant(s, Request{Name: name})
	}
	if len(sh.longNames) == 0 {
		t.Fatal("no name spilled out of the arena")
	}
	for name, k := range keys {
		wantEqual(t, "listed name", f.lockInfo(name).Name, name)
		f.mustUnlock(name, k)
	}
	f.wantEmpty()
	// Freed blocks are reused within the limit.
	f.mustGrant(s, Request{Name: "spill/0"})
	wantEqual(t, "long names after reuse", len(sh.longNames), 0)
}

// Loading a state, or restoring records, past a bucket's cap refuses (or
// drops) what does not fit instead of panicking.
func TestLoad_PastBucketCapRefused(t *testing.T) {
	names := namesInBucket("l", 2, 3)
	src := New(Config{})
	s := src.NewSession(1, nil)
	var ev Events
	for i, name := range names {
		if _, _, err := src.Acquire(&ev, s, Request{Name: name, TTL: 60_000 * ms, Rand: uint64(i)}, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	_, err := New(Config{Shards: 8, bucketCap: 2}).LoadState(src.State(nil), nil)
	if !errors.Is(err, ErrTableFull) {
		t.Fatalf("LoadState past the cap = %v; want ErrTableFull", err)
	}
	dst := New(Config{Shards: 8, bucketCap: 2})
	restored, dropped := dst.Restore(src.Snapshot(), 1, 10_000*ms)
	wantEqual(t, "restored", restored, 2)
	wantEqual(t, "dropped", dropped, 1)
	checkInvariants(t, dst)
}
