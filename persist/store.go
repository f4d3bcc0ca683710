package persist

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relock/relock/locktable"
	bolt "go.etcd.io/bbolt"
)

// Mode is the commit policy.
type Mode string

const (
	// Always commits (fsync) every change before its reply, grouping the
	// changes of concurrent clients into one commit.
	Always Mode = "always"
	// EverySec replies first and commits at most a second later.
	EverySec Mode = "everysec"
	// No writes a snapshot on clean shutdown only.
	No Mode = "no"
)

// ParseMode validates a --fsync value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Always, EverySec, No:
		return m, nil
	}
	return "", fmt.Errorf("fsync must be always, everysec or no, not %q", s)
}

var (
	bucketHolds = []byte("holds")
	bucketMeta  = []byte("meta")
	keyFence    = []byte("fence")
	keyFormat   = []byte("format")
)

const formatVersion = 1

// ErrClosed is returned by Sync once Close has begun, in every mode. The
// change it was called for is not acknowledged, yet it may be in the final
// state (it was journaled before the final round): a caller that must not
// leave such changes behind stops making changes before it calls Close.
var ErrClosed = errors.New("persist: store is closed")

// Options configure a Store.
type Options struct {
	Dir  string
	Mode Mode
	// OpenTimeout bounds the wait for the file lock another process holds.
	OpenTimeout time.Duration
	// Fault, if set, is called at named points of a commit ("before-fsync":
	// the changes are written to the log, not yet synced; "after-fsync":
	// committed and synced) so that tests can crash the process there, or
	// fail the commit: an error at before-fsync fails it as a failed
	// fdatasync would.
	Fault func(point string) error

	// fsync replaces fsyncFile for the log's truncations and the data
	// dir's entries (tests observe them).
	fsync func(*os.File) error
}

// Store is the bbolt store of one lock table.
type Store struct {
	db    *bolt.DB
	mode  Mode
	table *locktable.Table
	fault func(string) error
	path  string

	c   committer
	wal *wal // the write-ahead log (wal.go); owned by the committer once started

	closeMu    sync.Mutex // serialises Close
	sizeAtOpen int64      // the file's size before bbolt opened it
	// closing is set when Close begins: from then on Sync refuses to
	// acknowledge changes in every mode, since the final state may miss
	// them (mode Always: see committer.stopped).
	closing atomic.Bool
	// durable is the table's JournalSeq up to which every change is
	// committed (see Pending).
	durable atomic.Uint64

	// Figures for INFO.
	commits    atomic.Int64
	commitNs   atomic.Int64 // total time in commits
	bytes      atomic.Int64
	errs       atomic.Int64
	lastCommit atomic.Int64 // unix µs
	lastErr    atomic.Value // string
}

// Open opens (creating if needed) the store in dir. A second process on
// the same dir fails after OpenTimeout with a clear error; an unreadable or
// corrupt file is an error, never an empty state.
func Open(o Options) (*Store, error) {
	if o.OpenTimeout == 0 {
		o.OpenTimeout = 2 * time.Second
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if o.fsync == nil {
		o.fsync = fsyncFile
	}
	path := filepath.Join(o.Dir, "relock.db")
	var sizeAtOpen int64
	fi, err := os.Stat(path)
	if err == nil {
		sizeAtOpen = fi.Size()
	}
	createdDB := errors.Is(err, os.ErrNotExist)
	// bbolt fills a new file (and syncs it) before the log is created: an
	// empty relock.db beside a log was emptied, not just created. bbolt
	// would take it for a new database, and everything it held be lost.
	if err == nil && sizeAtOpen == 0 {
		if _, werr := os.Stat(filepath.Join(o.Dir, walName)); werr == nil {
			return nil, fmt.Errorf("%s is corrupt: empty (its write-ahead log %s exists)", path, walName)
		}
	}
	db, err := openBolt(path, o.OpenTimeout)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, mode: o.Mode, fault: o.Fault, path: path, sizeAtOpen: sizeAtOpen}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	// The log is opened after bbolt, whose file lock keeps a second
	// server away from both.
	var createdWAL bool
	if s.wal, createdWAL, err = openWAL(o.Dir, o.fsync); err != nil {
		db.Close()
		return nil, err
	}
	// A new file's entry in the directory is not durable until the
	// directory is synced: without it a crash could lose the whole log
	// (or bbolt's file) after its records were acknowledged.
	if createdDB || createdWAL {
		if err := syncDir(o.Dir, o.fsync); err != nil {
			s.wal.close()
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	// A file cut short makes bbolt read its mmap past the end (SIGBUS):
	// turn that into a panic, recovered below, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		// bbolt panics on some kinds of corruption; that is a startup
		// error, not a crash.
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%s is corrupt: %v", path, r)
		}
	}()
	// NoFreelistSync: the freelist is rebuilt at open instead of written
	// with every commit, which halves what a small commit writes.
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is locked by another process (is another relock using this --data-dir?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

func (s *Store) init() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s is corrupt: %v", s.path, r)
		}
	}()
	return s.db.Update(func(tx *bolt.Tx) error {
		// A file shorter than the pages its meta page counts was cut
		// short (bbolt itself does not check, and grows it back with
		// zeros): refuse it. sizeAtOpen is the size before bbolt opened it.
		if s.sizeAtOpen > 0 && s.sizeAtOpen < tx.Size() {
			return fmt.Errorf("%s is corrupt: truncated to %d bytes, its pages need %d", s.path, s.sizeAtOpen, tx.Size())
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketHolds); err != nil {
			return err
		}
		switch v := meta.Get(keyFormat); {
		case v == nil:
			return meta.Put(keyFormat, []byte{formatVersion})
		case len(v) != 1 || v[0] != formatVersion:
			return fmt.Errorf("%s has an unknown format %v", s.path, v)
		}
		return nil
	})
}

// Load reads every stored hold and the fence high-water mark: bbolt's,
// then the write-ahead log's changes on top (a torn last record, as a
// crash leaves it, is cut off). A record that does not decode, or a bad
// log record before the end, is an error naming the file. Records come
// back in fence order.
func (s *Store) Load() (recs []locktable.HoldRecord, highWater uint64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s is corrupt: %v", s.path, r)
		}
	}()
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyFence); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%s is corrupt: fence high-water has %d bytes", s.path, len(v))
			}
			highWater = binary.BigEndian.Uint64(v)
		}
		return tx.Bucket(bucketHolds).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil || len(k) != 8 || binary.BigEndian.Uint64(k) != r.Key.Fence {
				return fmt.Errorf("%s is corrupt: bad hold record %x", s.path, k)
			}
			recs = append(recs, r)
			highWater = max(highWater, r.Key.Fence)
			return nil
		})
	})
	if err != nil {
		return nil, 0, err
	}
	if err := s.wal.replay(); err != nil {
		return nil, 0, err
	}
	if len(s.wal.pending) > 0 {
		byFence := make(map[uint64]locktable.HoldRecord, len(recs))
		for _, r := range recs {
			byFence[r.Key.Fence] = r
		}
		for f, r := range s.wal.pending {
			if r == nil {
				delete(byFence, f)
			} else {
				byFence[f] = *r
			}
			highWater = max(highWater, f)
		}
		recs = recs[:0]
		for _, r := range byFence {
			recs = append(recs, r)
		}
		slices.SortFunc(recs, func(a, b locktable.HoldRecord) int { return cmp.Compare(a.Key.Fence, b.Key.Fence) })
	}
	return recs, max(highWater, s.wal.fence), nil
}

// Attach binds the store to the table it persists: it rewrites the stored
// holds with the table's snapshot (after Restore, that drops what expired
// while the server was down and gives orphans their deadlines), empties
// the write-ahead log, whose records that snapshot supersedes, and starts
// journaling unless the mode is No. Call it before serving clients.
//
// The log is emptied only after bbolt holds the snapshot, and durably. A
// crash between the two leaves the old log over the new snapshot: the next
// start restores what this one did, and no client was served in between.
func (s *Store) Attach(t *locktable.Table) error {
	s.table = t
	fence := t.LastFence()
	if err := s.rewrite(t.Snapshot(), fence); err != nil {
		return err
	}
	// Replayed over the snapshot at the next start, the old records
	// would revive what restore dropped, or what ends before that start,
	// with a fresh grace.
	if err := s.wal.reset(); err != nil {
		return fmt.Errorf("empty the log after restore: %w", err)
	}
	s.c.lastFence = fence // stored: a round with no change writes nothing
	if s.mode != No {
		t.SetJournaling(true)
	}
	if s.mode != No {
		s.c.start(s)
	}
	return nil
}

// rewrite replaces the stored holds with recs in one transaction.
func (s *Store) rewrite(recs []locktable.HoldRecord, fence uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketHolds); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketHolds)
		if err != nil {
			return err
		}
		// bbolt keeps the value slices until the commit: one buffer,
		// each record its own part of it.
		var buf []byte
		for i := range recs {
			start := len(buf)
			buf = encodeRecord(buf, &recs[i])
			if err := b.Put(fenceKey(recs[i].Key.Fence), buf[start:len(buf):len(buf)]); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyFence, fenceKey(fence))
	})
}

// checkpoint applies what the log holds to bbolt (one transaction) and
// empties the log. Called by the committer goroutine, or by Close after it
// stopped.
func (s *Store) checkpoint() error {
	w := s.wal
	if len(w.pending) == 0 && w.size == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHolds)
		for f, r := range w.pending {
			if r == nil {
				if err := b.Delete(fenceKey(f)); err != nil {
					return err
				}
				continue
			}
			if err := b.Put(fenceKey(f), encodeRecord(nil, r)); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		hw := w.fence
		if v := meta.Get(keyFence); len(v) == 8 {
			hw = max(hw, binary.BigEndian.Uint64(v))
		}
		return meta.Put(keyFence, fenceKey(hw))
	})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return w.reset()
}

// Mode returns the commit policy.
func (s *Store) Mode() Mode { return s.mode }

// Stats are the store's figures for INFO.
type Stats struct {
	Mode           Mode
	Commits        int64
	Bytes          int64
	Errors         int64
	LastCommitUsec int64
	LastError      string
	CommitTime     time.Duration // total time spent committing
}

// Stats returns the store's figures.
func (s *Store) Stats() Stats {
	st := Stats{Mode: s.mode, Commits: s.commits.Load(), Bytes: s.bytes.Load(), Errors: s.errs.Load(),
		LastCommitUsec: s.lastCommit.Load(), CommitTime: time.Duration(s.commitNs.Load())}
	if v, ok := s.lastErr.Load().(string); ok {
		st.LastError = v
	}
	return st
}

// Close takes the final state and closes the file: in modes Always and
// EverySec it commits what the journal holds; in mode No it writes a full
// snapshot. Journaling stops first, so releases that happen afterwards
// (connections closing at shutdown) are not recorded: bound holds come back
// as orphans at the next start. Sync returns ErrClosed from then on.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.db == nil {
		return nil
	}
	// Before the final state is taken: a change whose Sync saw closing
	// false happened before this store, hence before the snapshot or the
	// final drain below, and is in the final state.
	s.closing.Store(true)
	var err error
	if s.table != nil {
		if s.mode == No {
			err = s.rewrite(s.table.Snapshot(), s.table.LastFence())
		} else {
			err = s.c.stop() // final round, then journaling off
			if err == nil {
				err = s.checkpoint() // a clean stop leaves an empty log
			}
		}
		s.table.SetJournaling(false)
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	if cerr := s.wal.close(); err == nil {
		err = cerr
	}
	s.db = nil
	return err
}
