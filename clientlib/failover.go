package clientlib

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Failover of a held lock, in cluster mode. The server binds a hold to
// the connection that took it. When the leader goes away, its connections
// close; the new leader turns the holds bound to them into orphans (their
// deadline: the server's --restore-grace, or their own TTL deadline if
// sooner), and the first RENEW with a hold's key, from any connection,
// adopts it: binds it to that connection and restores its TTL. So when a
// bound hold's connection drops, the keeper dials the leader, sends RENEW
// and, if LOCKS then shows the hold bound to the new connection, keeps the
// lock there. A dropped connection on a leader that did not change still
// released the hold: RENEW answers NOTHELD and the loss is reported. The
// keeper never sends LOCK: a lock that is gone stays lost.

// errNotAttached: RENEW succeeded but the hold is still bound to another
// connection — the new leader has not orphaned its predecessor's holds
// yet, or the old connection's close is not applied yet. Retried.
var errNotAttached = errors.New("the hold is not bound to the new connection yet")

// recover re-attaches a bound hold whose connection dropped, retrying with
// backoff until the hold's TTL deadline (Options.FailoverTimeout from now
// for a hold without one). It returns true when the hold lives on a new
// connection, false when the keeper must return: the hold was lost (NOTHELD,
// or no leader re-attached it in time) or the keeper was stopped.
func (h *hold) recover() bool {
	h.mu.Lock()
	until := h.deadline
	h.mu.Unlock()
	if until.IsZero() {
		until = time.Now().Add(h.c.opt.FailoverTimeout)
	}
	ctx, cancel := context.WithDeadline(h.kctx, until)
	defer cancel()
	backoff := h.c.newRoute(until) // for its backoff only
	var last error = ErrConnClosed
	for {
		_, err, done := h.reattach(ctx, 0)
		switch {
		case !done || err == nil:
			return true
		case errors.Is(err, ErrLost) || h.kctx.Err() != nil:
			return false
		}
		last = err
		if !backoff.wait(ctx) {
			break
		}
	}
	if h.kctx.Err() != nil {
		return false // stopped (Unlock, Close), not lost
	}
	h.lose(fmt.Errorf("%w; not re-attached on a leader before the hold's deadline (last error: %v)", ErrConnClosed, last))
	return false
}

// reattach makes one attempt to re-attach the hold: RENEW (with TTL if
// ttl > 0) on a connection to the leader (onLeader's walk, bounded by
// ctx), then LOCKS to see that the hold is bound to that connection now,
// which then becomes the hold's. done is false, and nothing was sent, if
// the hold's connection is alive (another call re-attached it meanwhile).
// NOTHELD, or a hold that LOCKS no longer shows, marks the hold lost (the
// error is then its *LostError); other errors are for the caller to retry.
func (h *hold) reattach(ctx context.Context, ttl time.Duration) (got time.Duration, err error, done bool) {
	h.attachMu.Lock()
	defer h.attachMu.Unlock()
	if !h.conn().dead() {
		return 0, nil, false
	}
	c := h.c
	args := []any{"RENEW", h.name, h.currentKey()}
	if ttl > 0 {
		args = append(args, "TTL", durationMS(ttl))
	}
	var (
		id   int64
		sent time.Time
	)
	lc, res, err, _ := c.onLeader(ctx, time.Time{}, func(lc *lockConn) (any, error, bool) {
		timeout := replyTimeout(ctx, c.opt.ReadTimeout)
		v, err := lc.doHeld(timeout, "CLIENT", "ID")
		if err != nil {
			return nil, err, false
		}
		id, _ = v.(int64)
		sent = time.Now()
		res, err := lc.doHeld(timeout, args...)
		return res, err, false
	})
	if err != nil {
		if lc != nil {
			lc.close()
		}
		return 0, h.failed("RENEW", err), true
	}
	ms, _ := res.(int64)
	got = msDuration(ms)
	if err := h.boundTo(lc, id, replyTimeout(ctx, c.opt.ReadTimeout)); err != nil {
		lc.close()
		if errors.Is(err, ErrNotHeld) {
			h.lose(ErrNotHeld)
			if lerr := h.lostErr(); lerr != nil {
				return 0, lerr, true
			}
		}
		return 0, err, true
	}
	h.mu.Lock()
	if h.state != stateHeld {
		h.mu.Unlock()
		lc.close() // released or lost meanwhile: let the server release it
		return 0, fmt.Errorf("RENEW %s: %w", quote(h.name), ErrNotHeld), true
	}
	old := h.lc
	h.lc, h.dead = lc, lc.current().dead
	h.renewedLocked(sent, got)
	h.mu.Unlock()
	old.close()
	h.poke()
	return got, nil, true
}

// boundTo checks with LOCKS, on lc, that the hold is bound to the
// connection whose CLIENT ID is id. ErrNotHeld if the lock shows no hold
// with this fence; errNotAttached if it is bound elsewhere or orphaned.
func (h *hold) boundTo(lc *lockConn, id int64, timeout time.Duration) error {
	res, err := lc.doHeld(timeout, "LOCKS", "MATCH", globEscape(h.name), "COUNT", 1)
	if err != nil {
		return serverError("LOCKS", h.name, err)
	}
	_, fence := h.keyFence()
	hi, err := holderOf(res, h.name, fence)
	switch {
	case err != nil:
		return err // errNotAttached: a record too long to list it
	case hi == nil:
		return ErrNotHeld
	case hi.ClientID != id:
		return errNotAttached
	}
	return nil
}

// lostErr returns the *LostError once the hold is lost, else nil.
func (h *hold) lostErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// replyTimeout is how long to wait for one reply: d, or less if ctx ends
// sooner (but not less than 10 ms).
func replyTimeout(ctx context.Context, d time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl), 10*time.Millisecond))
	}
	return d
}
