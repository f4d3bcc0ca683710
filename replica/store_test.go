package replica

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestStore_MigratesARaftBoltDBDirectory: a --raft-dir written by an
// earlier version (raft-boltdb's raft.db) opens with its log and stable
// keys in raft-wal; raft.db is kept aside as raft.db.migrated.
func TestStore_MigratesARaftBoltDBDirectory(t *testing.T) {
	dir := t.TempDir()
	old, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(5); i <= 300; i++ { // a compacted log starts after 1
		logs = append(logs, &raft.Log{Index: i, Term: 3, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d", i))})
	}
	if err := old.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	old.SetUint64([]byte("CurrentTerm"), 3)
	old.SetUint64([]byte("LastVoteTerm"), 3)
	old.Set([]byte("LastVoteCand"), []byte("n2"))
	old.Close()

	for round := 0; round < 2; round++ { // the second open finds it migrated
		s, err := OpenStore(dir, discard)
		if err != nil {
			t.Fatalf("open %d: %v", round, err)
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if first != 5 || last != 300 {
			t.Fatalf("open %d: log [%d, %d], want [5, 300]", round, first, last)
		}
		var l raft.Log
		if err := s.GetLog(123, &l); err != nil || string(l.Data) != "entry 123" || l.Term != 3 {
			t.Fatalf("open %d: entry 123 = %+v, %v", round, l, err)
		}
		term, _ := s.GetUint64([]byte("CurrentTerm"))
		cand, _ := s.Get([]byte("LastVoteCand"))
		if term != 3 || string(cand) != "n2" {
			t.Fatalf("open %d: stable store: term %d, vote %q", round, term, cand)
		}
		s.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("raft.db is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "raft.db.migrated")); err != nil {
		t.Errorf("raft.db.migrated: %v", err)
	}
}

// TestStore_InterruptedMigrationStartsOver: a wal.tmp left by a crash in
// the middle of a migration is discarded and the copy made again.
func TestStore_InterruptedMigrationStartsOver(t *testing.T) {
	dir := t.TempDir()
	old, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	old.StoreLog(&raft.Log{Index: 1, Term: 1, Data: []byte("x")})
	old.Close()
	if err := os.MkdirAll(filepath.Join(dir, "wal.tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "wal.tmp", "garbage"), []byte("half a copy"), 0o600)
	s, err := OpenStore(dir, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if last, _ := s.LastIndex(); last != 1 {
		t.Fatalf("last index %d after migration, want 1", last)
	}
}

// TestStore_OneProcessPerDirectory: a second open of a directory in use
// fails with ErrStoreLocked instead of waiting forever.
func TestStore_OneProcessPerDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(dir, discard); !errors.Is(err, ErrStoreLocked) {
		t.Fatalf("second open: %v, want ErrStoreLocked", err)
	}
	s.Close()
	s, err = OpenStore(dir, discard)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s.Close()
}
