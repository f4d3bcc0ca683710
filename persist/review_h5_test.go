package persist

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// review-h5: a crash that extends the log's size before the data of its
// last write reaches the disk leaves that record as zeros (the last write
// is one record, so zeros can only be that record). Restore should cut it
// off as the torn tail it is, keeping the earlier rounds; it refuses to
// start ("a bad record before the end") instead, since an all-zero header
// reads as an empty record followed by more data.
func TestReviewH5_WALZeroFilledTailIsATornTail(t *testing.T) {
	dir := t.TempDir()
	_, tb := walRounds(t, dir, 3)
	crashed := copyStoreFile(t, dir)
	p := filepath.Join(crashed, walName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// Find the third (last) record and zero it.
	off := 0
	for range 2 {
		off += walHeader + int(binary.LittleEndian.Uint32(b[off:]))
	}
	clear(b[off:])
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: crashed, Mode: No, OpenTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _, err := s.Load()
	if err != nil {
		t.Fatalf("Load after a crash that left the last record as zeros: %v; want the first two rounds", err)
	}
	wantRecords(t, "after a zeroed last record", sortRecs(got), sortRecs(tb.Snapshot()[:2]))
}

// review-h5: a damaged length field in a record before the end (here the
// first of three) makes the record look longer than the rest of the file:
// parseWAL takes it for a torn tail, returns no error and truncates the
// log there, silently dropping every later, fsynced record. The README
// and wal.go promise "a bad record before the end is reported as
// corruption".
func TestReviewH5_WALBadLengthBeforeTheEndIsCorruptionNotATornTail(t *testing.T) {
	dir := t.TempDir()
	walRounds(t, dir, 3)
	crashed := copyStoreFile(t, dir)
	p := filepath.Join(crashed, walName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint32(b)
	binary.LittleEndian.PutUint32(b, n|1<<20) // one bit flipped, still under walMaxRecord
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: crashed, Mode: No, OpenTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, _, err := s.Load()
	size := walSize(t, crashed)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load = %d records, err %v (log now %d bytes, was %d); want a corruption error naming %s", len(recs), err, size, len(b), walName)
	}
}

// review-h5: a relock.db cut to zero bytes (or zero-filled) holding 200
// holds. "A corrupt file is a startup error, never a silent empty state".
func TestReviewH5_EmptiedDBIsAnErrorNeverAnEmptyState(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func([]byte) []byte
	}{
		{"truncated to zero bytes", func(b []byte) []byte { return nil }},
		{"zero-filled", func(b []byte) []byte { return make([]byte, len(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := storeWithHolds(t)
			editFile(t, dir, tc.f)
			s, err := Open(Options{Dir: dir, Mode: Always, OpenTimeout: time.Second})
			if err != nil {
				t.Logf("Open: %v", err)
				return
			}
			defer s.Close()
			restored, _, err := s.RestoreInto(newTable(), t0, 30*time.Second)
			if err == nil {
				t.Fatalf("a relock.db %s opened and restored %d of 200 holds without an error", tc.name, restored)
			}
			t.Logf("RestoreInto: %v", err)
		})
	}
}
