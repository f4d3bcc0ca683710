package clientlib

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Re-queueing a LOCK after a leader change, in cluster mode.
//
// A LOCK whose reply does not come has one of three fates on the server:
// it was never applied, it queued a waiter, or it was granted (a grant
// committed just before the leader died, its key never delivered). The
// new leader's takeover entry drops every waiter of the old leader and
// turns its connections' holds into orphans, which stay until
// --restore-grace (or their TTL deadline). A waiter the client merely
// re-sent would then queue behind its own orphan until the grace ran out.
//
// So in cluster mode every Lock and TryLock call sends its request with
// an OWNER unique to the call ("clientlib:" and 16 random hex digits,
// unless the caller gave one). The decision rule:
//
//   - MOVED, CLUSTERDOWN, "session ended", "shutting down": the request
//     was not applied; it is sent again (onLeader, as before).
//   - The connection broke (EOF, reset, a reply timeout) while the
//     request was in flight or waiting, or the reply was TRYAGAIN: the
//     outcome is unknown. The same request (same OWNER; a Wait shortened
//     by the time spent) is sent again on a connection to the leader.
//     The server resolves it in its log, in order: an entry of the old
//     leader is either applied before the new leader's takeover entry or
//     never, and the re-sent request is applied after it. If the earlier
//     request was granted, the hold with this OWNER exists and the re-sent
//     one re-enters it at once (same key and fence, count + 1, still an
//     orphan); if not, nothing holds that OWNER and the re-sent request
//     queues (at the back) or is granted as any new one.
//   - A key that comes back after an unknown outcome is settled (settle):
//     RENEW adopts an orphan onto this connection, LOCKS checks that the
//     hold is bound to it (or detached), and UNLOCK counts the re-entries
//     back down to one. Only then is the Lock returned. A key that turns
//     out not to hold the lock any more (the earlier connection's close
//     released it) is asked for again.
//   - Giving up with the outcome still unknown (no leader within
//     Options.FailoverTimeout, the call's ctx, Client.Close, or more than
//     maxResends unknown outcomes in a row, which are sent again at once
//     the first time and then after a backoff of up to 500 ms, within
//     FailoverTimeout of the first): before the error is returned,
//     a TRYLOCK with the call's OWNER, sent in the background until
//     FailoverTimeout, re-enters a hold of the call if there is one, and
//     UNLOCKs it until it is gone. If no leader answers that either, the
//     orphan expires with --restore-grace or its TTL.
//
// So one Lock call never ends with two holds, and a hold it got is either
// returned or released. With an Owner of the caller's, the OWNER is not
// the call's alone (other calls with the same owner re-enter the same
// hold, and their counts cannot be told apart), so an unknown outcome is
// returned as the error it is, except for Election.Campaign, whose
// candidate id is unique to one campaign at a time.

// maxResends bounds how many times one call sends its request again after
// an unknown outcome (each after a leader change or a dropped connection).
const maxResends = 16

// resender paces the sends after unknown outcomes: the first at once, the
// next ones after a backoff (as between rounds over the cluster), all
// within Options.FailoverTimeout of the first unknown outcome.
type resender struct {
	c *Client
	r *route // nil until the first unknown outcome
}

func (c *Client) newResend() *resender { return &resender{c: c} }

// next reports whether to send again, waiting first unless this is the
// first time. It returns false when ctx ended, the Client was closed or
// FailoverTimeout passed since the first unknown outcome.
func (s *resender) next(ctx context.Context) bool {
	if s.r == nil {
		s.r = s.c.newRoute(time.Now().Add(s.c.opt.FailoverTimeout))
		return s.r.alive(ctx)
	}
	return s.r.wait(ctx)
}

// errGone: settle found that the key no longer holds the lock.
var errGone = errors.New("the re-entered hold was released meanwhile")

// newCallOwner returns an OWNER unique to one Lock call.
func newCallOwner() string {
	var b [8]byte
	rand.Read(b[:])
	return "clientlib:" + hex.EncodeToString(b[:])
}

// exclusiveOwner marks the Owner as this call's alone: see requeue.go.
func exclusiveOwner() LockOption { return func(c *lockConfig) { c.exclusive = true } }

// acquireArgs builds a LOCK or TRYLOCK of name for cfg, with owner (if
// any). A Wait is shortened by the time since start (at least 1 ms).
func acquireArgs(op, name string, try bool, cfg lockConfig, owner string, start time.Time) []any {
	args := appendLockOptions([]any{op, name}, try, cfg, owner, max(cfg.wait-time.Since(start), time.Millisecond))
	if cfg.size > 0 && !cfg.shared { // a shared lock has size 1; SHARED with SIZE is refused
		args = append(args, "SIZE", cfg.size)
	}
	return args
}

// appendLockOptions appends the options LOCK, TRYLOCK, MLOCK and MTRYLOCK
// share: cfg's TTL, WAIT (wait, for a positive cfg.wait; none for a
// try), owner, DETACH, SHARED and LOCKDELAY.
func appendLockOptions(args []any, try bool, cfg lockConfig, owner string, wait time.Duration) []any {
	if cfg.ttl > 0 {
		args = append(args, "TTL", durationMS(cfg.ttl))
	}
	if !try && cfg.hasWait {
		w := int64(0)
		if cfg.wait > 0 {
			w = durationMS(wait)
		}
		args = append(args, "WAIT", w)
	}
	if owner != "" {
		args = append(args, "OWNER", owner)
	}
	if cfg.detach {
		args = append(args, "DETACH")
	}
	if cfg.shared {
		args = append(args, "SHARED")
	}
	if cfg.hasLockDelay {
		args = append(args, "LOCKDELAY", lockDelayMS(cfg.lockDelay))
	}
	return args
}

// lockDelayMS is LOCKDELAY's argument for d: 0 for none, else whole
// milliseconds rounded up.
func lockDelayMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return durationMS(d)
}

// outcomeUnknown reports whether err leaves it unknown whether the request
// was applied: a TRYAGAIN reply, or a broken connection or reply timeout
// (not the call's ctx, not a closed Client).
func outcomeUnknown(ctx context.Context, err error) bool {
	if err == nil || err == redis.Nil || ctx.Err() != nil {
		return false
	}
	if msg, ok := replyText(err); ok {
		return strings.HasPrefix(msg, "TRYAGAIN")
	}
	return !errors.Is(err, redis.ErrClosed) && !errors.Is(err, ErrClosed)
}

// settle makes the hold of name with key, got on lc after an unknown
// outcome, one hold bound to lc (or detached) with a count of one: RENEW
// adopts it if it is an orphan, LOCKS shows its binding and count, and
// UNLOCK counts down the re-entries of this call's earlier requests. It
// returns errGone if the key no longer holds the lock; errNotAttached if
// it stayed bound to another connection until Options.FailoverTimeout (an
// earlier connection of this call, whose close the leader has not applied
// yet); the ctx's error; or another error (a broken connection, an error
// reply), after which the caller sends its request again.
func (c *Client) settle(ctx context.Context, lc *lockConn, name, key string) error {
	fence, err := parseFence(key)
	if err != nil {
		return err
	}
	until := time.Now().Add(c.opt.FailoverTimeout)
	backoff := c.newRoute(until)
	to := c.opt.ReadTimeout
	v, err := lc.doHeld(to, "CLIENT", "ID")
	if err != nil {
		return err
	}
	id, _ := v.(int64)
	for i := 0; i < 64; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := lc.doHeld(to, "RENEW", name, key); err != nil {
			if errors.Is(serverError("RENEW", name, err), ErrNotHeld) {
				return errGone
			}
			return err
		}
		v, err := lc.doHeld(to, "LOCKS", "MATCH", globEscape(name), "COUNT", 1)
		if err != nil {
			return err
		}
		hi, err := holderOf(v, name, fence)
		if err != nil {
			return err
		}
		switch {
		case hi == nil:
			return errGone
		case !hi.Detached && hi.ClientID != id:
			if !backoff.wait(ctx) {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errNotAttached
			}
		case hi.Count > 1:
			if _, err := lc.doHeld(to, "UNLOCK", name, key); err != nil {
				if errors.Is(serverError("UNLOCK", name, err), ErrNotHeld) {
					return errGone
				}
				return err
			}
		default:
			return nil
		}
	}
	return errNotAttached
}

// holderOf finds, in a LOCKS reply, the holder of name with fence (nil if
// there is none). errNotAttached when the lock's record lists only some of
// its holders (over the server's reply bound) and not that one: whether it
// is there cannot be told.
func holderOf(v any, name string, fence uint64) (*HolderInfo, error) {
	list, _ := v.([]any)
	for _, e := range list {
		li, err := parseLockInfo(e)
		if err != nil {
			return nil, fmt.Errorf("LOCKS: %w", err)
		}
		if li.Name != name {
			continue
		}
		for i := range li.Holders {
			if li.Holders[i].Fence == fence {
				return &li.Holders[i], nil
			}
		}
		if li.MoreHolders > 0 {
			return nil, errNotAttached
		}
	}
	return nil, nil
}

// releaseKey releases the hold of name with key, whatever its count,
// within Options.ReadTimeout: UNLOCK by key until NOTHELD.
func (c *Client) releaseKey(name, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opt.ReadTimeout)
	defer cancel()
	for i := 0; i < maxResends+2; i++ {
		if _, err := c.poolDo(ctx, time.Time{}, false, "UNLOCK", name, key); err != nil {
			return
		}
	}
}

// releaseCall releases, in the background, the hold a call whose outcome
// stayed unknown may have: a TRYLOCK with the call's owner re-enters it
// (or takes the lock if it is free), and UNLOCK counts it down until it
// is gone; closing the connection releases what is left. Nobody waits
// for it, so each reply may take the time left (not only
// Options.ReadTimeout: the call may have failed because replies are slow).
// It gives up after Options.FailoverTimeout or at Close: the hold, if
// any, then expires (--restore-grace, its TTL).
func (c *Client) releaseCall(name string, cfg lockConfig, owner string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.keepers.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.keepers.Done()
		ctx, cancel := context.WithTimeout(context.Background(), c.opt.FailoverTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		args := acquireArgs("TRYLOCK", name, true, cfg, owner, time.Time{})
		lc, res, err, aborted := c.onLeader(ctx, time.Time{}, func(lc *lockConn) (any, error, bool) {
			return lc.do(ctx, 0, args...)
		})
		if lc == nil {
			return
		}
		defer lc.close()
		key, ok := res.(string)
		if aborted || err != nil || !ok {
			return
		}
		for i := 0; i < maxResends+2; i++ {
			if _, err, aborted := lc.do(ctx, 0, "UNLOCK", name, key); err != nil || aborted {
				return
			}
		}
	}()
}
