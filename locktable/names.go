package locktable

import (
	"encoding/binary"
	"math"
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
	arenaChunk   = 64 << 10 // bytes per arena chunk
	arenaGrain   = 8        // names take whole multiples of this
	maxArenaName = 256      // longer names are Go strings in shard.longNames
)

// nameArena stores names in size classes of arenaGrain bytes, each with a
// free list, so that freed names are reused by names of about their length.
// Offsets are global over its chunks; offset 0 is never used (it means
// "none" in the free lists).
type nameArena struct {
	chunks [][]byte
	top    uint32                            // next unused offset
	free   [maxArenaName / arenaGrain]uint32 // class c-1: blocks of c grains
}

func nameClass(n int) int { return (n + arenaGrain - 1) / arenaGrain }

// alloc stores name and returns its offset. 0 < len(name) ≤ maxArenaName.
func (a *nameArena) alloc(m *offheap, name string) uint32 {
	c := nameClass(len(name))
	off := a.free[c-1]
	if off != 0 {
		a.free[c-1] = binary.LittleEndian.Uint32(a.block(off, 4))
	} else {
		off = a.bump(m, uint32(c*arenaGrain))
	}
	copy(a.block(off, len(name)), name)
	return off
}

// bump takes n fresh bytes, starting a chunk when the current one cannot
// hold them (its rest stays unused: less than one name's worth).
func (a *nameArena) bump(m *offheap, n uint32) uint32 {
	if a.top == 0 {
		a.top = arenaGrain // offset 0 means "none"
	}
	if a.top%arenaChunk+n > arenaChunk {
		if a.top > math.MaxUint32-2*arenaChunk {
			panic("locktable: 4 GiB of names in one shard")
		}
		a.top = (a.top/arenaChunk + 1) * arenaChunk
	}
	for int(a.top/arenaChunk) >= len(a.chunks) {
		a.chunks = append(a.chunks, allocSlice[byte](m, arenaChunk))
	}
	off := a.top
	a.top += n
	return off
}

// block returns the n bytes at off.
func (a *nameArena) block(off uint32, n int) []byte {
	pos := int(off % arenaChunk)
	return a.chunks[off/arenaChunk][pos : pos+n : pos+n]
}

// release puts the block of a name of length n back on its free list.
func (a *nameArena) release(off uint32, n int) {
	c := nameClass(n)
	binary.LittleEndian.PutUint32(a.block(off, 4), a.free[c-1])
	a.free[c-1] = off
}

// nameIndex is an open-addressing hash table (linear probing, backward
// shift deletion, so no tombstones) of lock ids; the names are the locks'.
// Its capacity is a power of two, grown past 3/4 full and shrunk below 1/8.
type nameIndex struct {
	slots []uint32 // lock ids; 0: empty
	n     int
}

const minIndex = 1024 // slots: one page

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
