package clientlib

import (
	"context"
	"fmt"
)

// Semaphore is a counting semaphore: a lock of size n, admitting up to n
// holders at once — the seeds' "resource utilization limiting" pattern
// (e.g. at most 10 concurrent calls to a search cluster, across processes).
// Every client of one semaphore must use the same size: the first holder
// fixes it and a request with another size fails with ErrSizeMismatch.
type Semaphore struct {
	c    *Client
	name string
	size int
	opts []LockOption
}

// Semaphore returns the semaphore name of size n (n ≥ 1). opts apply to
// every Acquire (e.g. TTL); Size is set by the semaphore.
func (c *Client) Semaphore(name string, n int, opts ...LockOption) *Semaphore {
	return &Semaphore{c: c, name: name, size: n, opts: opts}
}

// Name returns the semaphore's lock name.
func (s *Semaphore) Name() string { return s.name }

// Size returns the number of holders the semaphore admits.
func (s *Semaphore) Size() int { return s.size }

// Acquire waits for one of the semaphore's slots, as Client.Lock does, and
// returns it as a Lock: release it with Unlock.
func (s *Semaphore) Acquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.c.Lock(ctx, s.name, s.options(opts)...)
}

// TryAcquire takes a slot if one is free now, and returns ErrWaitTimeout at
// once if none is.
func (s *Semaphore) TryAcquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.c.TryLock(ctx, s.name, s.options(opts)...)
}

// Holders returns how many slots are taken and how many acquirers wait.
func (s *Semaphore) Holders(ctx context.Context) (held, waiting int, err error) {
	info, err := s.c.Inspect(ctx, s.name)
	if err != nil || info == nil {
		return 0, 0, err
	}
	return len(info.Holders), len(info.Waiters), nil
}

func (s *Semaphore) check() error {
	if s.size < 1 {
		return fmt.Errorf("semaphore %s: size %d, want at least 1", quote(s.name), s.size)
	}
	return nil
}

func (s *Semaphore) options(opts []LockOption) []LockOption {
	all := make([]LockOption, 0, len(s.opts)+len(opts)+1)
	all = append(all, s.opts...)
	all = append(all, opts...)
	return append(all, Size(s.size))
}
