package clientlib

import (
	"context"
	"fmt"
	"sync"
)

// RWMutex is a distributed reader/writer lock: readers (RLock) share the
// lock, a writer (Lock) has it alone, and a reader can become the writer
// atomically (Upgrade) and back (Downgrade). It is built on shared holds
// (see Shared) the way Mutex is built on exclusive ones: every RLock and
// Lock is a hold of its own on the server, so readers and writers of one
// process contend there as those of different processes do, in one FIFO
// queue where a reader behind a waiting writer waits (writers never
// starve).
//
// Its methods take a ctx and return errors (a lock that is lost, a server
// that is down), unlike sync.RWMutex's. Like sync.RWMutex it is not tied
// to goroutines: any goroutine may RUnlock a read lock another one took.
// Watch Held().Lost() (the writer) to learn of a loss.
type RWMutex struct {
	c    *Client
	name string
	opts []LockOption

	// mu guards writer and readers.
	mu sync.Mutex
	// writer is the exclusive hold while write-locked (Lock, Upgrade).
	writer *Lock
	// readers are the shared holds of RLock (and Downgrade) not yet
	// released, the latest last; a hold being upgraded is not among them.
	readers []*Lock
}

// RWMutex returns a reader/writer mutex on the lock name; opts apply to
// every hold (e.g. TTL). Size and Shared are set by the RWMutex.
func (c *Client) RWMutex(name string, opts ...LockOption) *RWMutex {
	return &RWMutex{c: c, name: name, opts: append([]LockOption(nil), opts...)}
}

// Name returns the lock's name.
func (m *RWMutex) Name() string { return m.name }

// RLock waits for a shared hold, as Client.Lock with Shared does.
func (m *RWMutex) RLock(ctx context.Context) error {
	l, err := m.c.Lock(ctx, m.name, m.options(true)...)
	if err != nil {
		return err
	}
	m.addReader(l)
	return nil
}

// TryRLock takes a shared hold if it can be granted now (no writer holds
// or waits), and reports whether it did. Errors count as not taken.
func (m *RWMutex) TryRLock(ctx context.Context) bool {
	l, err := m.c.TryLock(ctx, m.name, m.options(true)...)
	if err != nil {
		return false
	}
	m.addReader(l)
	return true
}

// addReader records a shared hold (RUnlock releases the latest).
func (m *RWMutex) addReader(l *Lock) {
	m.mu.Lock()
	m.readers = append(m.readers, l)
	m.mu.Unlock()
}

// RUnlock releases one of the read locks (the latest). It returns the
// loss if that hold was lost while held; an error wrapping ErrNotHeld if
// the RWMutex has no read lock.
func (m *RWMutex) RUnlock(ctx context.Context) error {
	m.mu.Lock()
	n := len(m.readers)
	if n == 0 {
		m.mu.Unlock()
		return fmt.Errorf("RUnlock of RWMutex %s without a read lock: %w", quote(m.name), ErrNotHeld)
	}
	l := m.readers[n-1]
	m.readers = m.readers[:n-1]
	m.mu.Unlock()
	return l.Unlock(ctx)
}

// Lock waits for the exclusive hold, as Client.Lock does.
func (m *RWMutex) Lock(ctx context.Context) error {
	l, err := m.c.Lock(ctx, m.name, m.options(false)...)
	if err != nil {
		return err
	}
	m.setWriter(l)
	return nil
}

// TryLock takes the exclusive hold if the lock is free now, and reports
// whether it did. Errors count as not taken.
func (m *RWMutex) TryLock(ctx context.Context) bool {
	l, err := m.c.TryLock(ctx, m.name, m.options(false)...)
	if err != nil {
		return false
	}
	m.setWriter(l)
	return true
}

// setWriter records the exclusive hold. The server grants one at a time,
// and Unlock forgets it before releasing it, so the slot is free.
func (m *RWMutex) setWriter(l *Lock) {
	m.mu.Lock()
	m.writer = l
	m.mu.Unlock()
}

// Unlock releases the exclusive hold. It returns the loss if it was lost
// while held; an error wrapping ErrNotHeld if the RWMutex is not
// write-locked.
func (m *RWMutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	l := m.writer
	m.writer = nil
	m.mu.Unlock()
	if l == nil {
		return fmt.Errorf("unlock of RWMutex %s that is not write-locked: %w", quote(m.name), ErrNotHeld)
	}
	return l.Unlock(ctx)
}

// Upgrade turns one of the RWMutex's read locks (the latest) into the
// write lock, atomically (see Lock.Upgrade, whose opts it takes: Wait).
// The other read locks of this RWMutex, like every other reader's, must be
// released for it to complete. When it fails the read lock is kept,
// unless it was lost (a *LostError). ErrDeadlock when another upgrade of
// the lock waits.
func (m *RWMutex) Upgrade(ctx context.Context, opts ...LockOption) error {
	m.mu.Lock()
	n := len(m.readers)
	if n == 0 {
		m.mu.Unlock()
		return fmt.Errorf("upgrade of RWMutex %s without a read lock: %w", quote(m.name), ErrNotHeld)
	}
	l := m.readers[n-1]
	m.readers = m.readers[:n-1]
	m.mu.Unlock()
	err := l.Upgrade(ctx, opts...)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		m.writer = l
	case l.Err() == nil: // not lost: still a reader
		m.readers = append(m.readers, l)
	}
	return err
}

// Downgrade turns the write lock into a read lock (see Lock.Downgrade):
// queued readers get in at once. On a loss the hold is forgotten.
func (m *RWMutex) Downgrade(ctx context.Context) error {
	m.mu.Lock()
	l := m.writer
	m.writer = nil
	m.mu.Unlock()
	if l == nil {
		return fmt.Errorf("downgrade of RWMutex %s that is not write-locked: %w", quote(m.name), ErrNotHeld)
	}
	err := l.Downgrade(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		m.readers = append(m.readers, l)
	case l.Err() == nil:
		m.writer = l
	}
	return err
}

// Held returns the exclusive hold while the RWMutex is write-locked (for
// its Fence, Lost and Context), or nil.
func (m *RWMutex) Held() *Lock {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writer
}

// RHeld returns the latest read lock's hold (the one RUnlock and Upgrade
// take), or nil.
func (m *RWMutex) RHeld() *Lock {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(m.readers); n > 0 {
		return m.readers[n-1]
	}
	return nil
}

func (m *RWMutex) options(shared bool) []LockOption {
	all := append(make([]LockOption, 0, len(m.opts)+1), m.opts...)
	return append(all, func(c *lockConfig) { c.size, c.shared = 1, shared })
}
