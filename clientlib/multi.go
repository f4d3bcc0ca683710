package clientlib

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// LockMany waits until it is granted every lock of names at once and
// returns them, one *Lock per name in the order of names: all of them, or
// none. It is one MLOCK: the request joins every name's queue at one
// instant and is granted when it heads all of them, so it never holds part
// of its names while it waits, and two LockMany calls never deadlock
// whatever the order of their names.
//
// The options are those of Lock and apply to every name; Size above 1 is
// refused (a multi-lock takes size-1 locks). With Detach and no Owner the
// MLOCK carries an OWNER unique to the call, so that detached holds
// granted as the call failed (its ctx ended, or ReadTimeout ran out for
// TryLockMany) are released in the background, as for Lock (see Detach). Wait, a ctx cancel and its
// deadline end the wait as for Lock (ErrWaitTimeout, or an error wrapping
// ctx.Err()), with nothing held. ErrDeadlock (a *ServerError whose reply
// names the locks of the cycle) when waiting would close a cycle of waits — this
// Client's connection (or Owner) holds a lock that a holder of one of
// names waits for; nothing is held then either. Other errors as for
// MLOCK: a name given twice, more names than the server's --max-multi
// (ErrLimit), a name that is a semaphore (ErrSizeMismatch).
//
// Each returned Lock is its own hold (own key and fence), renewed by its
// own key and released by its own Unlock, in any order. They share one
// connection, the one their MLOCK went on, since the server binds a hold
// to its connection: that connection goes back to the Client only when the
// last of them has been unlocked, and when it closes (a network failure,
// a server restart, CLIENT KILL) every one of them is reported lost. A
// Lock of a LockMany cannot Upgrade while it shares the connection.
//
// With Owner, a name that this Client already holds with the same owner
// is refused (re-enter it with Lock). In cluster mode a LockMany whose
// outcome is unknown (the connection broke while waiting, a leader change)
// returns the error and is not sent again: holds it may have got on the
// old leader are orphans that expire (their TTL, --restore-grace).
func (c *Client) LockMany(ctx context.Context, names []string, opts ...LockOption) ([]*Lock, error) {
	return c.acquireMany(ctx, names, false, opts)
}

// TryLockMany takes every lock of names if all of them can be granted now
// (each free, nobody queued for it), and returns ErrWaitTimeout (and nil)
// at once if not, holding none. See LockMany.
func (c *Client) TryLockMany(ctx context.Context, names []string, opts ...LockOption) ([]*Lock, error) {
	return c.acquireMany(ctx, names, true, opts)
}

func (c *Client) acquireMany(ctx context.Context, names []string, try bool, opts []LockOption) ([]*Lock, error) {
	cfg := lockConfig{autoRenew: true}
	for _, o := range opts {
		o(&cfg)
	}
	op := "MLOCK"
	if try {
		op = "MTRYLOCK"
	}
	label := manyLabel(names)
	if err := checkMany(op, label, names, cfg); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, label, err)
	}
	if cfg.owner != "" {
		for _, name := range names {
			c.mu.Lock()
			h := c.owned[ownerKey{name, cfg.owner}]
			c.mu.Unlock()
			if h != nil && h.held() {
				return nil, fmt.Errorf("%s %s: %s is held already with owner %s: re-enter it with Lock", op, label, quote(name), quote(cfg.owner))
			}
		}
	}
	// Watch every name's events while the request is under way; the
	// references go to the holds, or are dropped on the way out.
	ready := make([]<-chan struct{}, len(names))
	for i, name := range names {
		ready[i] = c.loss.want(name)
	}
	watching := true
	defer func() {
		if watching {
			for _, name := range names {
				c.loss.unwant(name)
			}
		}
	}()
	// A detached request carries an OWNER unique to the call, so that
	// holds it may have got can be found and released after an unknown
	// outcome (as for Lock: see Detach).
	wireOwner, callOwned := cfg.owner, false
	if cfg.owner == "" && cfg.detach {
		wireOwner, callOwned = newCallOwner(), true
	}
	args := manyArgs(op, names, try, cfg, wireOwner)
	var timeout time.Duration
	if try {
		timeout = c.opt.ReadTimeout
	}
	// On the leader: an MLOCK answered MOVED or CLUSTERDOWN was not
	// queued, so onLeader may send it again elsewhere. Any other outcome
	// is final (see LockMany).
	lc, res, err, aborted := c.onLeader(ctx, c.retryUntil(), func(lc *lockConn) (any, error, bool) {
		return lc.do(ctx, timeout, args...)
	})
	granted := time.Now()
	if lc == nil {
		if serr := serverError(op, "", err); isReply(serr) && ctx.Err() == nil {
			return nil, serr
		}
		return nil, c.manyCtxError(ctx, op, label, err)
	}
	if aborted {
		lc.close() // the server drops the wait, or releases the bound holds
		if keys, ok := res.([]any); ok && err == nil && cfg.detach {
			// Granted as the wait was aborted: detached holds survive
			// the closed connection; release them by key.
			for i, k := range keys {
				if key, ok := k.(string); ok && i < len(names) {
					c.releaseKey(names[i], key)
				}
			}
		} else if callOwned {
			// Detached holds may have been granted whose keys were on
			// their way: find them by the call's OWNER.
			c.releaseCallMany(names, cfg, wireOwner)
		}
		return nil, c.manyCtxError(ctx, op, label, context.Canceled)
	}
	if err == redis.Nil {
		c.putLockConn(lc)
		return nil, ErrWaitTimeout
	}
	if err != nil {
		serr := serverError(op, "", err)
		if isReply(serr) {
			c.putLockConn(lc)
			return nil, serr
		}
		lc.close()
		if callOwned && outcomeUnknown(ctx, err) {
			c.releaseCallMany(names, cfg, wireOwner) // as for an abort
		}
		return nil, c.manyCtxError(ctx, op, label, err)
	}
	keys, fences, perr := parseKeys(res, len(names))
	if perr != nil {
		lc.close() // releases what the reply may have granted
		return nil, fmt.Errorf("%s %s: %w", op, label, perr)
	}
	holds := make([]*hold, len(names))
	for i, name := range names {
		holds[i] = c.newHold(name, keys[i], fences[i], cfg, lc, granted)
	}
	lc.share(len(holds))
	if !c.registerAll(holds) {
		for _, h := range holds {
			h.cancel(ErrClosed)
		}
		lc.close()
		return nil, ErrClosed
	}
	locks := make([]*Lock, len(holds))
	var unsure []*hold
	for i, h := range holds {
		released, uns := c.loss.attach(h)
		if released != "" {
			h.releasedBy(released) // released while the reply travelled
		} else if uns {
			unsure = append(unsure, h)
		}
		locks[i] = &Lock{h: h}
	}
	watching = false
	// Return once every name's events are watched (or the server has
	// none), as Lock does, waiting at most ReadTimeout in all; then have
	// the holds checked whose events may have been missed (see Lock).
	c.waitReady(ctx, ready)
	for _, h := range unsure {
		h.checkSoon()
	}
	return locks, nil
}

// waitReady waits until every channel of ready is closed, within ctx and
// Options.ReadTimeout.
func (c *Client) waitReady(ctx context.Context, ready []<-chan struct{}) {
	timer := time.NewTimer(c.opt.ReadTimeout)
	defer timer.Stop()
	for _, r := range ready {
		select {
		case <-r:
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		}
	}
}

// checkMany validates a LockMany's names and options before anything is
// sent.
func checkMany(op, label string, names []string, cfg lockConfig) error {
	if len(names) == 0 {
		return fmt.Errorf("%s: no lock names", op)
	}
	for _, name := range names {
		if name == "" {
			return fmt.Errorf("%s %s: empty lock name", op, label)
		}
	}
	switch {
	case cfg.ttl < 0:
		return fmt.Errorf("%s %s: negative TTL", op, label)
	case cfg.size > 1:
		return fmt.Errorf("%s %s: a multi-lock takes size-1 locks (Size %d)", op, label, cfg.size)
	case cfg.hasWait && cfg.wait < 0:
		return fmt.Errorf("%s %s: negative wait", op, label)
	case cfg.hasLockDelay && cfg.lockDelay < 0:
		return fmt.Errorf("%s %s: negative lock-delay", op, label)
	}
	return nil
}

// manyArgs builds an MLOCK or MTRYLOCK of names for cfg, with owner (if
// any).
func manyArgs(op string, names []string, try bool, cfg lockConfig, owner string) []any {
	args := make([]any, 0, len(names)+12)
	args = append(args, op, len(names))
	for _, name := range names {
		args = append(args, name)
	}
	return appendLockOptions(args, try, cfg, owner, cfg.wait)
}

// releaseCallMany is releaseCall for each name of a LockMany whose
// outcome is unknown: the holds it got, if any, have the call's owner.
func (c *Client) releaseCallMany(names []string, cfg lockConfig, owner string) {
	for _, name := range names {
		c.releaseCall(name, cfg, owner)
	}
}

// parseKeys reads MLOCK's reply: n keys, and their fences.
func parseKeys(res any, n int) ([]string, []uint64, error) {
	list, ok := res.([]any)
	if !ok || len(list) != n {
		return nil, nil, fmt.Errorf("unexpected reply %v", res)
	}
	keys := make([]string, n)
	fences := make([]uint64, n)
	for i, v := range list {
		key, ok := v.(string)
		fence, err := parseFence(key)
		if !ok || err != nil {
			return nil, nil, fmt.Errorf("unexpected reply %v", res)
		}
		keys[i], fences[i] = key, fence
	}
	return keys, fences, nil
}

// registerAll is register for the holds of one LockMany: all of them, or
// none if the Client was closed.
func (c *Client) registerAll(hs []*hold) bool {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return false
	}
	for _, h := range hs {
		if !c.register(h) {
			// Closed meanwhile: Close ends the holds registered before;
			// the caller ends the rest.
			return false
		}
	}
	return true
}

// manyLabel names the locks of a LockMany in messages: 'a', 'b'.
func manyLabel(names []string) string {
	const most = 8
	q := make([]string, 0, min(len(names), most)+1)
	for i, name := range names {
		if i == most {
			q = append(q, fmt.Sprintf("and %d more", len(names)-most))
			break
		}
		q = append(q, quote(name))
	}
	return strings.Join(q, ", ")
}

// manyCtxError is ctxError for a LockMany.
func (c *Client) manyCtxError(ctx context.Context, op, label string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s: %w", op, label, cerr)
	}
	if c.isClosed() || errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%s %s: %w", op, label, err)
}
