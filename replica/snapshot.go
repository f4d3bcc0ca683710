package replica

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// Snapshots.
//
// FSM.Snapshot only copies the state (locktable.State, a plain value that
// shares nothing with the table) while Apply waits; fsmSnapshot.Persist,
// which raft runs concurrently with later Applies, encodes it. The
// encoding is binary and versioned:
//
//	magic "\x00RLSNAP" | version byte (5) | body | CRC-32C of body (4 bytes, big endian)
//
// body, in uvarints (u), zig-zag varints (v), length-prefixed strings (s)
// and fixed 8-byte big-endian words (w):
//
//	u fence | s leader | s leader addr | u leader term | u max waiters | u max holds
//	u #sessions, each: u id | u #fences, each: u fence
//	u #locks, each: s name | u size
//	    | u #holds, each: u fence | w rand | s owner | u count | v ttl | v deadline
//	                      | v granted | flags byte (1 detached, 2 bound, 4 orphan, 8 delayed, 16 shared)
//	                      | u session | v lock-delay
//	    | u #waiters, each: u session | s name | u size | s owner | v ttl | w rand
//	                        | flags byte (1 detach, 2 shared) | v enqueued | v lock-delay
//	                        | u upgrade (the upgraded hold's fence; 0: none)
//	                        | u #multi names, each: s name (a multi-lock leg's
//	                          names, its own among them; 0: a single request)
//
// A hold's name and size are its lock's; a delayed hold is a slot in
// lock-delay; a waiter with an upgrade fence is a waiting UPGRADE of that
// hold. Version 4 is version 5 without the limits (max waiters, max
// holds: none); version 3 is version 4 without multi-locks (no multi names);
// version 2 is version 3 without modes (no shared flags, no upgrade
// fences: every hold and request exclusive); version 1 is version 2
// without the lock-delays (and so without delayed holds). Snapshots
// written before version 1 are the JSON of fsmState. Restore reads them
// all (a JSON snapshot starts with '{', never with the magic's NUL byte).

// snapshotMagic starts every binary snapshot.
const snapshotMagic = "\x00RLSNAP"

// snapshotVersion is the encoding Persist writes; decodeSnapshot also
// reads version 4, written before replicated limits, version 3, written
// before multi-locks, version 2, written before
// shared holds, and version 1, written before lock-delay.
const snapshotVersion byte = 5

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errBadSnapshot wraps every decoding failure.
var errBadSnapshot = errors.New("replica: bad snapshot")

// fsmState is a snapshot: the table's state and the FSM's own. Its JSON
// form is the snapshot encoding before version 1.
type fsmState struct {
	locktable.State
	Leader     string `json:"leader,omitempty"`
	LeaderAddr string `json:"leader_addr,omitempty"`
	LeaderTerm uint64 `json:"leader_term,omitempty"`
	// MaxWaiters and MaxHolds are the limits of the last takeover entry
	// (Op.MaxWaiters, Op.MaxHolds).
	MaxWaiters int `json:"max_waiters,omitempty"`
	MaxHolds   int `json:"max_holds,omitempty"`
}

// fsmSnapshot is a captured state, encoded by Persist.
type fsmSnapshot struct{ st fsmState }

// Persist encodes the state to sink. raft runs it concurrently with Apply;
// it reads only its own copy.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriterSize(sink, 64<<10)
	if err := encodeSnapshot(bw, &s.st); err != nil {
		sink.Cancel()
		return err
	}
	if err := bw.Flush(); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// encodeSnapshot writes st in the current encoding.
func encodeSnapshot(w io.Writer, st *fsmState) error {
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return err
	}
	if _, err := w.Write([]byte{snapshotVersion}); err != nil {
		return err
	}
	e := encoder{out: w}
	e.u(st.Fence)
	e.s(st.Leader)
	e.s(st.LeaderAddr)
	e.u(st.LeaderTerm)
	e.u(uint64(st.MaxWaiters))
	e.u(uint64(st.MaxHolds))
	e.u(uint64(len(st.Sessions)))
	for _, ss := range st.Sessions {
		e.u(ss.ID)
		e.u(uint64(len(ss.Fences)))
		for _, f := range ss.Fences {
			e.u(f)
		}
	}
	e.u(uint64(len(st.Locks)))
	for i := range st.Locks {
		ls := &st.Locks[i]
		e.s(ls.Name)
		e.u(uint64(ls.Size))
		e.u(uint64(len(ls.Holds)))
		for j := range ls.Holds {
			h := &ls.Holds[j]
			if h.Name != ls.Name || h.Size != ls.Size {
				return fmt.Errorf("replica: snapshot: hold %d of lock %q names lock %q of size %d", h.Key.Fence, ls.Name, h.Name, h.Size)
			}
			e.u(h.Key.Fence)
			e.w(h.Key.Rand)
			e.s(h.Owner)
			e.u(uint64(h.Count))
			e.v(h.TTL)
			e.v(h.Deadline)
			e.v(h.Granted)
			e.byte(flag(h.Detached, 1) | flag(h.Bound, 2) | flag(h.Orphan, 4) | flag(h.Delayed, 8) | flag(h.Shared, 16))
			e.u(h.SessionID)
			e.v(h.LockDelay)
		}
		e.u(uint64(len(ls.Waiters)))
		for j := range ls.Waiters {
			ws := &ls.Waiters[j]
			e.u(ws.SessionID)
			e.s(ws.Request.Name)
			e.u(uint64(ws.Request.Size))
			e.s(ws.Request.Owner)
			e.v(ws.Request.TTL)
			e.w(ws.Request.Rand)
			e.byte(flag(ws.Request.Detach, 1) | flag(ws.Request.Shared, 2))
			e.v(ws.Enqueued)
			e.v(ws.Request.LockDelay)
			e.u(ws.Upgrade)
			e.u(uint64(len(ws.Multi)))
			for _, name := range ws.Multi {
				e.s(name)
			}
		}
	}
	if e.err != nil {
		return e.err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], e.crc)
	_, err := w.Write(sum[:])
	return err
}

func flag(b bool, bit byte) byte {
	if b {
		return bit
	}
	return 0
}

// encoder writes the body's primitives, keeping the first error and a
// running CRC of what it wrote.
type encoder struct {
	out io.Writer
	crc uint32
	buf [binary.MaxVarintLen64]byte
	err error
}

func (e *encoder) write(b []byte) {
	if e.err != nil {
		return
	}
	e.crc = crc32.Update(e.crc, crcTable, b)
	_, e.err = e.out.Write(b)
}

func (e *encoder) u(x uint64) { e.write(binary.AppendUvarint(e.buf[:0], x)) }
func (e *encoder) v(x int64)  { e.write(binary.AppendVarint(e.buf[:0], x)) }
func (e *encoder) w(x uint64) { e.write(binary.BigEndian.AppendUint64(e.buf[:0], x)) }
func (e *encoder) byte(b byte) {
	e.buf[0] = b
	e.write(e.buf[:1])
}

func (e *encoder) s(x string) {
	e.u(uint64(len(x)))
	if e.err != nil || len(x) == 0 {
		return
	}
	e.crc = crc32.Update(e.crc, crcTable, []byte(x))
	_, e.err = io.WriteString(e.out, x)
}

// decodeSnapshot reads a snapshot in any encoding Persist has written:
// the binary one, or the JSON of earlier versions.
func decodeSnapshot(r io.Reader) (fsmState, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(snapshotMagic) + 1)
	if err != nil && !(errors.Is(err, io.EOF) && len(head) > 0) {
		return fsmState{}, fmt.Errorf("%w: %v", errBadSnapshot, err)
	}
	if !bytes.HasPrefix(head, []byte(snapshotMagic)) {
		// Before version 1: JSON.
		var st fsmState
		if err := json.NewDecoder(br).Decode(&st); err != nil {
			return fsmState{}, fmt.Errorf("%w: %v", errBadSnapshot, err)
		}
		return st, nil
	}
	if len(head) <= len(snapshotMagic) {
		return fsmState{}, fmt.Errorf("%w: truncated", errBadSnapshot)
	}
	version := head[len(snapshotMagic)]
	if version < 1 || version > snapshotVersion {
		return fsmState{}, fmt.Errorf("%w: encoding version %d; this relock reads up to %d", errBadSnapshot, version, snapshotVersion)
	}
	br.Discard(len(head))
	d := decoder{r: br, version: version}
	st := d.state()
	if d.err != nil {
		return fsmState{}, fmt.Errorf("%w: %v", errBadSnapshot, d.err)
	}
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return fsmState{}, fmt.Errorf("%w: no checksum: %v", errBadSnapshot, err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != d.crc {
		return fsmState{}, fmt.Errorf("%w: checksum %08x, want %08x", errBadSnapshot, d.crc, got)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fsmState{}, fmt.Errorf("%w: data after the checksum", errBadSnapshot)
	}
	return st, nil
}

// decoder reads the body's primitives, keeping the first error and a
// running CRC of what it read.
type decoder struct {
	r       *bufio.Reader
	version byte // the snapshot's encoding version
	crc     uint32
	err     error
}

// crcByteReader feeds binary.ReadUvarint through the CRC.
type crcByteReader struct{ d *decoder }

func (c crcByteReader) ReadByte() (byte, error) {
	b, err := c.d.r.ReadByte()
	if err == nil {
		c.d.crc = crc32.Update(c.d.crc, crcTable, []byte{b})
	}
	return b, err
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
	}
}

func (d *decoder) u() uint64 {
	if d.err != nil {
		return 0
	}
	x, err := binary.ReadUvarint(crcByteReader{d})
	d.fail(err)
	return x
}

func (d *decoder) v() int64 {
	if d.err != nil {
		return 0
	}
	x, err := binary.ReadVarint(crcByteReader{d})
	d.fail(err)
	return x
}

// u32 is u bounded to 32 bits.
func (d *decoder) u32() uint32 {
	x := d.u()
	if x > math.MaxUint32 {
		d.fail(fmt.Errorf("value %d out of range", x))
	}
	return uint32(x)
}

// n is a count of items; each takes at least one byte, so a count larger
// than what is left would be a corrupt snapshot — bounded here only loosely
// (1<<32), since the reader's length is unknown; allocations grow with what
// is actually read.
func (d *decoder) n() int {
	x := d.u()
	if x > 1<<32 {
		d.fail(fmt.Errorf("count %d out of range", x))
		return 0
	}
	return int(x)
}

// bound reads a limit (a count bound in 0..MaxInt32).
func (d *decoder) bound() int {
	x := d.u()
	if x > math.MaxInt32 {
		d.fail(fmt.Errorf("limit %d out of range", x))
		return 0
	}
	return int(x)
}

func (d *decoder) read(n int) []byte {
	if d.err != nil {
		return nil
	}
	var b []byte
	if n <= 64<<10 {
		b = make([]byte, n)
		if _, err := io.ReadFull(d.r, b); err != nil {
			d.fail(err)
			return nil
		}
	} else {
		// A corrupt length must not allocate what is not there: grow
		// with what is read.
		var buf bytes.Buffer
		if m, err := io.CopyN(&buf, d.r, int64(n)); err != nil || m != int64(n) {
			d.fail(fmt.Errorf("truncated: %d of %d bytes: %v", m, n, err))
			return nil
		}
		b = buf.Bytes()
	}
	d.crc = crc32.Update(d.crc, crcTable, b)
	return b
}

func (d *decoder) w() uint64 {
	b := d.read(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *decoder) byte() byte {
	b := d.read(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *decoder) s() string {
	n := d.u()
	if n > 1<<30 {
		d.fail(fmt.Errorf("string of %d bytes", n))
	}
	if d.err != nil || n == 0 {
		return ""
	}
	return string(d.read(int(n)))
}

// grow returns n, or less for a corrupt count, as an initial capacity.
func grow(n int) int { return min(n, 1<<16) }

func (d *decoder) state() fsmState {
	var st fsmState
	st.Fence = d.u()
	st.Leader = d.s()
	st.LeaderAddr = d.s()
	st.LeaderTerm = d.u()
	if d.version >= 5 {
		st.MaxWaiters = d.bound()
		st.MaxHolds = d.bound()
	}
	ns := d.n()
	if ns > 0 {
		st.Sessions = make([]locktable.SessionState, 0, grow(ns))
	}
	for i := 0; i < ns && d.err == nil; i++ {
		ss := locktable.SessionState{ID: d.u()}
		nf := d.n()
		if nf > 0 {
			ss.Fences = make([]uint64, 0, grow(nf))
		}
		for j := 0; j < nf && d.err == nil; j++ {
			ss.Fences = append(ss.Fences, d.u())
		}
		st.Sessions = append(st.Sessions, ss)
	}
	nl := d.n()
	if nl > 0 {
		st.Locks = make([]locktable.LockState, 0, grow(nl))
	}
	for i := 0; i < nl && d.err == nil; i++ {
		ls := locktable.LockState{Name: d.s(), Size: d.u32()}
		nh := d.n()
		ls.Holds = make([]locktable.HoldState, 0, grow(nh))
		for j := 0; j < nh && d.err == nil; j++ {
			var h locktable.HoldState
			h.Name, h.Size = ls.Name, ls.Size
			h.Key.Fence = d.u()
			h.Key.Rand = d.w()
			h.Owner = d.s()
			h.Count = d.u32()
			h.TTL = d.v()
			h.Deadline = d.v()
			h.Granted = d.v()
			fl := d.byte()
			h.Detached, h.Bound, h.Orphan, h.Delayed = fl&1 != 0, fl&2 != 0, fl&4 != 0, fl&8 != 0
			h.Shared = d.version >= 3 && fl&16 != 0
			h.SessionID = d.u()
			if d.version >= 2 {
				h.LockDelay = d.v()
			}
			ls.Holds = append(ls.Holds, h)
		}
		if nw := d.n(); nw > 0 {
			ls.Waiters = make([]locktable.WaiterState, 0, grow(nw))
			for j := 0; j < nw && d.err == nil; j++ {
				var ws locktable.WaiterState
				ws.SessionID = d.u()
				ws.Request.Name = d.s()
				ws.Request.Size = d.u32()
				ws.Request.Owner = d.s()
				ws.Request.TTL = d.v()
				ws.Request.Rand = d.w()
				fl := d.byte()
				ws.Request.Detach = fl&1 != 0
				ws.Request.Shared = d.version >= 3 && fl&2 != 0
				ws.Enqueued = d.v()
				if d.version >= 2 {
					ws.Request.LockDelay = d.v()
				}
				if d.version >= 3 {
					ws.Upgrade = d.u()
				}
				if d.version >= 4 {
					if nm := d.n(); nm > 0 {
						ws.Multi = make([]string, 0, grow(nm))
						for k := 0; k < nm && d.err == nil; k++ {
							ws.Multi = append(ws.Multi, d.s())
						}
					}
				}
				ls.Waiters = append(ls.Waiters, ws)
			}
		}
		st.Locks = append(st.Locks, ls)
	}
	return st
}
