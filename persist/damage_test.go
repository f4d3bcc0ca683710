package persist

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/locktable"
)

// damagedLog writes three rounds of one hold each into a store in a new
// directory, copies its files as a crash would leave them, changes the
// copy's log with damage, and opens the copy. It returns the store and
// the table the rounds were written from.
func damagedLog(t *testing.T, damage func(t *testing.T, b []byte) []byte) (*Store, *locktable.Table) {
	t.Helper()
	dir := t.TempDir()
	_, tb := walRounds(t, dir, 3)
	crashed := copyStoreFile(t, dir)
	p := filepath.Join(crashed, walName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, damage(t, b), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: crashed, Mode: No, OpenTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, tb
}

// recordAt is the offset of record i (from 0) of the log b.
func recordAt(b []byte, i int) int {
	off := 0
	for range i {
		off += walHeader + int(binary.LittleEndian.Uint32(b[off:]))
	}
	return off
}

// TestWAL_ZeroFilledTailIsATornTail: a crash that extends the log's size
// before the data of its last write reaches the disk leaves that record
// as zeros (the last write is one record, so zeros can only be that
// record). Restore cuts it off as the torn tail it is, keeping the earlier rounds (it used to
// refuse to start: an all-zero header read as an empty record followed
// by more data).
func TestWAL_ZeroFilledTailIsATornTail(t *testing.T) {
	s, tb := damagedLog(t, func(t *testing.T, b []byte) []byte {
		clear(b[recordAt(b, 2):]) // the third (last) record
		return b
	})
	got, _, err := s.Load()
	if err != nil {
		t.Fatalf("Load after a crash that left the last record as zeros: %v; want the first two rounds", err)
	}
	wantRecords(t, "after a zeroed last record", sortRecs(got), sortRecs(tb.Snapshot()[:2]))
}

// a damaged length field in a record before the end (here the
// first of three) makes the record look longer than the rest of the file:
// parseWAL took it for a torn tail, returned no error and truncated the
// log there, silently dropping every later, fsynced record. The README
// and wal.go promise "a bad record before the end is reported as
// corruption".
func TestWAL_BadLengthBeforeTheEndIsCorruptionNotATornTail(t *testing.T) {
	var size int
	s, _ := damagedLog(t, func(t *testing.T, b []byte) []byte {
		n := binary.LittleEndian.Uint32(b)
		binary.LittleEndian.PutUint32(b, n|1<<20) // one bit flipped, still under walMaxRecord
		size = len(b)
		return b
	})
	recs, _, err := s.Load()
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load = %d records, err %v (log was %d bytes); want a corruption error naming %s", len(recs), err, size, walName)
	}
}

// a relock.db cut to zero bytes (or zero-filled) holding 200
// holds. "A corrupt file is a startup error, never a silent empty state".
func TestStore_EmptiedDBIsAnErrorNeverAnEmptyState(t *testing.T) {
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

// a last log record whose checksum is right is whole, not torn;
// if it does not decode (here: a hold record version this relock does not
// know, as a newer relock would write), restore must refuse to start as
// the README promises ("A relock that finds a format or a record version
// it does not know refuses to start"). parseWAL treats it as a torn tail
// instead: it silently drops (and truncates away) that fsynced round.
func TestWAL_LastRecordWithGoodChecksumButUnknownVersionIsNotTorn(t *testing.T) {
	s, _ := damagedLog(t, func(t *testing.T, b []byte) []byte {
		off := recordAt(b, 2)
		payload := b[off+walHeader:]
		q := payload
		for range 2 { // fence high-water, change count
			_, n := binary.Uvarint(q)
			q = q[n:]
		}
		if q[0] != walPut {
			t.Fatalf("last change kind %d, want a put", q[0])
		}
		q = q[1:]
		_, n := binary.Uvarint(q)
		q = q[n:]
		if q[0] != recordVersion {
			t.Fatalf("record version byte %d", q[0])
		}
		q[0] = recordVersion + 1
		binary.LittleEndian.PutUint32(b[off+4:], crc32.Checksum(payload, castagnoli))
		return b
	})
	if recs, _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load = %d records, %v; want a corruption error for a whole record it cannot read", len(recs), err)
	}
}

// parseWAL applies a record's changes before it checks the
// checksum. A torn last record whose payload still decodes (here: the last
// byte of the lock name lost, read as zero) fails the checksum and is
// "cut off", yet its garbled change is already in what Load returns: a
// hold named "w\x00" that no client was ever granted (its round was never
// synced, let alone acknowledged).
func TestWAL_TornLastRecordIsNotApplied(t *testing.T) {
	s, tb := damagedLog(t, func(t *testing.T, b []byte) []byte {
		// The last record ends with its hold: name "w2", then owner length 0.
		if !bytes.HasSuffix(b, []byte("w2\x00")) {
			t.Fatalf("log does not end with the last hold's name: % x", b[len(b)-8:])
		}
		b[len(b)-2] = 0
		return b
	})
	got, _, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	wantRecords(t, "after a torn last record", sortRecs(got), sortRecs(tb.Snapshot()[:2]))
}
