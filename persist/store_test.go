package persist

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/locktable"
	bolt "go.etcd.io/bbolt"
)

const sec = int64(time.Second)

// t0 is the tests' clock: table time in unix ns, as relock uses.
const t0 = int64(1_750_000_000) * sec

func newTable() *locktable.Table {
	return locktable.New(locktable.Config{Shards: 4, FenceStart: 1_000})
}

// mustOpen opens the store in dir and closes it when the test ends
// (Close is idempotent, so tests may close it earlier).
func mustOpen(t *testing.T, dir string, mode Mode) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Mode: mode, OpenTimeout: time.Second})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mustAttach restores the (possibly empty) store into a new table and
// attaches it, as commands.New does.
func mustAttach(t *testing.T, s *Store, now int64) *locktable.Table {
	t.Helper()
	tb := newTable()
	if _, _, err := s.RestoreInto(tb, now, 30*time.Second); err != nil {
		t.Fatalf("RestoreInto: %v", err)
	}
	return tb
}

// loadDir reads what a store in dir holds, as the next start would.
func loadDir(t *testing.T, dir string) ([]locktable.HoldRecord, uint64) {
	t.Helper()
	s, err := Open(Options{Dir: dir, Mode: No, OpenTimeout: time.Second})
	if err != nil {
		t.Fatalf("reopen %s: %v", dir, err)
	}
	defer s.Close()
	recs, hw, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return recs, hw
}

var randSeq uint64 = 0x9e3779b97f4a7c15

// grant acquires req for sess and fails the test unless it is granted.
func grant(t *testing.T, tb *locktable.Table, sess *locktable.Session, req locktable.Request, now int64) locktable.Key {
	t.Helper()
	if req.Rand == 0 {
		randSeq = randSeq*6364136223846793005 + 1442695040888963407
		req.Rand = randSeq
	}
	var ev locktable.Events
	k, out, err := tb.Acquire(&ev, sess, req, now, false)
	if err != nil || out != locktable.Granted {
		t.Fatalf("Acquire(%+v) = %v, %v, %v; want granted", req, k, out, err)
	}
	return k
}

// sortRecs orders records by fence, the store's key order.
func sortRecs(recs []locktable.HoldRecord) []locktable.HoldRecord {
	out := slices.Clone(recs)
	slices.SortFunc(out, func(a, b locktable.HoldRecord) int {
		switch {
		case a.Key.Fence < b.Key.Fence:
			return -1
		case a.Key.Fence > b.Key.Fence:
			return 1
		}
		return 0
	})
	return out
}

func wantRecords(t *testing.T, what string, got, want []locktable.HoldRecord) {
	t.Helper()
	got, want = sortRecs(got), sortRecs(want)
	if !slices.Equal(got, want) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: got %d records, want %d\n", what, len(got), len(want))
		for _, r := range got {
			fmt.Fprintf(&b, "  got  %+v\n", r)
		}
		for _, r := range want {
			fmt.Fprintf(&b, "  want %+v\n", r)
		}
		t.Fatal(b.String())
	}
}

// holdsOfEveryShape fills tb with a plain bound hold, a TTL hold, a
// detached hold, a semaphore of size 3 with two holders and a re-entered
// owner hold (count 2), and returns the session they are bound to.
func holdsOfEveryShape(t *testing.T, tb *locktable.Table, now int64) *locktable.Session {
	t.Helper()
	s := tb.NewSession(1, nil)
	grant(t, tb, s, locktable.Request{Name: "plain"}, now)
	grant(t, tb, s, locktable.Request{Name: "ttl", TTL: 10 * sec}, now)
	grant(t, tb, s, locktable.Request{Name: "detached", TTL: 60 * sec, Detach: true}, now)
	grant(t, tb, s, locktable.Request{Name: "sem", Size: 3}, now)
	grant(t, tb, s, locktable.Request{Name: "sem", Size: 3, TTL: 5 * sec}, now)
	k1 := grant(t, tb, s, locktable.Request{Name: "reentrant", Owner: "host:1:main"}, now)
	if k2 := grant(t, tb, s, locktable.Request{Name: "reentrant", Owner: "host:1:main"}, now); k2 != k1 {
		t.Fatalf("re-entry gave key %v, want %v", k2, k1)
	}
	return s
}

func TestStore_AttachedSnapshotLoadsBack(t *testing.T) {
	dir := t.TempDir()
	tb := newTable()
	holdsOfEveryShape(t, tb, t0)
	s := mustOpen(t, dir, Always)
	if err := s.Attach(tb); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	want := tb.Snapshot()
	if len(want) != 6 {
		t.Fatalf("snapshot has %d holds, want 6", len(want))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got, hw := loadDir(t, dir)
	wantRecords(t, "loaded", got, want)
	if hw != tb.LastFence() {
		t.Fatalf("high-water = %d, want last fence %d", hw, tb.LastFence())
	}
}

func TestStore_RestoreIntoBringsBackOrphansAndRaisesFences(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	holdsOfEveryShape(t, tb, t0)
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	before := tb.Snapshot()
	last := tb.LastFence()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Restart 1 s later with a 3 s grace.
	now := t0 + sec
	grace := 3 * time.Second
	s2 := mustOpen(t, dir, Always)
	tb2 := newTable()
	restored, dropped, err := s2.RestoreInto(tb2, now, grace)
	if err != nil || restored != 6 || dropped != 0 {
		t.Fatalf("RestoreInto = %d, %d, %v; want 6 restored, 0 dropped", restored, dropped, err)
	}
	var want []locktable.HoldRecord
	for _, r := range before {
		if r.Bound {
			if g := now + int64(grace); r.Deadline == 0 || g < r.Deadline {
				r.Deadline = g
			}
		}
		want = append(want, r)
	}
	wantRecords(t, "restored table", tb2.Snapshot(), want)
	for _, li := range tb2.Locks(locktable.Query{}, now) {
		for _, h := range li.Holds {
			if h.Orphan == h.Detached || h.SessionID != -1 {
				t.Errorf("%s fence %d: orphan=%v detached=%v client=%d; want bound holds orphaned, none attached",
					li.Name, h.Fence, h.Orphan, h.Detached, h.SessionID)
			}
		}
	}
	if tb2.LastFence() < last {
		t.Fatalf("restored table's last fence %d < %d issued before", tb2.LastFence(), last)
	}
	k := grant(t, tb2, tb2.NewSession(2, nil), locktable.Request{Name: "new"}, now)
	if k.Fence <= last {
		t.Fatalf("new fence %d not above %d", k.Fence, last)
	}
}

func TestStore_RestoreIntoDropsExpiredHoldsFromTheFile(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	sess := tb.NewSession(1, nil)
	grant(t, tb, sess, locktable.Request{Name: "short", TTL: sec, Detach: true}, t0)
	long := grant(t, tb, sess, locktable.Request{Name: "long", TTL: 60 * sec, Detach: true}, t0)
	grant(t, tb, sess, locktable.Request{Name: "bound"}, t0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// 10 s later, grace 5 s: "short" expired while down; "bound" gets the
	// grace, "long" keeps its deadline.
	s2 := mustOpen(t, dir, Always)
	tb2 := newTable()
	restored, dropped, err := s2.RestoreInto(tb2, t0+10*sec, 5*time.Second)
	if err != nil || restored != 2 || dropped != 1 {
		t.Fatalf("RestoreInto = %d, %d, %v; want 2 restored, 1 dropped", restored, dropped, err)
	}
	if _, err := tb2.Check(&locktable.Events{}, "long", long, t0+10*sec); err != nil {
		t.Fatalf("CHECK long after restore: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Attach rewrote the file: the expired hold is gone from it.
	recs, _ := loadDir(t, dir)
	for _, r := range recs {
		if r.Name == "short" {
			t.Fatalf("expired hold still stored: %+v", r)
		}
	}
	if len(recs) != 2 {
		t.Fatalf("stored %d holds, want 2", len(recs))
	}
}

// TestStore_ClosedStateMatchesTable runs the same changes under each mode
// and checks that a clean Close leaves exactly the table's holds.
func TestStore_ClosedStateMatchesTable(t *testing.T) {
	for _, mode := range []Mode{Always, EverySec, No} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, mode)
			tb := mustAttach(t, s, t0)
			sess := holdsOfEveryShape(t, tb, t0)
			other := tb.NewSession(2, nil)
			var ev locktable.Events
			gone := grant(t, tb, other, locktable.Request{Name: "gone", TTL: sec, Detach: true}, t0)
			if err := tb.Unlock(&ev, "gone", gone, t0); err != nil {
				t.Fatal(err)
			}
			grant(t, tb, other, locktable.Request{Name: "disconnected"}, t0)
			tb.CloseSession(&ev, other, t0)
			k := grant(t, tb, sess, locktable.Request{Name: "renewed", TTL: sec}, t0)
			if _, err := tb.Renew(&ev, sess, "renewed", k, 20*sec, t0+sec/2); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			want := tb.Snapshot()
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			got, hw := loadDir(t, dir)
			wantRecords(t, "stored after Close", got, want)
			if hw != tb.LastFence() {
				t.Fatalf("high-water = %d, want %d", hw, tb.LastFence())
			}
		})
	}
}

// TestStore_CloseKeepsBoundHoldsOfConnectionsClosedAfterIt: stopping the
// server is not a disconnect; releases after Close are not recorded.
func TestStore_CloseKeepsBoundHoldsOfConnectionsClosedAfterIt(t *testing.T) {
	for _, mode := range []Mode{Always, EverySec, No} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, mode)
			tb := mustAttach(t, s, t0)
			sess := holdsOfEveryShape(t, tb, t0)
			want := tb.Snapshot()
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			var ev locktable.Events
			tb.CloseSession(&ev, sess, t0) // connections close at shutdown
			if len(ev.Releases) != 5 {
				t.Fatalf("closing the session released %d holds, want 5", len(ev.Releases))
			}
			// In every mode: a change after Close is not in the final state,
			// so it must not be acknowledged.
			if err := s.Sync(); !errors.Is(err, ErrClosed) {
				t.Fatalf("Sync after Close = %v, want ErrClosed", err)
			}
			got, _ := loadDir(t, dir)
			wantRecords(t, "stored", got, want)
		})
	}
}

// copyStoreFile copies a store's file while it is open, as a crash
// (SIGKILL, power loss after fsync) would leave it.
func copyStoreFile(t *testing.T, dir string) string {
	t.Helper()
	crashed := t.TempDir()
	for _, name := range []string{"relock.db", walName} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crashed, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return crashed
}

func TestStore_SyncedChangesAreInTheFileWithoutClose(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	sess := holdsOfEveryShape(t, tb, t0)
	var ev locktable.Events
	k := grant(t, tb, sess, locktable.Request{Name: "released"}, t0)
	if err := tb.Unlock(&ev, "released", k, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	got, hw := loadDir(t, copyStoreFile(t, dir))
	wantRecords(t, "file after Sync, before Close", got, tb.Snapshot())
	if hw != tb.LastFence() {
		t.Fatalf("high-water = %d, want %d", hw, tb.LastFence())
	}
}

// TestStore_RestartKeepsLockDelays: a slot in lock-delay and a hold's
// lock-delay are stored (by the log, and by bbolt at Close), and a restart
// keeps the slot until its own deadline, neither cut short nor given the
// restore grace; a slot whose delay ended while the server was down is
// dropped.
func TestStore_RestartKeepsLockDelays(t *testing.T) {
	for _, how := range []string{"clean close", "crash after sync"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Always)
			tb := mustAttach(t, s, t0)
			var ev locktable.Events
			s1, s2, s3 := tb.NewSession(1, nil), tb.NewSession(2, nil), tb.NewSession(3, nil)
			grant(t, tb, s1, locktable.Request{Name: "slot", LockDelay: 10 * sec}, t0)
			grant(t, tb, s2, locktable.Request{Name: "gone", LockDelay: sec}, t0)
			held := grant(t, tb, s3, locktable.Request{Name: "held", LockDelay: 20 * sec}, t0)
			tb.CloseSession(&ev, s1, t0)
			tb.CloseSession(&ev, s2, t0)
			if err := s.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			want := tb.Snapshot()
			from := dir
			if how == "crash after sync" {
				from = copyStoreFile(t, dir)
			} else if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			got, _ := loadDir(t, from)
			wantRecords(t, "stored", got, want)

			// Restart 2 s later with a 3 s grace.
			now := t0 + 2*sec
			s2nd := mustOpen(t, from, Always)
			tb2 := newTable()
			restored, dropped, err := s2nd.RestoreInto(tb2, now, 3*time.Second)
			if err != nil || restored != 2 || dropped != 1 {
				t.Fatalf("RestoreInto = %d, %d, %v; want 2 restored (slot, held), 1 dropped (gone)", restored, dropped, err)
			}
			if li, ok := tb2.Lock("slot", now); !ok || li.Delayed != 1 || len(li.Holds) != 0 {
				t.Fatalf("slot after restart: %+v, %v; want one slot in lock-delay", li, ok)
			}
			if _, ok := tb2.Lock("gone", now); ok {
				t.Fatal("a slot whose delay ended while down was restored")
			}
			other := tb2.NewSession(9, nil)
			try := func(name string, at int64) locktable.Outcome {
				ev.Reset()
				_, out, err := tb2.Acquire(&ev, other, locktable.Request{Name: name, Rand: 1}, at, false)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			// Past the grace, before the slot's own deadline: still taken;
			// "held", never adopted, expires into its own lock-delay.
			ev.Reset()
			if next := tb2.Expire(&ev, t0+9*sec); next != t0+10*sec {
				t.Fatalf("next deadline %d; want the slot's end %d", next, t0+10*sec)
			}
			if len(ev.Releases) != 1 || ev.Releases[0].Fence != held.Fence || ev.Releases[0].Reason != locktable.ReasonExpired {
				t.Fatalf("releases at the grace's end %+v; want held's expiry", ev.Releases)
			}
			if out := try("slot", t0+9*sec); out != locktable.Busy {
				t.Fatalf("TRYLOCK slot 1 s before its delay ends: %v; want Busy", out)
			}
			if out := try("held", t0+9*sec); out != locktable.Busy {
				t.Fatalf("TRYLOCK held in its lock-delay: %v; want Busy", out)
			}
			if out := try("slot", t0+10*sec); out != locktable.Granted {
				t.Fatalf("TRYLOCK slot at its delay's end: %v; want Granted", out)
			}
			// The restart stored what it restored: the slot's record, the
			// orphan with its lock-delay.
			if err := s2nd.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			got, _ = loadDir(t, from)
			var shapes []string
			for _, r := range sortRecs(got) {
				shapes = append(shapes, fmt.Sprintf("%s delayed=%v deadline=+%ds delay=%ds", r.Name, r.Delayed, max(r.Deadline-t0, 0)/sec, r.LockDelay/sec))
			}
			// held expired at +9 s (the Expire call), so its delay ends at
			// +29 s; slot is the new hold, without TTL or delay.
			wantShapes := []string{"held delayed=true deadline=+29s delay=20s", "slot delayed=false deadline=+0s delay=0s"}
			if !slices.Equal(shapes, wantShapes) {
				t.Fatalf("stored after the restart: %q; want %q", shapes, wantShapes)
			}
		})
	}
}

func TestStore_ModeNoWritesOnlyAtClose(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, No)
	tb := mustAttach(t, s, t0)
	holdsOfEveryShape(t, tb, t0)
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync in mode no = %v, want nil", err)
	}
	if got, _ := loadDir(t, copyStoreFile(t, dir)); len(got) != 0 {
		t.Fatalf("mode no wrote %d holds before Close, want none", len(got))
	}
	if st := s.Stats(); st.Commits != 0 || st.Mode != No {
		t.Fatalf("Stats = %+v, want mode no and no commits", st)
	}
	want := tb.Snapshot()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got, _ := loadDir(t, dir)
	wantRecords(t, "after Close", got, want)
}

func TestStore_EverySecCommitsWithinASecond(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, EverySec)
	tb := mustAttach(t, s, t0)
	start := time.Now()
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync in mode everysec = %v, want nil at once", err)
	}
	holdsOfEveryShape(t, tb, t0)
	want := tb.Snapshot()
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().Commits == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no commit within 3 s in mode everysec")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("first everysec commit after %v, want about 1 s", d)
	}
	got, _ := loadDir(t, copyStoreFile(t, dir))
	wantRecords(t, "file after an everysec commit", got, want)
	if st := s.Stats(); st.Bytes == 0 || st.LastCommitUsec == 0 || st.Errors != 0 {
		t.Fatalf("Stats after a commit = %+v", st)
	}
}

func TestStore_FaultPointsBracketTheFsync(t *testing.T) {
	dir := t.TempDir()
	var points []string // appended by the commit loop, read after Sync
	s, err := Open(Options{Dir: dir, Mode: Always, OpenTimeout: time.Second, Fault: func(p string) error { points = append(points, p); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tb := mustAttach(t, s, t0)
	if err := s.Sync(); err != nil { // nothing to commit: no fault point
		t.Fatal(err)
	}
	if len(points) != 0 {
		t.Fatalf("an empty round reached %v", points)
	}
	grant(t, tb, tb.NewSession(1, nil), locktable.Request{Name: "x"}, t0)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"before-fsync", "after-fsync"}; !slices.Equal(points, want) {
		t.Fatalf("fault points = %v, want %v (the names RELOCK_FAILPOINT uses)", points, want)
	}
}

func TestOpen_LockedDataDirFailsAfterTimeout(t *testing.T) {
	dir := t.TempDir()
	first := mustOpen(t, dir, Always)
	start := time.Now()
	s, err := Open(Options{Dir: dir, Mode: Always, OpenTimeout: 150 * time.Millisecond})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("second Open on a locked data dir succeeded")
	}
	msg := err.Error()
	for _, want := range []string{filepath.Join(dir, "relock.db"), "locked by another process", "--data-dir"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if elapsed < 100*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("Open gave up after %v, want about the 150ms OpenTimeout", elapsed)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(Options{Dir: dir, Mode: Always, OpenTimeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the first store closed: %v", err)
	}
	again.Close()
}

// storeWithHolds returns a closed store's dir holding a few holds.
func storeWithHolds(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	sess := tb.NewSession(1, nil)
	for i := range 200 {
		grant(t, tb, sess, locktable.Request{Name: fmt.Sprintf("lock-%03d", i), TTL: 60 * sec}, t0)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// editBolt changes a closed store's file with bbolt directly.
func editBolt(t *testing.T, dir string, f func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "relock.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(f); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// editFile changes a closed store's file bytes.
func editFile(t *testing.T, dir string, f func(b []byte) []byte) {
	t.Helper()
	p := filepath.Join(dir, "relock.db")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOpen_CorruptFileIsAnErrorNeverAnEmptyState(t *testing.T) {
	const pageSize = 4096
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
	}{
		{"garbage file", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte { return bytes.Repeat([]byte("relock!"), len(b)/7) })
		}},
		{"both meta pages overwritten", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte {
				for i := 16; i < 2*pageSize; i++ {
					b[i] = 0xa5
				}
				return b
			})
		}},
		{"every data page overwritten", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte {
				for i := 2 * pageSize; i < len(b); i++ {
					b[i] = byte(i * 7)
				}
				return b
			})
		}},
		{"pages holding records overwritten", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte {
				n := 0
				for p := 2 * pageSize; p+pageSize <= len(b); p += pageSize {
					if bytes.Contains(b[p:p+pageSize], []byte("lock-1")) {
						copy(b[p:p+pageSize], bytes.Repeat([]byte{0xff, 0x00, 0x13}, pageSize/3))
						n++
					}
				}
				if n == 0 {
					t.Fatal("no page holds the records")
				}
				return b
			})
		}},
		{"truncated to half", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte { return b[:len(b)/2] })
		}},
		{"truncated to three pages", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte { return b[:3*pageSize] })
		}},
		{"truncated inside the meta pages", func(t *testing.T, dir string) {
			editFile(t, dir, func(b []byte) []byte { return b[:pageSize+100] })
		}},
		{"undecodable hold record", func(t *testing.T, dir string) {
			editBolt(t, dir, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketHolds).Put(fenceKey(1), []byte{recordVersion, flagBound, 0})
			})
		}},
		{"record stored under another fence", func(t *testing.T, dir string) {
			editBolt(t, dir, func(tx *bolt.Tx) error {
				r := locktable.HoldRecord{Name: "x", Size: 1, Key: locktable.Key{Fence: 7, Rand: 1}, Count: 1, Bound: true}
				return tx.Bucket(bucketHolds).Put(fenceKey(8), encodeRecord(nil, &r))
			})
		}},
		{"short fence high-water", func(t *testing.T, dir string) {
			editBolt(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFence, []byte{1, 2, 3}) })
		}},
		{"unknown format version", func(t *testing.T, dir string) {
			editBolt(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{formatVersion + 1}) })
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := storeWithHolds(t)
			tc.corrupt(t, dir)
			s, err := Open(Options{Dir: dir, Mode: Always, OpenTimeout: time.Second})
			if err != nil {
				t.Logf("Open: %v", err)
				wantCorruptError(t, err, dir)
				return
			}
			defer s.Close()
			tb := newTable()
			restored, _, err := s.RestoreInto(tb, t0, 30*time.Second)
			if err == nil {
				t.Fatalf("a corrupt file opened and restored %d holds without an error", restored)
			}
			t.Logf("RestoreInto: %v", err)
			wantCorruptError(t, err, dir)
		})
	}
}

func wantCorruptError(t *testing.T, err error, dir string) {
	t.Helper()
	if !strings.Contains(err.Error(), filepath.Join(dir, "relock.db")) {
		t.Errorf("error %q does not name the file", err)
	}
}

// TestStore_RestartKeepsModes: shared holds and a shared slot in
// lock-delay are stored (by the log, and by bbolt at Close) and restored
// shared; an upgrade is stored as its old fence gone and its new one
// held, exclusive; a downgrade as the same fence, shared.
func TestStore_RestartKeepsModes(t *testing.T) {
	for _, how := range []string{"clean close", "crash after sync"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Always)
			tb := mustAttach(t, s, t0)
			var ev locktable.Events
			s1, s2, s3 := tb.NewSession(1, nil), tb.NewSession(2, nil), tb.NewSession(3, nil)
			shared := func(name string) locktable.Request { return locktable.Request{Name: name, Shared: true, TTL: 60 * sec} }
			grant(t, tb, s1, shared("readers"), t0)
			grant(t, tb, s2, shared("readers"), t0)
			old := grant(t, tb, s1, shared("upgraded"), t0)
			up, out, err := tb.Upgrade(&ev, s1, "upgraded", old, 77, t0)
			if err != nil || out != locktable.Granted {
				t.Fatalf("Upgrade = %v, %v, %v; want granted", up, out, err)
			}
			down := grant(t, tb, s2, locktable.Request{Name: "downgraded", TTL: 60 * sec}, t0)
			if err := tb.Downgrade(&ev, "downgraded", down, t0); err != nil {
				t.Fatalf("Downgrade = %v", err)
			}
			grant(t, tb, s3, locktable.Request{Name: "slot", Shared: true, LockDelay: 10 * sec}, t0)
			tb.CloseSession(&ev, s3, t0)
			if err := s.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			want := tb.Snapshot()
			from := dir
			if how == "crash after sync" {
				from = copyStoreFile(t, dir)
			} else if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			got, _ := loadDir(t, from)
			wantRecords(t, "stored", got, want)
			var shapes []string
			for _, r := range sortRecs(got) {
				shapes = append(shapes, fmt.Sprintf("%s shared=%v delayed=%v", r.Name, r.Shared, r.Delayed))
				if r.Key.Fence == old.Fence {
					t.Fatalf("the upgraded hold's old fence %d is still stored: %+v", old.Fence, r)
				}
			}
			wantShapes := []string{
				"readers shared=true delayed=false", "readers shared=true delayed=false",
				"upgraded shared=false delayed=false", "downgraded shared=true delayed=false", "slot shared=true delayed=true",
			}
			if !slices.Equal(shapes, wantShapes) {
				t.Fatalf("stored: %q; want %q", shapes, wantShapes)
			}

			// After a restart, readers still share and exclude a writer.
			now := t0 + sec
			s2nd := mustOpen(t, from, Always)
			tb2 := newTable()
			if restored, dropped, err := s2nd.RestoreInto(tb2, now, 30*time.Second); err != nil || restored != 5 || dropped != 0 {
				t.Fatalf("RestoreInto = %d, %d, %v; want 5 restored", restored, dropped, err)
			}
			other := tb2.NewSession(9, nil)
			try := func(req locktable.Request) locktable.Outcome {
				t.Helper()
				ev.Reset()
				req.Rand = 1
				_, out, err := tb2.Acquire(&ev, other, req, now, false)
				if err != nil {
					t.Fatalf("Acquire(%+v) = %v", req, err)
				}
				return out
			}
			for _, tc := range []struct {
				req  locktable.Request
				want locktable.Outcome
			}{
				{locktable.Request{Name: "readers"}, locktable.Busy},
				{shared("readers"), locktable.Granted},
				{shared("upgraded"), locktable.Busy},
				{locktable.Request{Name: "downgraded"}, locktable.Busy},
				{shared("downgraded"), locktable.Granted},
				{locktable.Request{Name: "slot"}, locktable.Busy},
				{shared("slot"), locktable.Granted},
			} {
				if got := try(tc.req); got != tc.want {
					t.Fatalf("after the restart, Acquire(%s shared=%v) = %v; want %v", tc.req.Name, tc.req.Shared, got, tc.want)
				}
			}
			var left int64
			if left, err = tb2.Check(&ev, "upgraded", up, now); err != nil || left <= 0 {
				t.Fatalf("Check of the upgraded key after the restart = %d, %v", left, err)
			}
		})
	}
}
