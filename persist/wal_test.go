package persist

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	dir := t.TempDir()
	walRounds(t, dir, 3)
	crashed := copyStoreFile(t, dir)
	p := filepath.Join(crashed, walName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[walHeader+2] ^= 0xff // inside the first record's payload
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: crashed, Mode: No, OpenTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
