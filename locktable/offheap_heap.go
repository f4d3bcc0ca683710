//go:build !linux || race

package locktable

import "unsafe"

// offheap hands out zeroed memory. This version takes it from the Go heap
// (see offheap_mmap.go for why Linux does not): the GC frees it.
type offheap struct{}

func newOffheap() *offheap { return &offheap{} }

// alloc returns n bytes aligned for any pointer-free record.
func (m *offheap) alloc(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

func (m *offheap) free(p *byte) {}

func (m *offheap) freeAll() {}
