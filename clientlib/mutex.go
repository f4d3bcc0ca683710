package clientlib

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Mutex is a distributed mutual-exclusion lock with the shape of
// sync.Mutex, for code written against sync.Locker. Goroutines of one
// process queue on the Mutex itself, one at a time contends on the server.
//
// sync.Locker cannot return errors, so Lock retries network errors (a
// server that is down or restarting) until it gets the lock, and panics on
// an error that retrying cannot cure (an error reply such as
// SIZEMISMATCH or LIMIT, or a closed Client). Code that can handle errors
// should call LockContext. Watch Held().Lost() to learn of a loss.
type Mutex struct {
	c    *Client
	name string
	opts []LockOption

	turn chan struct{} // buffered(1): the in-process token

	// mu guards held.
	mu   sync.Mutex
	held *Lock
}

// Mutex returns a mutex on the lock name; opts apply to every Lock (e.g.
// TTL). Size must not be set (a mutex has one holder).
func (c *Client) Mutex(name string, opts ...LockOption) *Mutex {
	m := &Mutex{c: c, name: name, opts: append(append([]LockOption(nil), opts...), Size(1)), turn: make(chan struct{}, 1)}
	return m
}

// LockContext waits for the mutex, as Client.Lock does.
func (m *Mutex) LockContext(ctx context.Context) error {
	select {
	case m.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	l, err := m.c.Lock(ctx, m.name, m.opts...)
	if err != nil {
		<-m.turn
		return err
	}
	m.mu.Lock()
	m.held = l
	m.mu.Unlock()
	return nil
}

// TryLock takes the mutex if it is free now, in this process and on the
// server, and reports whether it did. Errors count as not taken.
func (m *Mutex) TryLock() bool {
	select {
	case m.turn <- struct{}{}:
	default:
		return false
	}
	l, err := m.c.TryLock(context.Background(), m.name, m.opts...)
	if err != nil {
		<-m.turn
		return false
	}
	m.mu.Lock()
	m.held = l
	m.mu.Unlock()
	return true
}

// UnlockContext releases the mutex. It returns the loss if the lock was lost
// while held (the mutex is free in this process either way). Unlocking a
// mutex that is not locked is an error wrapping ErrNotHeld.
func (m *Mutex) UnlockContext(ctx context.Context) error {
	m.mu.Lock()
	l := m.held
	m.held = nil
	m.mu.Unlock()
	if l == nil {
		return fmt.Errorf("unlock of unlocked Mutex: %w", ErrNotHeld)
	}
	err := l.Unlock(ctx)
	<-m.turn
	return err
}

// Held returns the Lock while the mutex is locked (for its Fence, Lost and
// Context), or nil.
func (m *Mutex) Held() *Lock {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held
}

// Lock locks the mutex, waiting as long as it takes (see Mutex for errors).
func (m *Mutex) Lock() {
	backoff := 50 * time.Millisecond
	for {
		err := m.LockContext(context.Background())
		if err == nil {
			return
		}
		if isReply(err) || errors.Is(err, ErrClosed) {
			panic("relock: Mutex.Lock: " + err.Error())
		}
		time.Sleep(backoff/2 + rand.N(backoff/2))
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Unlock unlocks the mutex. Errors (a loss, a network failure, after which
// the server releases the lock by the closed connection) are dropped; use
// UnlockContext to see them. Like sync.Mutex, it panics if the mutex is not
// locked.
func (m *Mutex) Unlock() {
	m.mu.Lock()
	locked := m.held != nil
	m.mu.Unlock()
	if !locked {
		panic("relock: unlock of unlocked Mutex")
	}
	m.UnlockContext(context.Background())
}
