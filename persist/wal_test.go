package persist

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relock/relock/locktable"
)

// walRounds commits n rounds of one grant each and returns the table.
func walRounds(t *testing.T, dir string, n int) (*Store, *locktable.Table) {
	t.Helper()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	sess := tb.NewSession(1, nil)
	for i := range n {
		grant(t, tb, sess, locktable.Request{Name: "w" + strconv.Itoa(i)}, t0)
		if err := s.Sync(); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	return s, tb
}

func walSize(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, walName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestWAL_TornTailIsCutOffAndEarlierRoundsKept(t *testing.T) {
	dir := t.TempDir()
	_, tb := walRounds(t, dir, 3)
	crashed := copyStoreFile(t, dir)
	// A crash in the middle of the last write: lose its last 5 bytes.
	p := filepath.Join(crashed, walName)
	if err := os.Truncate(p, walSize(t, crashed)-5); err != nil {
		t.Fatal(err)
	}
	got, _ := loadDir(t, crashed)
	want := tb.Snapshot()[:2] // w0, w1: the third round is torn
	wantRecords(t, "after a torn last record", sortRecs(got), sortRecs(want))
}

func TestWAL_BadRecordBeforeTheEndIsCorruption(t *testing.T) {
	s, _ := damagedLog(t, func(t *testing.T, b []byte) []byte {
		b[walHeader+2] ^= 0xff // inside the first record's payload
		return b
	})
	if _, _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), walName) {
		t.Fatalf("Load = %v; want a corruption error naming %s", err, walName)
	}
}

func TestWAL_CheckpointMovesTheLogIntoBbolt(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	sess := tb.NewSession(1, nil)
	// Long owners make rounds big, so that the log passes checkpointSize
	// in a bounded number of rounds.
	owner := strings.Repeat("o", 60_000)
	var ev locktable.Events
	checkpointed := false
	for i := 0; i < 200 && !checkpointed; i++ {
		k := grant(t, tb, sess, locktable.Request{Name: "c" + strconv.Itoa(i), Owner: owner}, t0)
		if i%2 == 0 {
			if err := tb.Unlock(&ev, "c"+strconv.Itoa(i), k, t0); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		checkpointed = i > 0 && walSize(t, dir) < int64(60_000)
	}
	if !checkpointed {
		t.Fatalf("the log never checkpointed (size %d)", walSize(t, dir))
	}
	got, _ := loadDir(t, copyStoreFile(t, dir))
	wantRecords(t, "after a checkpoint", sortRecs(got), sortRecs(tb.Snapshot()))
}

func TestWAL_CleanCloseLeavesAnEmptyLog(t *testing.T) {
	dir := t.TempDir()
	s, tb := walRounds(t, dir, 3)
	want := tb.Snapshot()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := walSize(t, dir); n != 0 {
		t.Fatalf("log after a clean close: %d bytes, want 0", n)
	}
	got, _ := loadDir(t, dir)
	wantRecords(t, "after a clean close", sortRecs(got), sortRecs(want))
}

// crashWithBoundHold leaves in a new dir what a crash leaves after one
// committed round: a bound hold without TTL, in the log only (bbolt has
// never seen it).
func crashWithBoundHold(t *testing.T) (dir string, k locktable.Key) {
	t.Helper()
	live := t.TempDir()
	s := mustOpen(t, live, Always)
	tb := mustAttach(t, s, t0)
	k = grant(t, tb, tb.NewSession(1, nil), locktable.Request{Name: "orphan"}, t0)
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if walSize(t, live) == 0 {
		t.Fatal("the committed grant is not in the log")
	}
	return copyStoreFile(t, live), k
}

// restart opens dir in mode and restores it at now with grace, failing the
// test on error.
func restart(t *testing.T, dir string, mode Mode, now int64, grace time.Duration) (*Store, *locktable.Table, int) {
	t.Helper()
	s := mustOpen(t, dir, mode)
	tb := newTable()
	restored, _, err := s.RestoreInto(tb, now, grace)
	if err != nil {
		t.Fatalf("RestoreInto: %v", err)
	}
	return s, tb, restored
}

// A restore rewrites bbolt with the restored table; the log's records are
// older than that and must not be replayed over it at the next start, or
// an orphan that expired or was released comes back with a fresh grace.
func TestWAL_RestoreEmptiesTheLogSoEndedOrphansStayGone(t *testing.T) {
	const grace = 2 * time.Second
	tests := []struct {
		name string
		// run is the first restart, at t0+1s (the orphan's grace ends at
		// t0+3s); it returns the dir the second restart opens.
		run func(t *testing.T, dir string, k locktable.Key) string
	}{
		{"orphan expires while down", func(t *testing.T, dir string, k locktable.Key) string {
			_, _, n := restart(t, dir, Always, t0+sec, grace)
			if n != 1 {
				t.Fatalf("first restart restored %d holds, want the orphan", n)
			}
			return copyStoreFile(t, dir) // crash before the grace ends
		}},
		{"orphan expires in a run with --fsync no", func(t *testing.T, dir string, k locktable.Key) string {
			s, tb, n := restart(t, dir, No, t0+sec, grace)
			if n != 1 {
				t.Fatalf("first restart restored %d holds, want the orphan", n)
			}
			if tb.Expire(&locktable.Events{}, t0+4*sec); len(tb.Snapshot()) != 0 {
				t.Fatalf("orphan did not expire: %+v", tb.Snapshot())
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"orphan unlocked, then two crashes", func(t *testing.T, dir string, k locktable.Key) string {
			s, tb, _ := restart(t, dir, Always, t0+sec, grace)
			if err := tb.Unlock(&locktable.Events{}, "orphan", k, t0+sec); err != nil {
				t.Fatalf("UNLOCK orphan: %v", err)
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			crashed := copyStoreFile(t, dir)
			restart(t, crashed, Always, t0+2*sec, grace)
			return copyStoreFile(t, crashed)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, k := crashWithBoundHold(t)
			next := tc.run(t, dir, k)
			// Long after the grace: nothing may come back.
			_, tb, n := restart(t, next, Always, t0+10*sec, grace)
			if n != 0 {
				t.Fatalf("restart after the orphan ended restored %d holds, want none: %+v", n, tb.Snapshot())
			}
			if _, err := tb.Check(&locktable.Events{}, "orphan", k, t0+10*sec); err == nil {
				t.Fatal("CHECK of the ended orphan succeeds after a restart")
			}
		})
	}
}

func TestWAL_RestoreLeavesAnEmptyLog(t *testing.T) {
	dir, _ := crashWithBoundHold(t)
	restart(t, dir, Always, t0+sec, 30*time.Second)
	if n := walSize(t, dir); n != 0 {
		t.Fatalf("log after restore: %d bytes, want 0 (its records are in bbolt)", n)
	}
}

// fsyncRecorder observes the store's fsyncs of whole files: which file,
// and its size when synced.
type fsyncRecorder struct {
	mu    sync.Mutex
	syncs []string // "relock.wal:0", "dir"
	fail  string   // fail the fsync of this file name
}

func (r *fsyncRecorder) fsync(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	what := filepath.Base(f.Name()) + ":" + strconv.FormatInt(fi.Size(), 10)
	if fi.IsDir() {
		what = "dir"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs = append(r.syncs, what)
	if r.fail != "" && filepath.Base(f.Name()) == r.fail {
		return errors.New("injected fsync failure")
	}
	return f.Sync()
}

func (r *fsyncRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.syncs
	r.syncs = nil
	return out
}

func openRecorded(t *testing.T, dir string, r *fsyncRecorder) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Mode: Always, OpenTimeout: time.Second, fsync: r.fsync})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Emptying the log (after a restore, at a checkpoint, at a clean close)
// must reach the disk before anything relies on it: otherwise a crash
// brings back records that bbolt already supersedes. Creating the log
// must make its directory entry durable.
func TestWAL_ResetAndCreationAreSynced(t *testing.T) {
	var r fsyncRecorder
	dir := t.TempDir()
	s := openRecorded(t, dir, &r)
	if got := r.take(); !slices.Contains(got, "dir") {
		t.Fatalf("creating the store synced %v, want the directory", got)
	}
	tb := newTable()
	if _, _, err := s.RestoreInto(tb, t0, time.Second); err != nil {
		t.Fatal(err)
	}
	r.take()
	grant(t, tb, tb.NewSession(1, nil), locktable.Request{Name: "x"}, t0)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	crashed := copyStoreFile(t, dir)
	if err := s.Close(); err != nil { // checkpoint: the log is emptied
		t.Fatal(err)
	}
	if got, want := r.take(), []string{walName + ":0"}; !slices.Equal(got, want) {
		t.Fatalf("a clean close synced %v, want %v (the emptied log)", got, want)
	}

	// A restart over a log with records: restore empties it durably.
	s2 := openRecorded(t, crashed, &r)
	if got := r.take(); slices.Contains(got, "dir") {
		t.Fatalf("opening an existing store synced %v, want no directory sync", got)
	}
	if _, _, err := s2.RestoreInto(newTable(), t0+sec, time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := r.take(), []string{walName + ":0"}; !slices.Equal(got, want) {
		t.Fatalf("a restore synced %v, want %v (the emptied log)", got, want)
	}
}

func TestWAL_FailedSyncOfTheEmptiedLogFailsTheRestore(t *testing.T) {
	dir, _ := crashWithBoundHold(t)
	r := fsyncRecorder{fail: walName}
	s := openRecorded(t, dir, &r)
	_, _, err := s.RestoreInto(newTable(), t0+sec, time.Second)
	if err == nil || !strings.Contains(err.Error(), "injected fsync failure") {
		t.Fatalf("RestoreInto = %v, want the fsync failure", err)
	}
}

// walRecord frames payload as the log does.
func walRecord(payload []byte) []byte {
	b := make([]byte, walHeader, walHeader+len(payload))
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

// FuzzParseWAL: whatever the log's bytes, parsing never panics, and a
// log it accepts has a good prefix that parses whole to the same state
// (what restore truncates the file to must read back the same).
func FuzzParseWAL(f *testing.F) {
	one := walRecord([]byte{7, 0})               // fence 7, no change
	del := walRecord([]byte{9, 1, walDelete, 3}) // fence 9, delete fence 3
	f.Add([]byte{})
	f.Add(one)
	f.Add(append(append([]byte{}, one...), del...))
	f.Add(append(append([]byte{}, one...), make([]byte, 12)...)) // a zeroed tail
	f.Add(append(append([]byte{}, one...), del[:5]...))          // a torn tail
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, fence, good, err := parseWAL(data, "f")
		if err != nil {
			return
		}
		if good < 0 || good > len(data) {
			t.Fatalf("good prefix %d of %d bytes", good, len(data))
		}
		recs2, fence2, good2, err := parseWAL(data[:good], "f")
		if err != nil || good2 != good || fence2 != fence || len(recs2) != len(recs) {
			t.Fatalf("the good prefix reads back as %d records, fence %d, %d bytes, %v; want %d, %d, %d",
				len(recs2), fence2, good2, err, len(recs), fence, good)
		}
	})
}
