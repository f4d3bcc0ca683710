package locktable

import (
	"fmt"
	"testing"
)

// noticeLog collects a table's notices as "kind name fence reason waiters".
type noticeLog struct {
	got     []string
	watched bool
}

func (l *noticeLog) config(cfg Config) Config {
	cfg.Notify = func(n Notice) {
		l.got = append(l.got, fmt.Sprintf("%s %s %d %s %d", n.Kind, n.Name, n.Fence, n.Reason, n.Waiters))
	}
	cfg.Watched = func() bool { return l.watched }
	return cfg
}

func (l *noticeLog) take() []string {
	got := l.got
	l.got = nil
	return got
}

func TestNotices_TellEveryChangeOfALockInOrder(t *testing.T) {
	log := &noticeLog{watched: true}
	f := newFixture(t, log.config(Config{}))
	a, b, c := f.session(), f.session(), f.session()

	ka := f.mustGrant(a, Request{Name: "x", TTL: 100 * ms})
	f.mustQueue(b, Request{Name: "x"})
	f.mustQueue(c, Request{Name: "x", Owner: "o"})
	wantSlice(t, "grant and queue", log.take(), []string{
		fmt.Sprintf("acquired x %d unknown 0", ka.Fence),
		"contended x 0 unknown 1",
		"contended x 0 unknown 2",
	})

	// A re-entry is no new hold; the expiry hands x to b.
	f.advance(100 * ms)
	f.expire()
	kb := f.ev.Grants[0].Key
	wantSlice(t, "expiry", log.take(), []string{
		fmt.Sprintf("released x %d expired 0", ka.Fence),
		fmt.Sprintf("acquired x %d unknown 0", kb.Fence),
	})

	f.ev.Reset()
	f.tb.CloseSessionFor(&f.ev, b, ReasonKilled, f.now)
	kc := f.ev.Grants[0].Key
	f.mustUnlock("x", kc)
	wantSlice(t, "kill, then unlock", log.take(), []string{
		fmt.Sprintf("released x %d killed 0", kb.Fence),
		fmt.Sprintf("acquired x %d unknown 0", kc.Fence),
		fmt.Sprintf("released x %d unlock 0", kc.Fence),
		"free x 0 unknown 0",
	})

	// Unwatched, nothing is built.
	log.watched = false
	k := f.mustGrant(a, Request{Name: "y"})
	f.mustUnlock("y", k)
	wantSlice(t, "unwatched", log.take(), nil)
}
