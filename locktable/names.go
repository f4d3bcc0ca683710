package locktable

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Lock names live in a per-shard byte arena, and a per-shard open-addressing
// index maps them to lock records: neither is a Go object, so a held lock
// costs the GC nothing.

// hashName is FNV-1a, deterministic across processes so that replicas
// agree on shards.
func hashName[S string | []byte](name S) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h
}

// indexHash is where the index starts probing for a name of hash h: mixed,
// so that its bits do not repeat the low ones that chose the shard.
func indexHash(h uint64) uint64 {
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	return h >> 32
}

const (
	arenaGrain   = 8   // bytes: names take whole grains
	maxArenaName = 256 // longer names are Go strings in shard.longNames
)

// grain is the arena's unit of allocation.
type grain [arenaGrain]byte

// nameArena stores names in blocks of whole grains, with a free list per
// block size, so that freed names are reused by names of about their
// length. Blocks never straddle chunks: a chunk's end too short for a name
// stays unused (less than one name's worth, in chunks of at least 256
// grains). Offsets count grains; offset 0 is never used (it means "none"
// in the free lists).
type nameArena struct {
	chunked[grain]
	top  uint32                            // next unused grain
	free [maxArenaName / arenaGrain]uint32 // by block size in grains - 1
	// limit is how far top may go (0: maxArenaGrains); tests lower it.
	limit uint32
}

// maxArenaGrains is the most grains an arena's uint32 offsets can reach:
// 32 GiB. A shard whose arena is full keeps further names in longNames.
const maxArenaGrains = math.MaxUint32

// fits reports whether a name of n bytes (0 < n ≤ maxArenaName) can be
// stored without taking the arena past its limit.
func (a *nameArena) fits(n int) bool {
	g := grains(n)
	limit := a.limit
	if limit == 0 {
		limit = maxArenaGrains
	}
	// The block may skip up to g-1 grains at a chunk's end, and grain 0.
	return a.free[g-1] != 0 || uint64(a.top)+2*uint64(g)+1 <= uint64(limit)
}

func grains(n int) uint32 { return uint32(n+arenaGrain-1) / arenaGrain }

// alloc stores name and returns its offset. 0 < len(name) ≤ maxArenaName,
// and the name fits.
func (a *nameArena) alloc(m *offheap, name string) uint32 {
	g := grains(len(name))
	off := a.free[g-1]
	if off != 0 {
		a.free[g-1] = binary.LittleEndian.Uint32(a.block(off, 4))
	} else {
		off = a.bump(m, g)
	}
	copy(a.block(off, len(name)), name)
	return off
}

// bump takes g fresh grains.
func (a *nameArena) bump(m *offheap, g uint32) uint32 {
	if a.top == 0 {
		a.top = 1 // offset 0 means "none"
	}
	if c, pos := chunkOf(a.top); int(pos+g) > chunkLen(c) {
		a.top += uint32(chunkLen(c)) - pos // to the next chunk
	}
	for a.top+g > a.cap {
		a.grow(m)
	}
	off := a.top
	a.top += g
	return off
}

// block returns the n bytes at off.
func (a *nameArena) block(off uint32, n int) []byte {
	return unsafe.Slice(&a.at(off)[0], n)
}

// release puts the block of a name of length n back on its free list.
func (a *nameArena) release(off uint32, n int) {
	g := grains(n)
	binary.LittleEndian.PutUint32(a.block(off, 4), a.free[g-1])
	a.free[g-1] = off
}

// nameIndex is an open-addressing hash table (linear probing, backward
// shift deletion, so no tombstones) of lock ids; the names are the locks'.
// Its capacity is a power of two, grown past 3/4 full and shrunk below 1/8.
type nameIndex struct {
	slots []uint32 // lock ids; 0: empty
	n     int
}

const minIndex = 16 // slots

// lookup returns the lock named name (hash h), or 0; sh has the names.
func (x *nameIndex) lookup(sh *shard, name string, h uint64) uint32 {
	if x.slots == nil {
		return 0
	}
	mask := len(x.slots) - 1
	for i := int(indexHash(h)) & mask; ; i = (i + 1) & mask {
		id := x.slots[i]
		if id == 0 || string(sh.nameBytes(id)) == name {
			return id
		}
	}
}

// slotOf returns the slot of lock id, which is in the index under hash h.
func (x *nameIndex) slotOf(id uint32, h uint64) int {
	mask := len(x.slots) - 1
	i := int(indexHash(h)) & mask
	for x.slots[i] != id {
		i = (i + 1) & mask
	}
	return i
}

// insert adds lock id, whose name (hash h) is not in the index.
func (x *nameIndex) insert(m *offheap, id uint32, h uint64, sh *shard) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.resize(m, max(minIndex, 2*len(x.slots)), sh)
	}
	x.place(id, h)
	x.n++
}

// place puts id in the first empty slot from its home.
func (x *nameIndex) place(id uint32, h uint64) {
	mask := len(x.slots) - 1
	i := int(indexHash(h)) & mask
	for x.slots[i] != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = id
}

// remove empties slot i and moves later entries of its probe run back, so
// that every entry stays reachable from its home without tombstones.
func (x *nameIndex) remove(m *offheap, i int, sh *shard) {
	mask := len(x.slots) - 1
	for j := (i + 1) & mask; x.slots[j] != 0; j = (j + 1) & mask {
		home := int(indexHash(hashName(sh.nameBytes(x.slots[j])))) & mask
		// Entry j may fill the hole at i unless its home lies in (i, j].
		if (j-home)&mask >= (j-i)&mask {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
	if len(x.slots) > minIndex && x.n*8 < len(x.slots) {
		x.resize(m, len(x.slots)/2, sh)
	}
}

// resize moves every entry into a table of size slots.
func (x *nameIndex) resize(m *offheap, size int, sh *shard) {
	old := x.slots
	x.slots = allocSlice[uint32](m, size)
	for _, id := range old {
		if id != 0 {
			x.place(id, hashName(sh.nameBytes(id)))
		}
	}
	if old != nil {
		freeSlice(m, old)
	}
}

// each calls fn with every lock id in the index.
func (x *nameIndex) each(fn func(id uint32)) {
	for _, id := range x.slots {
		if id != 0 {
			fn(id)
		}
	}
}
