package locktable

import (
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// heapAlloc returns n zeroed bytes from the Go heap, aligned for any
// pointer-free record.
func heapAlloc(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// allocSlice returns n zeroed T from m. T must hold no pointers.
func allocSlice[T any](m *offheap, n int) []T {
	var zero T
	b := m.alloc(n * int(unsafe.Sizeof(zero)))
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

// freeSlice gives back a slice from allocSlice.
func freeSlice[T any](m *offheap, s []T) {
	m.free((*byte)(unsafe.Pointer(&s[0])))
}

// Chunk sizes in elements: 256, 256, 512, 1024, 2048, then 4096 each, so
// that a small shard stays small and a large one wastes at most one chunk.
const (
	firstChunkShift = 8
	lastChunkShift  = 12
)

// chunkOf returns the chunk holding element i and i's offset in it.
func chunkOf(i uint32) (c, off uint32) {
	if i < 1<<lastChunkShift {
		c = uint32(bits.Len32(i >> firstChunkShift))
		if c == 0 {
			return 0, i
		}
		return c, i - (1<<(firstChunkShift-1))<<c
	}
	return lastChunkShift - firstChunkShift + i>>lastChunkShift, i & (1<<lastChunkShift - 1)
}

// chunkLen returns the number of elements of chunk c.
func chunkLen(c uint32) int {
	switch {
	case c == 0:
		return 1 << firstChunkShift
	case c <= lastChunkShift-firstChunkShift:
		return (1 << (firstChunkShift - 1)) << c
	}
	return 1 << lastChunkShift
}

// chunked is a growable array of pointer-free T in off-heap chunks that
// never move: growing copies no element, and an element's address stays
// valid as long as the array lives.
//
// at may run concurrently with grow (session lists link holds of every
// shard, and follow those links without the holds' shard mutex): grow
// publishes each new directory whole, and changes nothing readers see.
type chunked[T any] struct {
	dir atomic.Pointer[[][]T]
	cap uint32 // elements in all chunks
}

// at returns element i, which must be below cap.
func (a *chunked[T]) at(i uint32) *T {
	c, off := chunkOf(i)
	return &(*a.dir.Load())[c][off]
}

// grow adds a chunk. The directory grows by append: readers of the old
// one never look past its length, where append writes in place.
func (a *chunked[T]) grow(m *offheap) {
	var dir [][]T
	if p := a.dir.Load(); p != nil {
		dir = *p
	}
	n := chunkLen(uint32(len(dir)))
	dir = append(dir, allocSlice[T](m, n))
	a.dir.Store(&dir)
	a.cap += uint32(n)
}

// records is a chunked array of records with reuse of freed ones. Id 0 is
// never handed out: it means "none" wherever a record is referenced.
type records[T any] struct {
	chunked[T]
	used uint32 // ids below used have been handed out at some point
	// free heads the list of freed records, linked through their first
	// four bytes; 0: none.
	free uint32
	// limit is the largest id a hid can carry (0: no limit).
	limit uint32
}

// alloc returns the id of a zeroed record.
func (r *records[T]) alloc(m *offheap) uint32 {
	if id := r.free; id != 0 {
		p := r.at(id)
		r.free = *(*uint32)(unsafe.Pointer(p))
		var zero T
		*p = zero
		return id
	}
	if r.used == 0 {
		r.used = 1
	}
	if r.limit != 0 && r.used > r.limit {
		// Unreachable: the bucket limits (Table.bucketFull) keep every
		// shard's live holds below its limit.
		panic("locktable: internal error: record ids exhausted")
	}
	if r.used >= r.cap {
		r.grow(m)
	}
	r.used++
	return r.used - 1
}

// release zeroes record id and puts it on the free list.
func (r *records[T]) release(id uint32) {
	p := r.at(id)
	var zero T
	*p = zero
	*(*uint32)(unsafe.Pointer(p)) = r.free
	r.free = id
}
