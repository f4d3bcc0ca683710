package persist

import (
	"encoding/binary"
	"errors"

	"github.com/relock/relock/locktable"
)

// recordVersion is the first byte of every encoded hold record.
const recordVersion = 1

// Flags: a record is exactly one of detached, bound (maybe orphaned) or
// delayed (a slot in lock-delay), may have a lock-delay and may be shared.
// Records without a lock-delay and not shared are encoded as before
// lock-delay and shared holds existed, and those records still decode; a
// relock from before them refuses the new flags rather than misreading
// them.
const (
	flagDetached = 1 << iota
	flagBound
	// flagDelayed: HoldRecord.Delayed.
	flagDelayed
	// flagLockDelay: HoldRecord.LockDelay > 0, a varint after Granted.
	flagLockDelay
	// flagShared: HoldRecord.Shared, only with size 1.
	flagShared
)

var errCorruptRecord = errors.New("persist: corrupt hold record")

// encodeRecord appends r's binary form to b: version, flags, then varints
// (size, fence, the key's random part in 8 bytes, count, TTL, deadline,
// granted, the lock-delay if flagLockDelay) and length-prefixed strings
// (name, owner).
func encodeRecord(b []byte, r *locktable.HoldRecord) []byte {
	var flags byte
	if r.Detached {
		flags |= flagDetached
	}
	if r.Bound {
		flags |= flagBound
	}
	if r.Delayed {
		flags |= flagDelayed
	}
	if r.LockDelay != 0 {
		flags |= flagLockDelay
	}
	if r.Shared {
		flags |= flagShared
	}
	b = append(b, recordVersion, flags)
	b = binary.AppendUvarint(b, uint64(r.Size))
	b = binary.AppendUvarint(b, r.Key.Fence)
	b = binary.LittleEndian.AppendUint64(b, r.Key.Rand)
	b = binary.AppendUvarint(b, uint64(r.Count))
	b = binary.AppendVarint(b, r.TTL)
	b = binary.AppendVarint(b, r.Deadline)
	b = binary.AppendVarint(b, r.Granted)
	if r.LockDelay != 0 {
		b = binary.AppendVarint(b, r.LockDelay)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Name)))
	b = append(b, r.Name...)
	b = binary.AppendUvarint(b, uint64(len(r.Owner)))
	b = append(b, r.Owner...)
	return b
}

// decodeRecord parses what encodeRecord wrote. It never panics on bad
// input; anything malformed is errCorruptRecord.
func decodeRecord(b []byte) (locktable.HoldRecord, error) {
	var r locktable.HoldRecord
	if len(b) < 2 || b[0] != recordVersion {
		return r, errCorruptRecord
	}
	// A record is detached, bound (possibly orphaned) or a slot in
	// lock-delay, exactly one of them; other bits are not ours.
	flags := b[1]
	r.Shared = flags&flagShared != 0
	switch flags &^ (flagLockDelay | flagShared) {
	case flagDetached:
		r.Detached = true
	case flagBound:
		r.Bound = true
	case flagDelayed:
		r.Delayed = true
	default:
		return r, errCorruptRecord
	}
	b = b[2:]
	// Varints must be minimal (encodeRecord writes no other form): a
	// record has one encoding, so what decodes is what was written.
	uv := func() uint64 {
		if b == nil {
			return 0
		}
		v, n := binary.Uvarint(b)
		if n <= 0 || (n > 1 && b[n-1] == 0) {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	sv := func() int64 {
		if b == nil {
			return 0
		}
		v, n := binary.Varint(b)
		if n <= 0 || (n > 1 && b[n-1] == 0) {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	str := func() string {
		n := uv()
		if b == nil || n > uint64(len(b)) {
			b = nil
			return ""
		}
		s := string(b[:n])
		b = b[n:]
		return s
	}
	size := uv()
	r.Key.Fence = uv()
	if b == nil || len(b) < 8 {
		return r, errCorruptRecord
	}
	r.Key.Rand = binary.LittleEndian.Uint64(b)
	b = b[8:]
	count := uv()
	r.TTL = sv()
	r.Deadline = sv()
	r.Granted = sv()
	if flags&flagLockDelay != 0 {
		// Not 0 either: that is written without the flag.
		if r.LockDelay = sv(); r.LockDelay <= 0 || r.LockDelay > locktable.MaxLockDelay {
			return locktable.HoldRecord{}, errCorruptRecord
		}
	}
	r.Name = str()
	r.Owner = str()
	if b == nil || len(b) != 0 || size == 0 || size > 1<<32-1 || count == 0 || count > 1<<32-1 || (r.Shared && size != 1) {
		return locktable.HoldRecord{}, errCorruptRecord
	}
	r.Size, r.Count = uint32(size), uint32(count)
	return r, nil
}

// fenceKey is a hold's key in the holds bucket: its fence, big-endian, so
// that fences are unique keys and iterate in grant order.
func fenceKey(f uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), f)
}
