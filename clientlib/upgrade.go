package clientlib

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// upgradeSlice is the longest one UPGRADE request waits when the caller's
// ctx can be cancelled: a waiting UPGRADE cannot be called off without
// closing the hold's connection, which would release the shared hold, so
// Upgrade waits in slices and looks at ctx between them.
const upgradeSlice = 500 * time.Millisecond

// Upgrade makes a shared hold exclusive, atomically: no other writer gets
// the lock in between. It waits, ahead of every queued request, until the
// hold is the lock's only one. On success the Lock has a new key and a
// larger fence (Key, Fence; the old key holds nothing any more) and keeps
// its connection, TTL, auto-renewal and loss detection.
//
// The wait is bounded by opts' Wait (the only option Upgrade reads) and
// by ctx. When it ends without the upgrade the shared hold is kept,
// unchanged: ErrWaitTimeout when Wait (or --default-wait) ran out, else
// an error wrapping ctx's.
//
// A wait the ctx can cancel is sent as UPGRADEs of at most 500 ms each,
// every one with its WAIT, so that a cancel is noticed within that time:
// a waiting UPGRADE cannot be called off without closing the hold's
// connection, which would release the shared hold. The server's
// --default-wait therefore applies only when Upgrade has neither Wait nor
// a ctx that can end (context.Background, context.TODO): then one UPGRADE
// without WAIT is sent. Unlike Lock, an Upgrade without Wait under a ctx
// that can be cancelled but has no deadline (signal.NotifyContext, a
// request's ctx) waits until that ctx ends, whatever --default-wait says
// (the server does not tell its --default-wait): give it Wait to bound
// it.
//
// Errors: ErrDeadlock (a *ServerError) when another upgrade of the lock
// waits — both would wait forever; the shared hold is kept, and releasing
// it lets the other upgrade through. A *LostError matching ErrNotHeld
// when the shared hold ended while waiting (expiry, FORCEUNLOCK): the Lock
// is lost and Lost is closed. An error if the hold is exclusive already,
// or the Lock was unlocked or lost, or while it shares its connection
// with other held Locks of one LockMany (see LockMany).
func (l *Lock) Upgrade(ctx context.Context, opts ...LockOption) error {
	h := l.h
	var cfg lockConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.hasWait && cfg.wait < 0 {
		return fmt.Errorf("UPGRADE %s: negative wait", quote(h.name))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("UPGRADE %s: %w", quote(h.name), err)
	}
	h.opMu.lock(context.Background())
	defer h.opMu.unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if !l.Shared() {
		return fmt.Errorf("UPGRADE %s: the hold is exclusive already", quote(h.name))
	}
	if h.conn().shared() {
		// A waiting UPGRADE would keep the other holds' RENEWs and
		// UNLOCKs waiting behind it on the connection they share.
		return fmt.Errorf("UPGRADE %s: the hold shares its connection with other holds of a LockMany; release them first, or take this lock with Lock", quote(h.name))
	}
	var until time.Time // zero: no limit of the caller's
	if cfg.hasWait && cfg.wait > 0 {
		until = time.Now().Add(cfg.wait)
	}
	if dl, ok := ctx.Deadline(); ok && (until.IsZero() || dl.Before(until)) {
		until = dl
	}
	h.upgrading.Store(true)
	defer h.upgrading.Store(false)
	for {
		args := []any{"UPGRADE", h.name, h.currentKey()}
		var wait time.Duration // 0: WAIT 0 (no limit)
		if !until.IsZero() {
			if wait = time.Until(until); wait <= 0 {
				return l.upgradeWaitEnded(ctx)
			}
		}
		sliced := ctx.Done() != nil && (wait == 0 || wait > upgradeSlice)
		if sliced {
			wait = upgradeSlice
		}
		if wait > 0 || cfg.hasWait {
			args = append(args, "WAIT", int64(0))
			if wait > 0 {
				args[len(args)-1] = durationMS(wait)
			}
		}
		var timeout time.Duration // 0: none (the server's wait, if any, bounds it)
		if wait > 0 {
			timeout = wait + h.c.opt.ReadTimeout
		}
		res, err := h.doWait(timeout, args...)
		switch {
		case err == redis.Nil:
			if ctx.Err() != nil || !sliced || (!until.IsZero() && !time.Now().Before(until)) {
				return l.upgradeWaitEnded(ctx)
			}
			continue // a slice ran out: wait on
		case err != nil:
			serr := serverError("UPGRADE", h.name, err)
			switch {
			case errors.Is(serr, ErrNotHeld):
				h.lose(ErrNotHeld)
				return l.Err()
			case isReply(serr):
				return serr // ErrDeadlock among them
			}
			return h.failed("UPGRADE", err)
		}
		key, _ := res.(string)
		fence, ferr := parseFence(key)
		if ferr != nil {
			return fmt.Errorf("UPGRADE %s: unexpected reply %v", quote(h.name), res)
		}
		h.c.loss.upgraded(h, key, fence)
		h.poke()
		return nil
	}
}

// upgradeWaitEnded is Upgrade's error when its wait ran out or its ctx
// ended: the shared hold is kept.
func (l *Lock) upgradeWaitEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("UPGRADE %s: %w", quote(l.h.name), err)
	}
	return ErrWaitTimeout
}

// Downgrade makes an exclusive hold shared, keeping its key and fence; the
// shared requests at the head of the lock's queue are granted at once. A
// *LostError matching ErrNotHeld if the hold is gone (the Lock is then
// lost); an error if it is shared already (or, on the server, a semaphore's
// hold). Like Unlock it waits at most Options.ReadTimeout once sent; ctx is
// checked before sending.
func (l *Lock) Downgrade(ctx context.Context) error {
	h := l.h
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("DOWNGRADE %s: %w", quote(h.name), err)
	}
	h.opMu.lock(context.Background())
	defer h.opMu.unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if l.Shared() {
		return fmt.Errorf("DOWNGRADE %s: the hold is shared already", quote(h.name))
	}
	if _, err := h.do(h.c.opt.ReadTimeout, "DOWNGRADE", h.name, h.currentKey()); err != nil {
		serr := serverError("DOWNGRADE", h.name, err)
		if isReply(serr) && !errors.Is(serr, ErrNotHeld) {
			return serr
		}
		return h.failed("DOWNGRADE", err)
	}
	h.mu.Lock()
	h.shared = true
	h.mu.Unlock()
	return nil
}

// doWait sends a command that may wait on the server (UPGRADE) about the
// hold, waiting at most timeout for the reply (0: no limit). It goes on
// the hold's connection; a detached hold whose connection broke sends it
// through the pool by key. Like doHeld it is not cancellable.
func (h *hold) doWait(timeout time.Duration, args ...any) (any, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if lc := h.conn(); !lc.dead() {
		return lc.rdb.Do(ctx, args...).Result()
	}
	if !h.detached {
		return nil, ErrConnClosed
	}
	return h.c.poolDo(ctx, time.Time{}, false, args...)
}
