package locktable

import (
	"errors"
	"slices"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// fixture drives one Table through a test: it owns the clock, hands out
// distinct random key parts and session ids, keeps the Events of the last
// operation, and checks the table's invariants after every operation and
// at the end of the test.
type fixture struct {
	t        *testing.T
	tb       *Table
	ev       Events
	now      int64
	rand     uint64
	nextID   uint64
	sessions []*Session
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, tb: New(cfg), now: 1_000 * ms, rand: 0x9e3779b97f4a7c15}
	t.Cleanup(func() {
		if !t.Failed() {
			checkInvariants(t, f.tb, f.sessions...)
		}
	})
	return f
}

func (f *fixture) check() {
	f.t.Helper()
	checkInvariants(f.t, f.tb, f.sessions...)
}

func (f *fixture) session() *Session {
	f.nextID++
	s := f.tb.NewSession(f.nextID, nil)
	f.sessions = append(f.sessions, s)
	return s
}

func (f *fixture) advance(d int64) { f.now += d }

// acquire runs Acquire with a fresh random key part unless req sets one.
func (f *fixture) acquire(s *Session, req Request, wait bool) (Key, Outcome, error) {
	f.t.Helper()
	if req.Rand == 0 {
		f.rand = f.rand*6364136223846793005 + 1442695040888963407
		req.Rand = f.rand
	}
	f.ev.Reset()
	k, out, err := f.tb.Acquire(&f.ev, s, req, f.now, wait)
	f.check()
	return k, out, err
}

// mustGrant acquires and fails the test unless the request is granted.
func (f *fixture) mustGrant(s *Session, req Request) Key {
	f.t.Helper()
	k, out, err := f.acquire(s, req, false)
	if err != nil || out != Granted || k.IsZero() {
		f.t.Fatalf("Acquire(%q) by session %d = %v, %v, %v; want a key, Granted, nil", req.Name, s.ID, k, out, err)
	}
	return k
}

// mustQueue acquires with wait and fails the test unless the request queues.
func (f *fixture) mustQueue(s *Session, req Request) {
	f.t.Helper()
	k, out, err := f.acquire(s, req, true)
	if err != nil || out != Queued || !k.IsZero() {
		f.t.Fatalf("Acquire(%q, wait) by session %d = %v, %v, %v; want zero key, Queued, nil", req.Name, s.ID, k, out, err)
	}
}

func (f *fixture) unlock(name string, k Key) error {
	f.t.Helper()
	f.ev.Reset()
	err := f.tb.Unlock(&f.ev, name, k, f.now)
	f.check()
	return err
}

func (f *fixture) mustUnlock(name string, k Key) {
	f.t.Helper()
	if err := f.unlock(name, k); err != nil {
		f.t.Fatalf("Unlock(%q, %v) = %v; want nil", name, k, err)
	}
}

func (f *fixture) renew(s *Session, name string, k Key, ttl int64) (int64, error) {
	f.t.Helper()
	f.ev.Reset()
	got, err := f.tb.Renew(&f.ev, s, name, k, ttl, f.now)
	f.check()
	return got, err
}

func (f *fixture) checkKey(name string, k Key) (int64, error) {
	f.t.Helper()
	f.ev.Reset()
	got, err := f.tb.Check(&f.ev, name, k, f.now)
	f.check()
	return got, err
}

func (f *fixture) forceUnlock(name string) int {
	f.t.Helper()
	f.ev.Reset()
	n := f.tb.ForceUnlock(&f.ev, name, f.now)
	f.check()
	return n
}

func (f *fixture) closeSession(s *Session) {
	f.t.Helper()
	f.ev.Reset()
	f.tb.CloseSession(&f.ev, s, f.now)
	f.check()
}

func (f *fixture) closeSessionFor(s *Session, why Reason) {
	f.t.Helper()
	f.ev.Reset()
	f.tb.CloseSessionFor(&f.ev, s, why, f.now)
	f.check()
}

func (f *fixture) cancelWait(s *Session) bool {
	f.t.Helper()
	f.ev.Reset()
	ok := f.tb.CancelWaitAt(&f.ev, s, f.now)
	f.check()
	return ok
}

// upgrade runs Upgrade with a fresh random part for the new key.
func (f *fixture) upgrade(s *Session, name string, k Key) (Key, Outcome, error) {
	f.t.Helper()
	f.rand = f.rand*6364136223846793005 + 1442695040888963407
	f.ev.Reset()
	nk, out, err := f.tb.Upgrade(&f.ev, s, name, k, f.rand, f.now)
	f.check()
	return nk, out, err
}

func (f *fixture) downgrade(name string, k Key) error {
	f.t.Helper()
	f.ev.Reset()
	err := f.tb.Downgrade(&f.ev, name, k, f.now)
	f.check()
	return err
}

func (f *fixture) expire() int64 {
	f.t.Helper()
	f.ev.Reset()
	next := f.tb.Expire(&f.ev, f.now)
	f.check()
	return next
}

// grantedTo returns the session ids of the last operation's grants, in order.
func (f *fixture) grantedTo() []uint64 {
	var ids []uint64
	for _, g := range f.ev.Grants {
		ids = append(ids, g.Session.ID)
	}
	return ids
}

// released returns the reasons of the last operation's releases, in order.
func (f *fixture) released() []Reason {
	var rs []Reason
	for _, r := range f.ev.Releases {
		rs = append(rs, r.Reason)
	}
	return rs
}

// lockInfo returns the listing of name, failing the test if it is absent.
func (f *fixture) lockInfo(name string) LockInfo {
	f.t.Helper()
	li, ok := f.tb.Lock(name, f.now)
	if !ok {
		f.t.Fatalf("Lock(%q) missing; want it to exist", name)
	}
	return li
}

func (f *fixture) wantNoLock(name string) {
	f.t.Helper()
	if li, ok := f.tb.Lock(name, f.now); ok {
		f.t.Fatalf("Lock(%q) = %+v; want no such lock", name, li)
	}
}

func (f *fixture) wantStats(want Stats) {
	f.t.Helper()
	if got := f.tb.Stats(); got != want {
		f.t.Fatalf("Stats() = %+v; want %+v", got, want)
	}
}

// wantEmpty fails unless the table has no locks at all, in its counters
// and in its maps.
func (f *fixture) wantEmpty() {
	f.t.Helper()
	f.wantStats(Stats{})
	for i := range f.tb.shards {
		sh := &f.tb.shards[i]
		sh.mu.Lock()
		n, h := sh.index.n, int(sh.expiry.n)
		sh.mu.Unlock()
		if n != 0 || h != 0 {
			f.t.Fatalf("shard %d has %d locks and %d heap entries; want none", i, n, h)
		}
	}
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("%s: error = %v; want %v", what, got, want)
	}
}

func wantEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s = %v; want %v", what, got, want)
	}
}

func wantSlice[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %v; want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s = %v; want %v", what, got, want)
		}
	}
}

// acquireMulti runs AcquireMulti with fresh random key parts where reqs
// set none.
func (f *fixture) acquireMulti(s *Session, reqs []Request, wait bool) ([]Key, Outcome, error) {
	f.t.Helper()
	reqs = append([]Request(nil), reqs...)
	for i := range reqs {
		if reqs[i].Rand == 0 {
			f.rand = f.rand*6364136223846793005 + 1442695040888963407
			reqs[i].Rand = f.rand
		}
	}
	f.ev.Reset()
	ks, out, err := f.tb.AcquireMulti(&f.ev, s, reqs, f.now, wait)
	f.check()
	return ks, out, err
}

// multiReqs returns one request per name, each like base.
func multiReqs(base Request, names ...string) []Request {
	var reqs []Request
	for _, n := range names {
		r := base
		r.Name = n
		reqs = append(reqs, r)
	}
	return reqs
}

func (f *fixture) mustGrantMulti(s *Session, base Request, names ...string) []Key {
	f.t.Helper()
	ks, out, err := f.acquireMulti(s, multiReqs(base, names...), false)
	if err != nil || out != Granted || len(ks) != len(names) {
		f.t.Fatalf("AcquireMulti(%q) by session %d = %v, %v, %v; want %d keys, Granted", names, s.ID, ks, outcomeName(out), err, len(names))
	}
	return ks
}

func (f *fixture) mustQueueMulti(s *Session, base Request, names ...string) {
	f.t.Helper()
	ks, out, err := f.acquireMulti(s, multiReqs(base, names...), true)
	if err != nil || out != Queued || ks != nil {
		f.t.Fatalf("AcquireMulti(%q, wait) by session %d = %v, %v, %v; want Queued", names, s.ID, ks, outcomeName(out), err)
	}
}

// wantDeadlock fails unless err is a *DeadlockError through locks.
func wantDeadlock(t *testing.T, what string, err error, locks ...string) {
	t.Helper()
	var de *DeadlockError
	if !errors.As(err, &de) || !errors.Is(err, ErrDeadlock) || !slices.Equal(de.Locks, locks) {
		t.Fatalf("%s: error = %v; want a DeadlockError through %q", what, err, locks)
	}
}

// waiters returns the session ids queued on name, in order (none if the
// lock does not exist).
func (f *fixture) waiters(name string) []int64 {
	li, _ := f.tb.Lock(name, f.now)
	var ids []int64
	for _, w := range li.Waiters {
		ids = append(ids, w.SessionID)
	}
	return ids
}
