package locktable

import (
	"strconv"
	"testing"
	"time"
)

// holdShared has s take n shared holds of name, detached, with a TTL of
// an hour from now.
func holdShared(t testing.TB, tb *Table, s *Session, name string, n int, now int64) []Key {
	t.Helper()
	var ev Events
	keys := make([]Key, n)
	for i := range n {
		ev.Reset()
		k, out, err := tb.Acquire(&ev, s, Request{Name: name, Shared: true, Detach: true, TTL: 3600_000 * ms, Rand: uint64(i)}, now, false)
		if err != nil || out != Granted {
			t.Fatalf("Acquire(%s, shared) #%d = %v, %v", name, i, out, err)
		}
		keys[i] = k
	}
	return keys
}

// BenchmarkManyHoldsOfOneLock measures operations on a lock that has n
// shared holds: a shared LOCK (granted, appended after the n holds) and
// the UNLOCK of that new hold; an exclusive TRYLOCK (Busy); and a RENEW
// of the oldest hold. None of them may cost more with more holds.
func BenchmarkManyHoldsOfOneLock(b *testing.B) {
	for _, n := range []int{1_000, 50_000} {
		tb := New(Config{Shards: 8})
		s := tb.NewSession(1, nil)
		now := int64(1_000 * ms)
		keys := holdShared(b, tb, s, "big", n, now)
		b.Run("shared-lock-unlock/holds="+strconv.Itoa(n), func(b *testing.B) {
			var ev Events
			for i := 0; b.Loop(); i++ {
				ev.Reset()
				k, out, err := tb.Acquire(&ev, s, Request{Name: "big", Shared: true, TTL: 60_000 * ms, Rand: uint64(i)}, now, false)
				if err != nil || out != Granted {
					b.Fatalf("Acquire = %v, %v", out, err)
				}
				if err := tb.Unlock(&ev, "big", k, now); err != nil {
					b.Fatalf("Unlock = %v", err)
				}
			}
		})
		b.Run("exclusive-trylock/holds="+strconv.Itoa(n), func(b *testing.B) {
			var ev Events
			for i := 0; b.Loop(); i++ {
				ev.Reset()
				if _, out, err := tb.Acquire(&ev, s, Request{Name: "big", Rand: uint64(i)}, now, false); err != nil || out != Busy {
					b.Fatalf("Acquire = %v, %v", out, err)
				}
			}
		})
		b.Run("renew-oldest/holds="+strconv.Itoa(n), func(b *testing.B) {
			var ev Events
			for b.Loop() {
				ev.Reset()
				if _, err := tb.Renew(&ev, s, "big", keys[0], 0, now); err != nil {
					b.Fatalf("Renew = %v", err)
				}
			}
		})
	}
}

// TestManyHolds_AcquisitionCostDoesNotGrow takes 2k, then 100k more shared
// holds of one lock, and fails if a hold among the last thousand costs far
// more than one among the first (it cost O(holds) once: appending walked
// the list, and expiry scanned it).
func TestManyHolds_AcquisitionCostDoesNotGrow(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("timing: not under -race or -short")
	}
	tb := New(Config{Shards: 8})
	s := tb.NewSession(1, nil)
	now := int64(1_000 * ms)
	per := func() time.Duration {
		start := time.Now()
		holdShared(t, tb, s, "big", 1_000, now)
		return time.Since(start) / 1_000
	}
	holdShared(t, tb, s, "big", 1_000, now)
	small := per()
	holdShared(t, tb, s, "big", 100_000, now)
	large := per()
	t.Logf("per shared acquisition: %v beside 1k holds, %v beside 101k", small, large)
	if large > 20*small+20*time.Microsecond {
		t.Errorf("a shared acquisition beside 101k holds took %v, beside 1k %v: it grows with the holds", large, small)
	}
	checkInvariants(t, tb, s)
}
