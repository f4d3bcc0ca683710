package clientlib

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

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
// One UPGRADE is sent, with a WAIT when Wait or ctx's deadline bounds it
// (else the server's --default-wait applies). When ctx ends first, the
// waiting UPGRADE is called off with CLIENT UNBLOCK from another
// connection of the Client (closing the hold's connection would release
// the shared hold), so it keeps its place ahead of the queue for as long
// as it waits.
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
	args := []any{"UPGRADE", h.name, h.currentKey()}
	var wait time.Duration // 0: no limit of the caller's
	if !until.IsZero() {
		if wait = time.Until(until); wait <= 0 {
			return l.upgradeWaitEnded(ctx)
		}
		args = append(args, "WAIT", durationMS(wait))
	} else if cfg.hasWait {
		args = append(args, "WAIT", int64(0))
	}
	var timeout time.Duration // 0: none (the server's wait, if any, bounds it)
	if wait > 0 {
		timeout = wait + h.c.opt.ReadTimeout
	}
	stop := l.unblockOnCancel(ctx)
	res, err := h.doWait(timeout, args...)
	stop()
	switch {
	case err == redis.Nil:
		return l.upgradeWaitEnded(ctx)
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

// unblockOnCancel calls off the hold's waiting request with CLIENT
// UNBLOCK (its reply then is a null) if ctx ends before stop is called;
// stop returns once nothing more will be sent, so that an UNBLOCK never
// reaches a later request of the connection.
func (l *Lock) unblockOnCancel(ctx context.Context) (stop func()) {
	h := l.h
	lc := h.conn()
	if ctx.Done() == nil || lc.dead() {
		return func() {}
	}
	ictx, cancel := context.WithTimeout(context.Background(), h.c.opt.ReadTimeout)
	id, err := lc.rdb.Do(ictx, "CLIENT", "ID").Int64()
	cancel()
	if err != nil {
		return func() {} // the UPGRADE then fails on the connection too
	}
	stopc, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-stopc:
		case <-ctx.Done():
			uctx, cancel := context.WithTimeout(context.Background(), h.c.opt.ReadTimeout)
			defer cancel()
			h.c.poolFor(lc.ep).Do(uctx, "CLIENT", "UNBLOCK", id)
		}
	}()
	return func() {
		close(stopc)
		<-done
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
