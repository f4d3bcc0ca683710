package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/migrate"
	"go.etcd.io/bbolt"
)

// The Raft log and stable store.
//
// A node keeps its log in raft-wal (github.com/hashicorp/raft-wal), in
// DIR/wal: segment files appended with one fsync per append, where
// raft-boltdb (a copy-on-write B+tree) needs two; measured on one disk,
// appends of a lock command's size run 2.4–6× as fast with a third or less
// of the median latency (docs/raft.md). A directory that earlier versions wrote with
// raft-boltdb (DIR/raft.db) is migrated once, at start: its log and stable
// keys are copied into DIR/wal.tmp, which is then renamed to DIR/wal (the
// commit point), and raft.db is kept as raft.db.migrated.

// ErrStoreLocked: another process has the Raft directory open.
var ErrStoreLocked = errors.New("replica: the Raft directory is in use by another process")

const (
	walDir        = "wal"
	legacyBoltLog = "raft.db"
	lockFile      = "LOCK"
)

// Store is a node's Raft log and stable store (raft.LogStore and
// raft.StableStore both).
type Store struct {
	*wal.WAL
	unlock func()
}

// Close closes the log and releases the directory.
func (s *Store) Close() error {
	err := s.WAL.Close()
	s.unlock()
	return err
}

// openWAL opens raft-wal in dir, logging nothing (raft reports what
// matters).
func openWAL(dir string) (*wal.WAL, error) {
	return wal.Open(dir, wal.WithLogger(hclog.NewNullLogger()))
}

// OpenStore opens (or creates) the Raft log and stable store in dir,
// migrating raft-boltdb's raft.db of earlier versions first. It fails with
// ErrStoreLocked if another process has dir open, after waiting up to
// 2 s for it to let go.
func OpenStore(dir string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockDir(filepath.Join(dir, lockFile), 2*time.Second)
	if err != nil {
		return nil, err
	}
	if err := migrateBolt(dir, log); err != nil {
		unlock()
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, walDir), 0o700); err != nil {
		unlock()
		return nil, err
	}
	w, err := openWAL(filepath.Join(dir, walDir))
	if err != nil {
		unlock()
		return nil, fmt.Errorf("replica: raft log in %s: %w", dir, err)
	}
	return &Store{WAL: w, unlock: unlock}, nil
}

// migrateBolt copies a raft-boltdb store in dir to raft-wal, once.
func migrateBolt(dir string, log *slog.Logger) error {
	boltPath := filepath.Join(dir, legacyBoltLog)
	walPath := filepath.Join(dir, walDir)
	if _, err := os.Stat(boltPath); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if _, err := os.Stat(walPath); err == nil {
		// Migrated already; stopped before raft.db was renamed.
		return os.Rename(boltPath, boltPath+".migrated")
	}
	start := time.Now()
	tmp := walPath + ".tmp"
	if err := os.RemoveAll(tmp); err != nil { // an earlier attempt's
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	src, err := raftboltdb.New(raftboltdb.Options{Path: boltPath, BoltOptions: &bbolt.Options{Timeout: 2 * time.Second}})
	if err != nil {
		return fmt.Errorf("replica: migrating %s: %w", boltPath, err)
	}
	defer src.Close()
	dst, err := openWAL(tmp)
	if err != nil {
		return fmt.Errorf("replica: migrating %s: %w", boltPath, err)
	}
	first, _ := src.FirstIndex()
	last, _ := src.LastIndex()
	if last > 0 {
		if err := migrate.CopyLogs(context.Background(), dst, src, 1<<20, nil); err != nil {
			dst.Close()
			return fmt.Errorf("replica: migrating %s: %w", boltPath, err)
		}
	}
	if err := copyStable(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("replica: migrating %s: %w", boltPath, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("replica: migrating %s: %w", boltPath, err)
	}
	if err := os.Rename(tmp, walPath); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	log.Info("migrated the Raft log from raft-boltdb to raft-wal", "dir", dir,
		"first_index", first, "last_index", last, "took", time.Since(start), "kept", legacyBoltLog+".migrated")
	return os.Rename(boltPath, boltPath+".migrated")
}

// copyStable copies the keys hashicorp/raft keeps in its stable store
// (as migrate.CopyStable does, but a key a node never wrote is skipped).
func copyStable(dst raft.StableStore, src *raftboltdb.BoltStore) error {
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		v, err := src.GetUint64([]byte(k))
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := dst.SetUint64([]byte(k), v); err != nil {
			return err
		}
	}
	v, err := src.Get([]byte("LastVoteCand"))
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return dst.Set([]byte("LastVoteCand"), v)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
