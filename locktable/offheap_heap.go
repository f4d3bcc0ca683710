//go:build !linux || race

package locktable

// offheap hands out zeroed memory. This version takes it from the Go heap
// (see offheap_mmap.go for why Linux does not): the GC frees it.
type offheap struct{}

func newOffheap() *offheap { return &offheap{} }

func (m *offheap) alloc(n int) []byte { return heapAlloc(n) }

func (m *offheap) free(p *byte) {}

func (m *offheap) freeAll() {}
