package locktable

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAcquireUnlock measures an uncontended LOCK+UNLOCK cycle: every
// goroutine has its own session and its own lock name, so shards are the
// only thing goroutines may share.
func BenchmarkAcquireUnlock(b *testing.B) {
	tb := New(Config{Shards: 64})
	var ids atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := ids.Add(1)
		s := tb.NewSession(id, nil)
		req := Request{Name: "bench/" + strconv.FormatUint(id, 10), TTL: 30_000_000_000}
		var ev Events
		now := int64(1)
		for pb.Next() {
			now++
			req.Rand = uint64(now)
			ev.Reset()
			k, out, err := tb.Acquire(&ev, s, req, now, false)
			if err != nil || out != Granted {
				b.Fatalf("Acquire = %v, %v", out, err)
			}
			ev.Reset()
			if err := tb.Unlock(&ev, req.Name, k, now); err != nil {
				b.Fatalf("Unlock = %v", err)
			}
		}
	})
}

// BenchmarkLocksPage measures one LOCKS COUNT 1 AFTER x page over 500k
// held locks (the page, not the filling).
func BenchmarkLocksPage(b *testing.B) {
	for _, shards := range []int{8, 4096} {
		b.Run("shards="+strconv.Itoa(shards), func(b *testing.B) {
			tb := New(Config{Shards: shards})
			s := tb.NewSession(1, nil)
			holdMany(b, tb, s, "lock:", 500_000, 1)
			after := "lock:25"
			b.ResetTimer()
			for b.Loop() {
				if got := tb.Locks(Query{After: after, Count: 1}, 1); len(got) != 1 {
					b.Fatalf("Locks = %d locks; want 1", len(got))
				}
			}
		})
	}
}

// BenchmarkExpireStall expires 300k holds due together and reports the
// longest an unrelated TRYLOCK+UNLOCK, run meanwhile from another
// goroutine, took (max-stall-ns), and what the mass expiry took in all.
func BenchmarkExpireStall(b *testing.B) {
	for _, shards := range []int{8, 4096} {
		b.Run("shards="+strconv.Itoa(shards), func(b *testing.B) {
			var worst time.Duration
			for b.Loop() {
				b.StopTimer()
				tb := New(Config{Shards: shards})
				s := tb.NewSession(1, nil)
				holdMany(b, tb, s, "orphan:", 300_000, 1)
				other := tb.NewSession(2, nil)
				due := int64(1) + 60_000*ms
				done := make(chan struct{})
				stalled := make(chan time.Duration)
				go func() {
					var ev Events
					var max time.Duration
					for i := 0; ; i++ {
						select {
						case <-done:
							stalled <- max
							return
						default:
						}
						start := time.Now()
						ev.Reset()
						k, _, _ := tb.Acquire(&ev, other, Request{Name: "unrelated", Rand: uint64(i)}, 1, false)
						tb.Unlock(&ev, "unrelated", k, 1)
						max = maxDuration(max, time.Since(start))
					}
				}()
				b.StartTimer()
				expireAll(tb, due)
				b.StopTimer()
				close(done)
				worst = maxDuration(worst, <-stalled)
				b.StartTimer()
			}
			b.ReportMetric(float64(worst.Nanoseconds()), "max-stall-ns")
		})
	}
}

func maxDuration(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// BenchmarkAcquireUnlockBesideHeld is the uncontended cycle on one
// goroutine in a table that holds 200k other locks, so that creating and
// deleting the lock works on big shards.
func BenchmarkAcquireUnlockBesideHeld(b *testing.B) {
	tb := New(Config{Shards: 8})
	holdMany(b, tb, tb.NewSession(1, nil), "held:", 200_000, 1)
	s := tb.NewSession(2, nil)
	names := make([]string, 1024)
	for i := range names {
		names[i] = "cycle:" + strconv.Itoa(i*7919)
	}
	var ev Events
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		req := Request{Name: names[i%len(names)], TTL: 30_000_000_000, Rand: uint64(i)}
		ev.Reset()
		k, out, err := tb.Acquire(&ev, s, req, 2, false)
		if err != nil || out != Granted {
			b.Fatalf("Acquire = %v, %v", out, err)
		}
		ev.Reset()
		if err := tb.Unlock(&ev, req.Name, k, 2); err != nil {
			b.Fatalf("Unlock = %v", err)
		}
	}
}

// expireAll expires everything due at now in batches of 1024, as the
// server's expiry timer does.
func expireAll(tb *Table, now int64) {
	var ev Events
	for {
		ev.Reset()
		if _, more := tb.ExpireBatch(&ev, now, 1024); !more {
			return
		}
	}
}
