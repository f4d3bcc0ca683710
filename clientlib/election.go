package clientlib

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoLeader: the election has no leader now.
var ErrNoLeader = errors.New("no leader")

// DefaultElectionTTL is the TTL of a leadership when the Election's options
// name none: a leader that hangs loses it within this time, a leader that
// crashes at once (its connection closes).
const DefaultElectionTTL = 10 * time.Second

// Election is leader election among candidates, the primary/secondary
// failover pattern: every candidate campaigns for the lock name; the one
// holding it leads until it resigns or loses it (crash, hang past the TTL,
// network failure), and the next candidate in FIFO order takes over. A
// leader must stop acting as one when its Lock's Lost channel closes, and
// should pass Fence() to the resources it writes to, so that a deposed
// leader's late writes can be refused.
//
// The candidate id is the hold's OWNER, which is how observers (Leader,
// Observe, LOCKS) know who leads. Ids must be unique among candidates.
type Election struct {
	c    *Client
	name string
	id   string
	opts []LockOption

	// mu guards lead.
	mu   sync.Mutex
	lead *Lock // the leadership Campaign won, until Resign
}

// Leader is an election's leader as observers see it.
type Leader struct {
	ID    string        // the candidate id; "" when there is no leader
	Fence uint64        // the leadership's fencing token
	Age   time.Duration // how long it has led
}

// Election returns candidate id's handle on the election name. An empty id
// becomes "<hostname>:<pid>:<random>". opts apply to Campaign's Lock;
// without TTL, DefaultElectionTTL is used.
func (c *Client) Election(name, id string, opts ...LockOption) *Election {
	if id == "" {
		id = defaultCandidateID()
	}
	return &Election{c: c, name: name, id: id, opts: opts}
}

func defaultCandidateID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// ID returns this candidate's id.
func (e *Election) ID() string { return e.id }

// Name returns the election's lock name.
func (e *Election) Name() string { return e.name }

// Campaign waits until this candidate leads and returns the leadership: a
// Lock whose Lost channel (and Context) says when leadership ends other than
// by Resign. If it already leads, it returns the current leadership. ctx
// aborts the wait. Run one Campaign at a time per Election.
func (e *Election) Campaign(ctx context.Context) (*Lock, error) {
	e.mu.Lock()
	if l := e.lead; l != nil && l.Err() == nil {
		e.mu.Unlock()
		return l, nil
	}
	e.lead = nil
	e.mu.Unlock()
	opts := append([]LockOption{TTL(DefaultElectionTTL)}, e.opts...)
	opts = append(opts, Owner(e.id), Size(1), exclusiveOwner())
	l, err := e.c.Lock(ctx, e.name, opts...)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.lead = l
	e.mu.Unlock()
	return l, nil
}

// Resign gives up the leadership won by Campaign, if any, so that the next
// candidate leads. It returns nil if this candidate does not lead, and the
// loss (a *LostError) if it had lost the leadership already.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	l := e.lead
	e.lead = nil
	e.mu.Unlock()
	if l == nil {
		return nil
	}
	return l.Unlock(ctx)
}

// Leader returns the current leader, or ErrNoLeader.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	info, err := e.c.Inspect(ctx, e.name)
	if err != nil {
		return Leader{}, err
	}
	if info == nil || len(info.Holders) == 0 {
		return Leader{}, ErrNoLeader
	}
	h := info.Holders[0]
	return Leader{ID: h.Owner, Fence: h.Fence, Age: h.Age}, nil
}

// Observe polls the election every interval (1 s if ≤ 0) and sends the
// leader each time it changes (a zero Leader when there is none), starting
// with the current one. The channel is closed when ctx is done or the
// Client is closed. Polling errors are retried at the next interval.
func (e *Election) Observe(ctx context.Context, interval time.Duration) <-chan Leader {
	if interval <= 0 {
		interval = time.Second
	}
	out := make(chan Leader)
	go func() {
		defer close(out)
		t := time.NewTicker(interval)
		defer t.Stop()
		var last Leader
		first := true
		for {
			l, err := e.Leader(ctx)
			switch {
			case errors.Is(err, redis.ErrClosed) || e.c.isClosed():
				return
			case err == nil || errors.Is(err, ErrNoLeader):
				if first || l.ID != last.ID || l.Fence != last.Fence {
					select {
					case out <- l:
					case <-ctx.Done():
						return
					}
					last, first = l, false
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return out
}
