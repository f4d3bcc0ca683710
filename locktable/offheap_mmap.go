//go:build linux && !race

package locktable

import (
	"sync"
	"syscall"
)

var pageSize = syscall.Getpagesize()

// offheap hands out zeroed memory from mmap. Being outside the garbage
// collected heap, it does not count toward the GC's pacing, which lets the
// heap grow to twice its live size before collecting: RSS is what the table
// uses, and the GC never scans it. Everything put there is pointer-free.
//
// The race detector does not see accesses to such memory, so race builds
// use the heap version (offheap_heap.go) to keep checking the table.
type offheap struct {
	mu   sync.Mutex
	live map[*byte][]byte // by first byte: what free and freeAll unmap
}

func newOffheap() *offheap { return &offheap{live: make(map[*byte][]byte)} }

// alloc returns n zeroed bytes aligned for any record. Blocks under a page
// come from the Go heap: mapping a page for each would waste most of it, and
// a small table would cost a system call per block.
func (m *offheap) alloc(n int) []byte {
	if n < pageSize {
		return heapAlloc(n)
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		panic("locktable: mmap: " + err.Error())
	}
	m.mu.Lock()
	m.live[&b[0]] = b
	m.mu.Unlock()
	return b
}

// free gives back the block that starts at p: unmaps it, unless it came
// from the Go heap, whose GC frees it.
func (m *offheap) free(p *byte) {
	m.mu.Lock()
	b, mapped := m.live[p]
	delete(m.live, p)
	m.mu.Unlock()
	if mapped {
		syscall.Munmap(b)
	}
}

// freeAll unmaps everything; the table that used m is unreachable.
func (m *offheap) freeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p, b := range m.live {
		syscall.Munmap(b)
		delete(m.live, p)
	}
}
