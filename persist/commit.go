package persist

import (
	"sync"
	"time"

	"github.com/relock/relock/locktable"
)

// round is one group commit: everyone who called Sync before it started
// waits on done and then reads err.
type round struct {
	done chan struct{}
	err  error
}

func newRound() *round { return &round{done: make(chan struct{})} }

// committer runs the store's commit loop: in mode Always it commits when
// kicked, grouping every Sync that arrived meanwhile into one write-ahead
// log record (one fdatasync); in mode EverySec once a second.
type committer struct {
	s *Store

	// mu guards next and stopped.
	mu      sync.Mutex
	next    *round
	stopped bool

	kick   chan struct{} // buffered(1)
	quit   chan struct{}
	exited chan struct{}

	// roundMu serializes commit rounds: the loop's, and SyncHere's on
	// its callers' goroutines. It guards the fields below.
	roundMu     sync.Mutex
	finished    bool // stop ran its final round: nothing more is written
	buf         []locktable.Change
	lastFence   uint64
	needRewrite bool // a round failed: the next one rewrites everything
}

func (c *committer) start(s *Store) {
	c.s = s
	c.next = newRound()
	c.kick = make(chan struct{}, 1)
	c.quit = make(chan struct{})
	c.exited = make(chan struct{})
	go c.loop()
}

// Sync returns once every change journaled before the call is committed
// (mode Always). In other modes it returns at once. Once Close has begun it
// returns ErrClosed in every mode: the change may miss the final state, so
// the caller must not acknowledge it.
func (s *Store) Sync() error {
	if s.mode != Always {
		if s.closing.Load() {
			return ErrClosed
		}
		return nil
	}
	c := &s.c
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return ErrClosed
	}
	r := c.next
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	<-r.done
	return r.err
}

func (c *committer) loop() {
	defer close(c.exited)
	var tick <-chan time.Time
	if c.s.mode == EverySec {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-c.kick:
		case <-tick:
		case <-c.quit:
			c.commitRound(false)
			return
		}
		c.commitRound(false)
	}
}

// commitRound takes the pending round, drains the journal and commits it.
// held: see wal.sync.
func (c *committer) commitRound(held bool) error {
	c.roundMu.Lock()
	defer c.roundMu.Unlock()
	c.mu.Lock()
	r := c.next
	c.next = newRound()
	c.mu.Unlock()
	if c.finished {
		r.err = ErrClosed
	} else {
		r.err = c.write(held)
	}
	close(r.done)
	return r.err
}

// Pending reports whether, in mode Always, the table has changes that are
// not yet committed: a reply that depends on the table's state must wait
// for a commit (Sync or SyncHere) first, so that no crash undoes what it
// revealed. Always false in other modes and once Close has begun.
func (s *Store) Pending() bool {
	return s.mode == Always && !s.closing.Load() && s.table != nil && s.table.JournalSeq() > s.durable.Load()
}

// SyncHere is Sync committing on the caller's goroutine instead of the
// commit loop's, for a caller that commits for many requests at once and
// must not park (an event loop: one fdatasync per round of requests, as
// Redis does for appendfsync always). Other goroutines' Syncs pending
// meanwhile are answered by the same round.
func (s *Store) SyncHere() error {
	if s.mode != Always {
		return s.Sync()
	}
	c := &s.c
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return ErrClosed
	}
	return c.commitRound(true)
}

func (c *committer) write(held bool) error {
	s := c.s
	// Read before the drain: every change up to seq is drained below.
	seq := s.table.JournalSeq()
	c.buf = s.table.DrainJournal(c.buf[:0])
	// Read after the drain: at least every drained fence.
	fence := s.table.LastFence()
	if len(c.buf) == 0 && fence == c.lastFence && !c.needRewrite {
		s.durable.Store(seq)
		return nil
	}
	var written int64
	var err error
	began := time.Now()
	if c.needRewrite {
		// A round failed: its changes may be neither in the log nor in
		// bbolt. Write the whole state to bbolt and start a new log.
		if err = s.rewrite(s.table.Snapshot(), fence); err == nil {
			err = s.wal.reset()
		}
	} else {
		var n int
		n, err = s.wal.append(c.buf, fence)
		written = int64(n)
		if s.fault != nil && err == nil {
			err = s.fault("before-fsync")
		}
		if err == nil {
			err = s.wal.sync(held)
		}
		if err == nil && s.wal.size >= checkpointSize {
			err = s.checkpoint()
		}
	}
	clear(c.buf)
	if err != nil {
		s.errs.Add(1)
		s.lastErr.Store(err.Error())
		c.needRewrite = true
		return err
	}
	if s.fault != nil {
		s.fault("after-fsync")
	}
	c.needRewrite = false
	c.lastFence = fence
	s.durable.Store(seq)
	s.commitNs.Add(int64(time.Since(began)))
	s.commits.Add(1)
	s.bytes.Add(written)
	s.lastCommit.Store(time.Now().UnixMicro())
	return nil
}

// stop runs a final round, stops the loop and makes Sync return ErrClosed.
func (c *committer) stop() error {
	if c.s == nil {
		return nil // never started (mode No)
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	final := c.next
	c.mu.Unlock()
	close(c.quit)
	<-c.exited
	c.roundMu.Lock()
	c.finished = true
	c.roundMu.Unlock()
	// The loop's last round was final or a later one; either way every
	// change journaled before stop is committed.
	select {
	case <-final.done:
		return final.err
	default:
		return nil
	}
}
