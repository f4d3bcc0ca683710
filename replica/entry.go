package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/relock/relock/locktable"
)

// Log entries.
//
// A leader batches the ops its connections propose meanwhile into one
// entry (see batch.go), in a binary encoding:
//
//	magic "\x00RLOPS" | version byte (1) | u #ops | each op
//
// an op, in uvarints (u), zig-zag varints (v), length-prefixed strings (s)
// and fixed 8-byte little-endian words (w):
//
//	byte kind | v now | u session | byte flags (1 wait) | s name
//	| u key fence | w key rand | v ttl | v grace | u max | u reason | w rand
//	| s leader | s leader addr | request | u #requests, each: request
//	| u max waiters | u max holds
//
// Version 1 is version 2 without the last two fields (no limits in
// takeover entries); decodeEntry reads both.
//
// a request: s name | v ttl | u size | s owner | byte flags (1 detach,
// 2 shared) | w rand | v lock-delay.
//
// Entries written before batching are one op's JSON (they start with
// '{', never with the magic's NUL byte); decodeEntry reads both.

const entryMagic = "\x00RLOPS"

// entryVersion is the encoding encodeEntry writes.
const entryVersion byte = 2

// errBadEntry wraps every decoding failure.
var errBadEntry = errors.New("replica: bad log entry")

// kindCodes numbers the kinds in the binary encoding: append only.
var kindCodes = []Kind{OpOpen, OpClose, OpAcquire, OpUnlock, OpRenew, OpCheck, OpForce, OpCancel,
	OpExpire, OpFailover, OpUpgrade, OpDowngrade, OpAcquireMulti}

func kindCode(k Kind) (byte, bool) {
	for i, c := range kindCodes {
		if c == k {
			return byte(i + 1), true
		}
	}
	return 0, false
}

// encodable reports why o cannot go into an entry (nil: it can): an
// unknown kind, or a number out of the encoding's range, which every
// replica would refuse to decode.
func (o *Op) encodable() error {
	if _, ok := kindCode(o.Kind); !ok {
		return fmt.Errorf("replica: unknown op %q", o.Kind)
	}
	for _, n := range []int{o.Max, o.MaxWaiters, o.MaxHolds} {
		if n < 0 || n > math.MaxInt32 {
			return fmt.Errorf("replica: op %q: bound %d out of range", o.Kind, n)
		}
	}
	return nil
}

// minOpBytes and minRequestBytes are the fewest bytes an op and a request
// take in an entry (every varint one byte, every string empty): a count
// is never more than what is left divided by them.
const (
	minRequestBytes = 14
	minOpBytes      = 31 + minRequestBytes // in version 1, 2 fewer (no limits)
)

// encodeEntry returns the entry of ops, in order.
func encodeEntry(ops []*Op) ([]byte, error) {
	b := make([]byte, 0, 16+64*len(ops))
	b = append(b, entryMagic...)
	b = append(b, entryVersion)
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, o := range ops {
		code, ok := kindCode(o.Kind)
		if !ok {
			return nil, fmt.Errorf("replica: unknown op %q", o.Kind)
		}
		b = append(b, code)
		b = binary.AppendVarint(b, o.Now)
		b = binary.AppendUvarint(b, o.Session)
		b = append(b, flag(o.Wait, 1))
		b = appendString(b, o.Name)
		b = binary.AppendUvarint(b, o.Key.Fence)
		b = binary.LittleEndian.AppendUint64(b, o.Key.Rand)
		b = binary.AppendVarint(b, o.TTL)
		b = binary.AppendVarint(b, o.Grace)
		b = binary.AppendUvarint(b, uint64(o.Max))
		b = binary.AppendUvarint(b, uint64(o.Reason))
		b = binary.LittleEndian.AppendUint64(b, o.Rand)
		b = appendString(b, o.Leader)
		b = appendString(b, o.LeaderAddr)
		b = appendRequest(b, &o.Request)
		b = binary.AppendUvarint(b, uint64(len(o.Requests)))
		for i := range o.Requests {
			b = appendRequest(b, &o.Requests[i])
		}
		b = binary.AppendUvarint(b, uint64(o.MaxWaiters))
		b = binary.AppendUvarint(b, uint64(o.MaxHolds))
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendRequest(b []byte, r *locktable.Request) []byte {
	b = appendString(b, r.Name)
	b = binary.AppendVarint(b, r.TTL)
	b = binary.AppendUvarint(b, uint64(r.Size))
	b = appendString(b, r.Owner)
	b = append(b, flag(r.Detach, 1)|flag(r.Shared, 2))
	b = binary.LittleEndian.AppendUint64(b, r.Rand)
	return binary.AppendVarint(b, r.LockDelay)
}

// decodeEntry returns the ops of an entry in either encoding; batch
// reports whether it was a binary (batch) entry, whose result is a
// []*Result, rather than one op's JSON, whose result is a *Result.
func decodeEntry(b []byte) (ops []Op, batch bool, err error) {
	if !bytes.HasPrefix(b, []byte(entryMagic)) {
		op, err := DecodeOp(b)
		if err != nil {
			return nil, false, err
		}
		return []Op{op}, false, nil
	}
	b = b[len(entryMagic):]
	if len(b) == 0 {
		return nil, true, fmt.Errorf("%w: truncated", errBadEntry)
	}
	version := b[0]
	if version < 1 || version > entryVersion {
		return nil, true, fmt.Errorf("%w: encoding version %d; this relock reads up to %d", errBadEntry, version, entryVersion)
	}
	d := entryDecoder{b: b[1:]}
	minOp := minOpBytes
	if version < 2 {
		minOp -= 2
	}
	n := d.count(minOp)
	ops = make([]Op, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		var o Op
		code := d.byte()
		if code == 0 || int(code) > len(kindCodes) {
			d.fail(fmt.Errorf("unknown op code %d", code))
			break
		}
		o.Kind = kindCodes[code-1]
		o.Now = d.v()
		o.Session = d.u()
		o.Wait = d.byte()&1 != 0
		o.Name = d.s()
		o.Key.Fence = d.u()
		o.Key.Rand = d.w()
		o.TTL = d.v()
		o.Grace = d.v()
		o.Max = int(d.bounded(math.MaxInt32))
		o.Reason = locktable.Reason(d.bounded(math.MaxUint8))
		o.Rand = d.w()
		o.Leader = d.s()
		o.LeaderAddr = d.s()
		o.Request = d.request()
		if m := d.count(minRequestBytes); m > 0 {
			o.Requests = make([]locktable.Request, 0, m)
			for j := 0; j < m && d.err == nil; j++ {
				o.Requests = append(o.Requests, d.request())
			}
		}
		if version >= 2 {
			o.MaxWaiters = int(d.bounded(math.MaxInt32))
			o.MaxHolds = int(d.bounded(math.MaxInt32))
		}
		ops = append(ops, o)
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail(errors.New("data after the last op"))
	}
	if d.err != nil {
		return nil, true, fmt.Errorf("%w: %v", errBadEntry, d.err)
	}
	return ops, true, nil
}

// entryDecoder reads an entry's primitives from b, keeping the first error.
type entryDecoder struct {
	b   []byte
	err error
}

func (d *entryDecoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *entryDecoder) u() uint64 {
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad or truncated uvarint"))
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *entryDecoder) v() int64 {
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad or truncated varint"))
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *entryDecoder) bounded(max uint64) uint64 {
	x := d.u()
	if x > max {
		d.fail(fmt.Errorf("value %d out of range", x))
		return 0
	}
	return x
}

// left reads a length: never more than the bytes left after it, so that
// a corrupt one neither reads past the entry nor allocates much.
func (d *entryDecoder) left() uint64 {
	x := d.u()
	if x > uint64(len(d.b)) {
		d.fail(fmt.Errorf("length %d, %d bytes left", x, len(d.b)))
		return 0
	}
	return x
}

// count is a number of items of at least size bytes each: never more
// than fit in what is left, so that a corrupt count allocates no more
// than the entry's own size in items.
func (d *entryDecoder) count(size int) int {
	x := d.u()
	if x > uint64(len(d.b)/size) {
		d.fail(fmt.Errorf("%d items of at least %d bytes, %d bytes left", x, size, len(d.b)))
		return 0
	}
	return int(x)
}

func (d *entryDecoder) w() uint64 {
	if len(d.b) < 8 {
		d.fail(errors.New("truncated word"))
		return 0
	}
	x := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return x
}

func (d *entryDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail(errors.New("truncated"))
		return 0
	}
	x := d.b[0]
	d.b = d.b[1:]
	return x
}

func (d *entryDecoder) s() string {
	n := d.left()
	if d.err != nil || n == 0 {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *entryDecoder) request() locktable.Request {
	var r locktable.Request
	r.Name = d.s()
	r.TTL = d.v()
	r.Size = uint32(d.bounded(math.MaxUint32))
	r.Owner = d.s()
	f := d.byte()
	r.Detach, r.Shared = f&1 != 0, f&2 != 0
	r.Rand = d.w()
	r.LockDelay = d.v()
	return r
}
