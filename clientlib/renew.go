package clientlib

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// renewInterval is when to renew a hold of TTL ttl after its last renewal:
// a third of the TTL minus up to a quarter of that third at random, so that
// many clients do not renew in step and a renewal never starts later than
// TTL/3.
func renewInterval(ttl time.Duration) time.Duration {
	third := ttl / 3
	if j := int64(third / 4); j > 0 {
		third -= time.Duration(rand.Int64N(j))
	}
	return max(third, time.Millisecond)
}

// retryDelay is how long to wait before retrying a failed renewal.
func retryDelay(ttl time.Duration) time.Duration {
	return min(max(ttl/10, 10*time.Millisecond), time.Second)
}

// keep is the hold's keeper, one goroutine per hold, owned by the Client
// (Client.keepers) and stopped through stopc. It renews a TTL hold at
// renewAt, reports a loss when the connection a bound hold lives on closes
// (at once on a single server; in cluster mode after failing to re-attach
// it, see recover), when the server answers NOTHELD, or when the TTL
// deadline passes without a successful renewal. It never re-acquires and
// never panics; a loss is reported through hold.lose.
func (h *hold) keep() {
	defer close(h.keeperDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var dropped <-chan struct{} // a dead channel left to Lock.Renew
	for {
		h.schedule(timer)
		dead := h.deadChan()
		if dead == dropped {
			dead = nil
		}
		select {
		case <-h.stopc:
			return
		case <-dead:
			switch {
			case !h.reattaches():
				h.lose(ErrConnClosed)
				return
			case h.manualTTL():
				// NoAutoRenew: re-attaching restarts the TTL, which is the
				// caller's to do; its next Lock.Renew re-attaches, and the
				// deadline is watched as before.
				dropped = dead
			case !h.recover():
				return
			}
		case <-h.resched:
		case <-h.checkc:
			if !h.verify() {
				return
			}
		case <-timer.C:
			if !h.tick() {
				return
			}
		}
	}
}

// schedule sets timer to the next thing the keeper must do: renew (with
// auto-renewal) or notice the deadline passing (without).
func (h *hold) schedule(timer *time.Timer) {
	h.mu.Lock()
	at := h.renewAt
	if !h.autoRenew {
		at = h.deadline
	}
	h.mu.Unlock()
	if !timer.Stop() {
		select {
		case <-timer.C:
		default:
		}
	}
	if at.IsZero() {
		return
	}
	timer.Reset(time.Until(at))
}

// tick does what the timer fired for. It returns false when the hold was
// lost and the keeper must return.
func (h *hold) tick() bool {
	h.mu.Lock()
	deadline, ttl := h.deadline, h.ttl
	h.mu.Unlock()
	if !h.autoRenew {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			h.lose(ErrExpired)
			return false
		}
		return true // woken early: the deadline moved
	}
	// Renew even when this tick comes after the deadline (a paused
	// process, an overloaded machine): RENEW never re-acquires, so success
	// proves the server kept the hold and nobody else got it meanwhile,
	// and an expiry shows as NOTHELD.
	got, err := h.renew(0)
	switch {
	case err == nil:
		if ttl == ttlUnknown && got == 0 && !h.detached {
			// The server has no --default-ttl: later holds without a TTL
			// need not ask.
			h.c.noDefaultTTL.Store(true)
		}
		return true
	case errors.Is(err, ErrLost):
		return false // renew marked it lost (NOTHELD, connection closed)
	}
	// A transient failure (a detached hold whose connection broke, an
	// unexpected error reply): retry until the deadline.
	now := time.Now()
	h.mu.Lock()
	if !h.deadline.IsZero() && !now.Before(h.deadline) {
		h.mu.Unlock()
		h.lose(fmt.Errorf("%w (last renewal error: %v)", ErrExpired, err))
		return false
	}
	next := now.Add(retryDelay(h.ttl))
	if h.ttl == ttlUnknown {
		next = now.Add(retryDelay(time.Second))
	}
	if !h.deadline.IsZero() && next.After(h.deadline) {
		next = h.deadline
	}
	h.renewAt = next
	h.mu.Unlock()
	return true
}

// manualTTL reports whether the caller renews the hold (NoAutoRenew) and
// it has a TTL.
func (h *hold) manualTTL() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.autoRenew && !h.deadline.IsZero()
}

// checkSoon asks the keeper to check with the server that the hold is
// still held: events about it may have been missed.
func (h *hold) checkSoon() {
	select {
	case h.checkc <- struct{}{}:
	default:
	}
}

// verify sends CHECK and reports whether the hold is still held; a
// NOTHELD (or, for a bound hold on a single server, a broken connection)
// marks it lost. Other failures are left to the renewal.
func (h *hold) verify() bool {
	key := h.currentKey()
	if _, err := h.do(h.c.opt.ReadTimeout, "CHECK", h.name, key); err != nil {
		return !errors.Is(h.failedKey("CHECK", key, err), ErrLost)
	}
	return true
}

// releasedBy marks the hold lost after the server's "released <fence>
// reason" event for it, unless it is the event of this Client's own
// UNLOCK. Called by the lossWatch's reader.
func (h *hold) releasedBy(reason string) {
	if reason == ReasonUnlock && h.unlocking.Load() > 0 {
		return
	}
	if reason == ReasonUpgraded && h.upgrading.Load() {
		return // this Client's UPGRADE: the hold goes on with a new fence
	}
	is := []error{ErrNotHeld}
	switch reason {
	case ReasonExpired:
		is = append(is, ErrExpired)
	case ReasonDisconnect, ReasonKilled:
		if !h.detached {
			is = append(is, ErrConnClosed)
		}
	}
	h.lose(&releasedError{reason: reason, is: is})
}
