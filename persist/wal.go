package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/relock/relock/locktable"
)

// The write-ahead log. Each commit round appends one record to relock.wal
// and makes it durable with a single fdatasync (bbolt's own commit needs
// two: data pages, then the meta page), so that `--fsync always` costs one
// sync per group commit. A checkpoint applies what the log holds to bbolt
// and empties the log; restore reads bbolt, then replays the log, and once
// the restored table is written to bbolt (Attach) empties it too. The log
// is emptied with an fsync, and creating it syncs the directory.
//
// Record: 4 bytes little-endian payload length, 4 bytes CRC-32C of the
// payload, payload. Payload: uvarint fence high-water, uvarint change
// count, then per change a kind byte (walPut, walDelete) followed by
// uvarint length + encodeRecord bytes (put) or uvarint fence (delete).
//
// A crash can leave only the last record torn (it is written by one
// write(2) and synced before the next): cut short, or zeros where the
// file's new size reached the disk before its data. A torn record's
// changes are never applied (the checksum is checked first). A bad record
// followed by a whole one is corruption and a startup error, whichever
// part is damaged: a length that runs past the end while whole records
// follow, a checksum that fails before the end, an empty record that is
// not zeros to the end, or a whole record that does not decode (a newer
// format) anywhere.

const (
	walName        = "relock.wal"
	walHeader      = 8
	walPut         = 1
	walDelete      = 2
	walMaxRecord   = 256 << 20
	checkpointSize = 4 << 20 // checkpoint once the log is this large
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// wal is the open log. Owned by the committer goroutine (and by Load and
// Attach before it starts).
type wal struct {
	f    *os.File
	path string
	size int64
	// pending is what the log holds that bbolt does not: fence → record,
	// nil for a delete. Applied to bbolt by a checkpoint.
	pending map[uint64]*locktable.HoldRecord
	fence   uint64 // largest high-water in the log
	buf     []byte // the record being written, reused
	enc     []byte // one hold record's encoding, reused
	// fsync makes a file's content and size durable (reset's truncation,
	// the directory entry): fsyncFile, or a test's observer.
	fsync func(*os.File) error
}

// fsyncFile is the fsync(2) of f: its data and its metadata (size).
func fsyncFile(f *os.File) error { return f.Sync() }

// syncDir makes the entries of dir (a file created in it) durable.
func syncDir(dir string, fsync func(*os.File) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = fsync(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// openWAL opens dir's log, creating it if needed. It reports whether it
// created the file: the caller syncs the directory before relying on it.
func openWAL(dir string, fsync func(*os.File) error) (w *wal, created bool, err error) {
	path := dir + string(os.PathSeparator) + walName
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if created = err == nil; errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0o600)
	}
	if err != nil {
		return nil, false, fmt.Errorf("open %s: %w", path, err)
	}
	return &wal{f: f, path: path, pending: map[uint64]*locktable.HoldRecord{}, fsync: fsync}, created, nil
}

// replay reads the log into w.pending (in order, later changes winning)
// and positions the file at the end of the last good record, cutting off a
// torn tail.
func (w *wal) replay() error {
	data, err := io.ReadAll(io.NewSectionReader(w.f, 0, 1<<62))
	if err != nil {
		return fmt.Errorf("read %s: %w", w.path, err)
	}
	pending, fence, good, err := parseWAL(data, w.path)
	if err != nil {
		return err
	}
	w.pending, w.fence = pending, max(w.fence, fence)
	if err := w.f.Truncate(int64(good)); err != nil {
		return fmt.Errorf("truncate %s: %w", w.path, err)
	}
	if _, err := w.f.Seek(int64(good), io.SeekStart); err != nil {
		return err
	}
	w.size = int64(good)
	return nil
}

// parseWAL reads a log's records: the changes they hold (fence → record,
// nil for a delete; later changes win), the largest fence high-water, and
// the length of the good prefix (a torn last record is not part of it). A
// bad record before the end is an error naming path.
func parseWAL(data []byte, path string) (map[uint64]*locktable.HoldRecord, uint64, int, error) {
	pending := map[uint64]*locktable.HoldRecord{}
	var fence uint64
	off := 0
	for off < len(data) {
		rest := data[off:]
		if len(rest) < walHeader {
			break // torn header at the tail
		}
		n := int(binary.LittleEndian.Uint32(rest))
		sum := binary.LittleEndian.Uint32(rest[4:])
		if n > walMaxRecord {
			return nil, 0, 0, fmt.Errorf("%s is corrupt at offset %d: record length %d", path, off, n)
		}
		if n == 0 {
			// No record is empty. Zeros to the end are a last write whose
			// data never reached the disk though the file's new size did:
			// a torn tail. Anything else is corruption.
			if allZero(rest) {
				break
			}
			return nil, 0, 0, fmt.Errorf("%s is corrupt at offset %d: an empty record", path, off)
		}
		if walHeader+n > len(rest) {
			// A torn record at the tail, unless its length is what is
			// damaged: then whole records follow it, which a torn tail
			// (the last write, one record) never has.
			if wholeRecordIn(rest[1:]) {
				return nil, 0, 0, fmt.Errorf("%s is corrupt at offset %d: record length %d runs past the end, and whole records follow", path, off, n)
			}
			break
		}
		payload := rest[walHeader : walHeader+n]
		// The checksum first: a torn record's changes must not be applied.
		if crc32.Checksum(payload, castagnoli) != sum {
			if off+walHeader+n < len(data) {
				return nil, 0, 0, fmt.Errorf("%s is corrupt at offset %d (a bad record before the end)", path, off)
			}
			break // the last record is torn
		}
		// A record with a good checksum is whole: one that does not
		// decode is corruption (or a newer format) wherever it is.
		f, err := applyWALRecord(pending, payload)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%s is corrupt at offset %d (a record it cannot read)", path, off)
		}
		fence = max(fence, f)
		off += walHeader + n
	}
	return pending, fence, off, nil
}

// allZero reports whether b is all zero bytes.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// wholeRecordIn reports whether a whole record (a non-empty payload that
// fits and matches its checksum) starts at any offset of b. It runs only
// on a log that looks torn: a torn tail is short, and in a damaged log
// the next record is found within one record's length.
func wholeRecordIn(b []byte) bool {
	for i := 0; i+walHeader < len(b); i++ {
		n := int(binary.LittleEndian.Uint32(b[i:]))
		if n == 0 || n > walMaxRecord || walHeader+n > len(b)-i {
			continue
		}
		if crc32.Checksum(b[i+walHeader:i+walHeader+n], castagnoli) == binary.LittleEndian.Uint32(b[i+4:]) {
			return true
		}
	}
	return false
}

// applyWALRecord merges one record's payload into pending and returns its
// fence high-water. A malformed payload changes nothing.
func applyWALRecord(pending map[uint64]*locktable.HoldRecord, p []byte) (uint64, error) {
	bad := errors.New("bad wal record")
	fence, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, bad
	}
	p = p[n:]
	count, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, bad
	}
	p = p[n:]
	type change struct {
		fence uint64
		rec   *locktable.HoldRecord
	}
	changes := make([]change, 0, min(count, 1<<16))
	for i := uint64(0); i < count; i++ {
		if len(p) == 0 {
			return 0, bad
		}
		kind := p[0]
		p = p[1:]
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, bad
		}
		p = p[n:]
		switch kind {
		case walPut:
			if v > uint64(len(p)) {
				return 0, bad
			}
			r, err := decodeRecord(p[:v])
			if err != nil {
				return 0, bad
			}
			p = p[v:]
			changes = append(changes, change{r.Key.Fence, &r})
		case walDelete:
			changes = append(changes, change{v, nil})
		default:
			return 0, bad
		}
	}
	if len(p) != 0 {
		return 0, bad
	}
	for _, c := range changes {
		pending[c.fence] = c.rec
	}
	return fence, nil
}

// append writes one round's changes as a record, without syncing.
func (w *wal) append(changes []locktable.Change, fence uint64) (int, error) {
	b := w.buf[:0]
	b = append(b, make([]byte, walHeader)...)
	b = binary.AppendUvarint(b, fence)
	b = binary.AppendUvarint(b, uint64(len(changes)))
	for i := range changes {
		ch := &changes[i]
		if ch.Delete {
			b = append(b, walDelete)
			b = binary.AppendUvarint(b, ch.Record.Key.Fence)
			continue
		}
		w.enc = encodeRecord(w.enc[:0], &ch.Record)
		b = append(b, walPut)
		b = binary.AppendUvarint(b, uint64(len(w.enc)))
		b = append(b, w.enc...)
	}
	payload := b[walHeader:]
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, castagnoli))
	w.buf = b
	if _, err := w.f.Write(b); err != nil {
		return 0, err
	}
	w.size += int64(len(b))
	for i := range changes {
		ch := &changes[i]
		if ch.Delete {
			w.pending[ch.Record.Key.Fence] = nil
		} else {
			r := ch.Record
			w.pending[r.Key.Fence] = &r
		}
	}
	w.fence = max(w.fence, fence)
	return len(b), nil
}

// reset empties the log once its content is in bbolt, durably: when it
// returns nil, a crash cannot bring the old records back to be replayed
// over a newer bbolt. On error the log may still hold them (the caller
// must not consider it empty).
func (w *wal) reset() error {
	if err := w.f.Truncate(0); err != nil {
		return fmt.Errorf("truncate %s: %w", w.path, err)
	}
	if err := w.fsync(w.f); err != nil {
		return fmt.Errorf("sync %s: %w", w.path, err)
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w.size = 0
	clear(w.pending)
	return nil
}

func (w *wal) close() error { return w.f.Close() }
