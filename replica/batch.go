package replica

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// Group commit.
//
// Every Raft entry costs each node an append (an fsync), a network send
// and a future, whatever it holds. The batcher puts the ops that
// connections propose while earlier entries are being committed into one
// entry: at most MaxInflight entries are appended and not yet applied;
// while they are, proposals queue, and the next entry takes every queued
// op (up to maxBatchOps). When an entry is applied, the connections it
// answers send their next requests a client's turnaround later: the next
// entry waits for as many proposals as that (gather), at most a round,
// so that they share it rather than split into two. A lone
// proposal on an idle leader is appended at once, so one connection waits
// no longer than before; under load, entries grow instead of multiplying.
// Results return to each proposer in its op's place of the entry's
// []*Result. See docs/raft.md, Group commit.

// DefaultMaxInflight bounds the entries a leader has appended and not yet
// applied. One gathers the most ops per entry: on three nodes sharing a
// core it gave 1.3-1.7x the throughput of 2 and 1.5-1.8x that of 4 at 16
// and 64 connections, and no loss at 1 (docs/raft.md, Group commit).
const DefaultMaxInflight = 1

// gather lingers at most the last entry's round, within these bounds.
// Half a round (and a 1 ms cap) gathered less at 64 connections: 0.05
// entries per cycle against 0.03 (2/64, every connection's request in one
// entry) and 10-25 % more CPU per cycle (docs/raft.md, Group commit).
const (
	lingerMin = 50 * time.Microsecond
	lingerMax = 5 * time.Millisecond
)

// maxBatchOps bounds the ops of one entry.
const maxBatchOps = 512

// proposal is an op waiting for its entry to be applied.
type proposal struct {
	op       Op
	deadline time.Time // for raft to take it (zero: none)
	r        *Result
	err      error
	done     chan struct{}
}

func (p *proposal) finish(r *Result, err error) {
	p.r, p.err = r, err
	close(p.done)
}

// batcher turns queued proposals into entries: send appends them, in
// order, complete delivers their results in the same order (Raft applies
// entries in log order, so futures finish in it).
type batcher struct {
	raft applier

	mu     sync.Mutex
	queue  []*proposal
	closed bool          // the batcher stopped: proposals fail at once
	wake   chan struct{} // cap 1: the queue has proposals
	// expect is how many proposals the next entry should gather: the
	// connections the entry applied last answered or granted (they come
	// back, see answered) and the proposals queued when it was applied.
	expect int
	// round is how long the entry applied last took, from raft.Apply to
	// its result: gather lingers at most that long.
	round time.Duration

	linger *time.Timer // gather's, reused (send's goroutine only)
	// lingerMin and lingerMax bound gather's wait (the constants; tests
	// change them).
	lingerMin, lingerMax time.Duration

	slots     chan struct{} // cap MaxInflight: one per entry in flight
	inflight  chan flight   // cap MaxInflight, closed when send ends
	stop      chan struct{}
	closeOnce sync.Once
	ended     chan struct{} // closed when complete ends
}

// applier is what the batcher needs of raft (tests give it a fake).
type applier interface {
	Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture
}

type flight struct {
	f     raft.ApplyFuture
	ps    []*proposal
	start time.Time // when it was handed to raft
}

func newBatcher(r applier, maxInflight int) *batcher {
	return startBatcher(&batcher{raft: r, lingerMin: lingerMin, lingerMax: lingerMax}, maxInflight)
}

// startBatcher completes b (its raft and linger bounds set) and starts it.
func startBatcher(b *batcher, maxInflight int) *batcher {
	if maxInflight <= 0 {
		maxInflight = DefaultMaxInflight
	}
	b.wake = make(chan struct{}, 1)
	b.slots = make(chan struct{}, maxInflight)
	b.inflight = make(chan flight, maxInflight)
	b.stop, b.ended = make(chan struct{}), make(chan struct{})
	go b.send()
	go b.complete()
	return b
}

// propose queues op and waits for its result. timeout bounds the wait
// until raft takes op's entry (raft.ErrEnqueueTimeout: not appended); an
// op that cannot be encoded is refused at once, so that it fails alone
// rather than with the entry it would have shared.
func (b *batcher) propose(op Op, timeout time.Duration) (*Result, error) {
	if err := op.encodable(); err != nil {
		return nil, err
	}
	p := &proposal{op: op, done: make(chan struct{})}
	if timeout > 0 {
		p.deadline = time.Now().Add(timeout)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, raft.ErrRaftShutdown
	}
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-p.done
	return p.r, p.err
}

// send appends the queue's proposals as entries, taking an in-flight slot
// before it looks at the queue, so that an entry holds everything that
// arrived while the slots were taken.
func (b *batcher) send() {
	defer close(b.inflight)
	for {
		select {
		case <-b.wake:
		case <-b.stop:
			b.failQueued()
			return
		}
		for {
			select {
			case b.slots <- struct{}{}:
			case <-b.stop:
				b.failQueued()
				return
			}
			if !b.gather() {
				b.failQueued()
				return
			}
			ps, timeout := b.take()
			if len(ps) == 0 { // nothing queued, or every one it took had expired
				<-b.slots
				b.mu.Lock()
				more := len(b.queue) > 0
				b.mu.Unlock()
				if more {
					continue
				}
				break
			}
			ops := make([]*Op, len(ps))
			for i, p := range ps {
				ops[i] = &p.op
			}
			entry, err := encodeEntry(ops)
			if err != nil { // not for ops propose let in: encodable checked them
				for _, p := range ps {
					p.finish(nil, err)
				}
				<-b.slots
				continue
			}
			b.inflight <- flight{f: b.raft.Apply(entry, timeout), ps: ps, start: time.Now()}
		}
	}
}

// gather waits, at most a round, until the queue holds as many
// proposals as are expected back (expect): the connections whose results
// the last entry delivered send their next request within a round trip,
// and one entry for all of them costs each node one append, where two
// half-entries would cost two. An empty queue, or one already that long,
// goes at once, so a lone connection never waits. false: the batcher
// stops.
func (b *batcher) gather() bool {
	b.mu.Lock()
	n, want, wait := len(b.queue), b.expect, min(max(b.round, b.lingerMin), b.lingerMax)
	b.mu.Unlock()
	if n == 0 || n >= want {
		return true
	}
	if b.linger == nil {
		b.linger = time.NewTimer(wait)
	} else {
		b.linger.Reset(wait)
	}
	defer b.linger.Stop()
	for n < want {
		select {
		case <-b.wake:
		case <-b.linger.C:
			return true
		case <-b.stop:
			return false
		}
		b.mu.Lock()
		n = len(b.queue)
		b.mu.Unlock()
	}
	return true
}

// take removes up to maxBatchOps proposals from the head of the queue,
// failing those whose deadline has passed (never appended: safe to
// retry), and returns the others with the time left to the earliest of
// their deadlines (0: none), for raft.Apply.
func (b *batcher) take() ([]*proposal, time.Duration) {
	b.mu.Lock()
	n := min(len(b.queue), maxBatchOps)
	ps := b.queue[:n:n]
	if n == len(b.queue) {
		b.queue = nil
	} else {
		b.queue = b.queue[n:]
	}
	b.mu.Unlock()
	now := time.Now()
	var timeout time.Duration
	live := ps[:0]
	for _, p := range ps {
		switch {
		case p.deadline.IsZero():
		case !now.Before(p.deadline):
			p.finish(nil, raft.ErrEnqueueTimeout)
			continue
		case timeout == 0 || p.deadline.Sub(now) < timeout:
			timeout = p.deadline.Sub(now)
		}
		live = append(live, p)
	}
	return live, timeout
}

// failQueued ends the proposals never appended: the node stops.
func (b *batcher) failQueued() {
	b.mu.Lock()
	rest := b.queue
	b.queue, b.closed = nil, true
	b.mu.Unlock()
	for _, p := range rest {
		p.finish(nil, raft.ErrRaftShutdown)
	}
}

// complete waits for each entry in flight, in order, and hands each
// proposal its result.
func (b *batcher) complete() {
	defer close(b.ended)
	for fl := range b.inflight {
		err := proposeErr(fl.f.Error())
		var rs []*Result
		if err == nil {
			switch r := fl.f.Response().(type) {
			case []*Result:
				rs = r
			case *Result:
				err = r.Err // the entry could not be decoded
			}
			if err == nil && len(rs) != len(fl.ps) {
				err = fmt.Errorf("replica: an entry of %d ops gave %d results", len(fl.ps), len(rs))
			}
		}
		back := len(fl.ps)
		if err == nil {
			back = answered(rs)
		}
		b.mu.Lock()
		b.expect = min(back+len(b.queue), maxBatchOps)
		b.round = time.Since(fl.start)
		b.mu.Unlock()
		for i, p := range fl.ps {
			if err != nil {
				p.finish(nil, err)
			} else {
				p.finish(rs[i], nil)
			}
		}
		<-b.slots
	}
}

// answered counts the connections an entry's results let go on: every
// op answered now (not a request left waiting in a lock's queue) and
// every waiter its changes granted. They are the ones expected back with
// a request; a pile of waiting LOCKs is expected back with nothing.
func answered(rs []*Result) int {
	n := 0
	for _, r := range rs {
		if r.Outcome != locktable.Queued {
			n++
		}
		n += len(r.Events.Grants)
	}
	return n
}

// close stops the batcher: what is queued fails (never appended), what is
// in flight is waited for. It must run while raft still runs: raft
// answers every future of a running node (applied, or ErrLeadershipLost
// once a leader without a quorum steps down), but can drop the future of
// an entry it committed and had not applied when it shuts down
// (hashicorp/raft#498), and then nothing would ever answer it. A second
// call does nothing.
func (b *batcher) close() {
	b.closeOnce.Do(func() { close(b.stop) })
	<-b.ended
}

// proposeErr maps raft's errors to the package's: not appended
// (ErrNotLeader: safe to send elsewhere) or appended with an unknown
// outcome.
func proposeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrOutcomeUnknown
	}
	return err
}
