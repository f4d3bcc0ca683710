package commands

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/relock/relock/locktable"
)

// expirer drives TTL expiry with one timer for the whole table: it sleeps
// until the earliest pending deadline and is poked when a new deadline is
// earlier than the one it sleeps for.
type expirer struct {
	next atomic.Int64  // the deadline the loop sleeps until; 0: none
	poke chan struct{} // buffered(1): "a deadline may be earlier now"
}

func (e *expirer) init() { e.poke = make(chan struct{}, 1) }

// schedule makes sure the loop wakes by deadline d (table time, ns).
func (e *expirer) schedule(d int64) {
	for {
		cur := e.next.Load()
		if cur != 0 && cur <= d {
			return
		}
		if e.next.CompareAndSwap(cur, d) {
			break
		}
	}
	select {
	case e.poke <- struct{}{}:
	default:
	}
}

// run expires holds until ctx is cancelled.
func (e *expirer) run(ctx context.Context, s *Server) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var ev locktable.Events
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.poke:
		}
		ev.Reset()
		// Forget the old deadline before scanning: a hold added during the
		// scan then always pokes, and the loop runs once more.
		e.next.Store(0)
		now := s.now()
		next, more := s.eng.expire(&ev, now)
		if len(ev.Releases) > 0 || len(ev.Grants) > 0 {
			// Expiries are committed at once, on their own: nobody
			// else may be about to commit.
			s.commit(&ev, true)
		}
		e.next.CompareAndSwap(0, next)
		wait := time.Hour
		if next != 0 {
			wait = time.Duration(next - now)
		}
		if more {
			// The next batch at once, but after whatever else waits to
			// run (an event loop's round, on a busy core).
			wait = 0
			runtime.Gosched()
		}
		timer.Reset(wait)
	}
}
