package locktable

import (
	"strconv"
	"sync/atomic"
	"testing"
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
