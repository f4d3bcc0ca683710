package clientlib

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// LockOption is an option of Lock and TryLock.
type LockOption func(*lockConfig)

type lockConfig struct {
	ttl       time.Duration // 0: none
	wait      time.Duration
	hasWait   bool
	size      int // 0: 1
	owner     string
	detach    bool
	shared    bool
	autoRenew bool
	// lockDelay is LOCKDELAY's value when hasLockDelay.
	lockDelay    time.Duration
	hasLockDelay bool
	// exclusive: owner is this call's alone (no other Lock call or hold
	// of this Client uses it at the same time), so that a hold with it
	// found after an unknown outcome is this call's (see requeue.go).
	exclusive bool
}

// TTL makes the hold expire after d unless renewed; the Lock renews it by
// itself every third of d (see NoAutoRenew). It is rounded up to whole
// milliseconds. Without a TTL a hold lasts until Unlock or until its
// connection closes (or the server's --default-ttl applies, which the Lock
// then learns and renews too).
func TTL(d time.Duration) LockOption { return func(c *lockConfig) { c.ttl = d } }

// Wait bounds how long Lock waits for the lock (the server's WAIT): when it
// runs out, Lock returns ErrWaitTimeout. Wait(0) waits without limit even if
// the server has a --default-wait. Without Wait the server's --default-wait
// applies (none by default). TryLock ignores Wait. A ctx deadline also
// bounds the wait, returning the ctx's error instead.
func Wait(d time.Duration) LockOption {
	return func(c *lockConfig) { c.wait, c.hasWait = d, true }
}

// Size makes the lock a counting semaphore admitting n holders (default 1).
// The first holder fixes the size; asking for another size while the lock
// exists fails with ErrSizeMismatch.
func Size(n int) LockOption { return func(c *lockConfig) { c.size = n } }

// Owner makes the hold re-entrant: locking again with the same owner id
// returns the same key (and fence) without waiting, and the lock is released
// when every such Lock has been unlocked. Within one Client, re-entries share
// the first hold's connection, renewal and loss; owner ids should be unique
// to one Client (e.g. "host:pid:worker"). In cluster mode, a Lock with
// Owner whose LOCK met a leader change with its outcome unknown returns
// the error instead of queueing again (see "Clusters" in the package
// documentation): the owner is not unique to the call.
func Owner(id string) LockOption { return func(c *lockConfig) { c.owner = id } }

// Detach makes the hold survive its connection: a closed connection does not
// release it and is not a loss (the Lock renews over a new connection), so
// its key can be handed to another process. It needs a TTL.
//
// Since closing the connection does not release a detached hold, a
// detached request is sent with an OWNER unique to the call (LOCKS shows
// it, "clientlib:" and 16 hex digits) unless Owner is given: when the
// call fails with the outcome unknown — its ctx ends or
// Options.ReadTimeout runs out while the grant may be on its way — a
// TRYLOCK with that OWNER, sent in the background, re-enters the hold it
// may have got and UNLOCKs it. With Owner the grant cannot be told apart
// from other holds of the owner: it then stays until its TTL runs out.
func Detach() LockOption { return func(c *lockConfig) { c.detach = true } }

// LockDelay sets the hold's lock-delay (LOCKDELAY): when the hold ends
// involuntarily — its connection closes, its TTL runs out, CLIENT KILL —
// its slot stays taken for d more, so that a holder that was merely slow
// cannot overlap the next one. UNLOCK and FORCEUNLOCK never delay.
// LockDelay(0) asks for none, whatever the server's --lock-delay; without
// the option the server's --lock-delay applies. d is rounded up to whole
// milliseconds; the server allows up to 60 s.
func LockDelay(d time.Duration) LockOption {
	return func(c *lockConfig) { c.lockDelay, c.hasLockDelay = d, true }
}

// Shared asks for a shared hold (SHARED): a reader. Shared holds of a
// lock coexist; an ordinary (exclusive) hold excludes every other hold.
// One FIFO queue serves both modes, so a shared request behind a waiting
// exclusive one waits (writers never starve). A shared lock has one slot:
// Shared with Size above 1 is refused by the server. Lock.Upgrade turns a
// shared hold into an exclusive one atomically; see also RWMutex.
func Shared() LockOption { return func(c *lockConfig) { c.shared = true } }

// NoAutoRenew turns auto-renewal off: the caller renews with Lock.Renew
// before the TTL runs out. The Lock still reports loss: a closed connection
// at once, an expiry when the TTL deadline passes.
func NoAutoRenew() LockOption { return func(c *lockConfig) { c.autoRenew = false } }

// Lock waits until it is granted the lock name and returns it. Waiters are
// granted in FIFO order. Cancelling ctx (or its deadline) aborts the wait at
// once, closing the wait's connection so that the server drops the waiter;
// the error then wraps ctx.Err(). With Wait, ErrWaitTimeout when it ran out.
//
// The returned Lock keeps its own connection until Unlock; with a TTL it
// renews itself (see TTL). Watch Lost or Context to learn of a loss.
//
// In cluster mode a wait survives a leader change: Lock queues again on
// the new leader when its request was not applied (MOVED, CLUSTERDOWN),
// and also when the outcome is unknown (the connection closed while
// waiting, TRYAGAIN), because each Lock call's request carries an OWNER
// unique to the call: sent again, it re-enters a grant the old leader
// committed but never delivered, which Lock then adopts, instead of
// queueing behind it. See "Clusters" in the package documentation for
// the rule. With Owner, an unknown outcome is returned as an error.
func (c *Client) Lock(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	return c.acquire(ctx, name, false, opts)
}

// TryLock takes the lock name if it has free capacity now, and returns
// ErrWaitTimeout (and a nil Lock) at once if not.
func (c *Client) TryLock(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	return c.acquire(ctx, name, true, opts)
}

func (c *Client) acquire(ctx context.Context, name string, try bool, opts []LockOption) (*Lock, error) {
	cfg := lockConfig{autoRenew: true}
	for _, o := range opts {
		o(&cfg)
	}
	op := "LOCK"
	if try {
		op = "TRYLOCK"
	}
	switch {
	case name == "":
		return nil, fmt.Errorf("%s: empty lock name", op)
	case cfg.ttl < 0:
		return nil, fmt.Errorf("%s %s: negative TTL", op, quote(name))
	case cfg.size < 0:
		return nil, fmt.Errorf("%s %s: negative size", op, quote(name))
	case cfg.hasWait && cfg.wait < 0:
		return nil, fmt.Errorf("%s %s: negative wait", op, quote(name))
	case cfg.hasLockDelay && cfg.lockDelay < 0:
		return nil, fmt.Errorf("%s %s: negative lock-delay", op, quote(name))
	case cfg.shared && cfg.size > 1:
		return nil, fmt.Errorf("%s %s: a shared lock has size 1", op, quote(name))
	}
	if err := ctx.Err(); err != nil {
		return nil, c.ctxError(ctx, op, name, err)
	}
	if cfg.owner != "" {
		done, err := c.ownerTurn(ctx, op, name, try, cfg)
		if err != nil {
			return nil, err
		}
		defer done()
		if l, done, err := c.reenter(ctx, name, cfg); done {
			return l, err
		}
	}
	// Subscribe to the lock's events while the request is under way, so
	// that a hold learns of its loss at once (losswatch.go). The
	// reference goes to the hold, or is dropped on the way out.
	ready := c.loss.want(name)
	watching := true
	defer func() {
		if watching {
			c.loss.unwant(name)
		}
	}()
	// The request carries an OWNER unique to this call where a hold it
	// got must be found again without its key: in cluster mode, so that
	// it can be sent again after an unknown outcome (requeue.go), and for
	// a detached hold, which a closed connection does not release, so
	// that a grant whose key never arrived (the ctx ended or the reply
	// timed out while it was on its way) is released (releaseCall).
	wireOwner, callOwned := cfg.owner, cfg.exclusive
	if cfg.owner == "" && (c.cluster || cfg.detach) {
		wireOwner, callOwned = newCallOwner(), true
	}
	requeue := c.cluster && callOwned
	var timeout time.Duration
	if try {
		timeout = c.opt.ReadTimeout
	}
	var (
		lc      *lockConn
		res     any
		err     error
		aborted bool
		granted time.Time
		// unknown: an earlier attempt's outcome is unknown, so a hold
		// with wireOwner may exist (an orphan of an earlier leader).
		unknown bool
	)
	start := time.Now()
	resend := c.newResend()
	for n := 0; ; n++ {
		args := acquireArgs(op, name, try, cfg, wireOwner, start)
		// On the leader: a LOCK answered MOVED or CLUSTERDOWN was not
		// queued, so onLeader may send it again elsewhere.
		lc, res, err, aborted = c.onLeader(ctx, c.retryUntil(), func(lc *lockConn) (any, error, bool) {
			return lc.do(ctx, timeout, args...)
		})
		granted = time.Now()
		if lc == nil || aborted || !requeue {
			break
		}
		if outcomeUnknown(ctx, err) && n < maxResends {
			// The connection broke or its node stopped leading: send
			// again, after a backoff from the second time on.
			c.leaderFailed(lc.ep)
			lc.close()
			unknown = true
			if !resend.next(ctx) {
				break // gave up: err is returned, the call's hold released
			}
			continue
		}
		key, ok := res.(string)
		if !ok || err != nil || !unknown {
			break
		}
		// Granted after an unknown outcome: possibly the re-entry of
		// this call's own earlier grant. Make it one hold, bound here.
		serr := c.settle(ctx, lc, name, key)
		switch {
		case serr == nil:
		case errors.Is(serr, errGone) && n < maxResends:
			// Released meanwhile (the earlier connection's close): ask
			// again; this connection carries nothing.
			c.putLockConn(lc)
			continue
		case ctx.Err() != nil || errors.Is(serr, errNotAttached) || n >= maxResends:
			lc.close()
			c.releaseKey(name, key)
			if ctx.Err() != nil || c.isClosed() {
				return nil, c.ctxError(ctx, op, name, serr)
			}
			return nil, fmt.Errorf("%s %s: %w", op, quote(name), serr)
		default: // the connection broke or the leader changed: unknown again
			c.leaderFailed(lc.ep)
			lc.close()
			if !resend.next(ctx) {
				c.releaseCall(name, cfg, wireOwner)
				return nil, c.ctxError(ctx, op, name, serr)
			}
			continue
		}
		break
	}
	// pending: a hold of this call may exist that nobody will use (and
	// that closing the connection does not release). It is released
	// (best effort) before an error is returned.
	pending := callOwned && (requeue || cfg.detach) && (unknown || outcomeUnknown(ctx, err))
	if lc == nil { // no connection, or no leader before the walk ended
		if pending {
			c.releaseCall(name, cfg, wireOwner)
		}
		if serr := serverError(op, name, err); isReply(serr) && ctx.Err() == nil {
			return nil, serr
		}
		return nil, c.ctxError(ctx, op, name, err)
	}
	if aborted {
		lc.close()
		if key, ok := res.(string); ok && err == nil && (cfg.detach || unknown) {
			// Granted as the wait was aborted: a detached hold survives
			// the closed connection, and so does the re-entry of an
			// orphan; release it by its key.
			c.releaseKey(name, key)
		} else if (requeue && unknown) || (callOwned && cfg.detach) {
			// A hold may have been granted whose key was on its way: a
			// detached one survives the closed connection, and so does
			// an orphan. Find it by the call's OWNER and release it.
			c.releaseCall(name, cfg, wireOwner)
		}
		return nil, c.ctxError(ctx, op, name, context.Canceled)
	}
	if err == redis.Nil {
		c.putLockConn(lc)
		return nil, ErrWaitTimeout
	}
	if err != nil {
		err = serverError(op, name, err)
		if isReply(err) {
			c.putLockConn(lc)
		} else {
			lc.close()
		}
		if pending {
			c.releaseCall(name, cfg, wireOwner)
		}
		if isReply(err) {
			return nil, err
		}
		return nil, c.ctxError(ctx, op, name, err)
	}
	key, ok := res.(string)
	fence, ferr := parseFence(key)
	if !ok || ferr != nil {
		lc.close()
		return nil, fmt.Errorf("%s %s: unexpected reply %v", op, quote(name), res)
	}
	h := c.newHold(name, key, fence, cfg, lc, granted)
	if !c.register(h) {
		h.cancel(ErrClosed)
		lc.close()
		return nil, ErrClosed
	}
	released, unsure := c.loss.attach(h)
	watching = false
	if released != "" {
		// Released while its grant was on its way (say FORCEUNLOCK): a
		// hold without a TTL would never learn of it otherwise.
		h.releasedBy(released)
	}
	// Return once the lock's events are watched (or the server has none),
	// so that a release from now on is noticed at once; a slow watch
	// connection delays Lock at most ReadTimeout (renewal still detects a
	// loss).
	timer := time.NewTimer(c.opt.ReadTimeout)
	defer timer.Stop()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-timer.C:
	case <-h.lost:
	}
	if unsure {
		// No event of the grant was seen: the subscription may have come
		// after it, and missed its release. Ask the server.
		h.checkSoon()
	}
	return &Lock{h: h}, nil
}

// opLock is a mutex whose lock can give up when a ctx ends.
type opLock chan struct{} // cap 1: full while locked

func (m opLock) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m opLock) unlock() { <-m }

// ownerTurn waits until no other Lock or TryLock of this Client with
// cfg's owner is under way for name, then marks this one under way until
// done is called. Two such calls at once would each go to the server:
// the second would wait behind its own owner's hold (a busy lock), or
// the server would re-enter the first's hold for it before the Client
// knew of it (two Locks of one fence). In turn, the second re-enters
// what the first got (reenter). The wait is bounded by ctx, by the
// call's Wait (then ErrWaitTimeout), and for a TryLock by ReadTimeout.
func (c *Client) ownerTurn(ctx context.Context, op, name string, try bool, cfg lockConfig) (done func(), err error) {
	k := ownerKey{name, cfg.owner}
	var expire <-chan time.Time
	switch {
	case try:
		expire = time.After(c.opt.ReadTimeout)
	case cfg.hasWait:
		expire = time.After(cfg.wait)
	}
	for {
		c.mu.Lock()
		busy := c.owning[k]
		if busy == nil {
			mine := make(chan struct{})
			c.owning[k] = mine
			c.mu.Unlock()
			return func() {
				c.mu.Lock()
				delete(c.owning, k)
				c.mu.Unlock()
				close(mine)
			}, nil
		}
		c.mu.Unlock()
		select {
		case <-busy:
		case <-expire:
			return nil, ErrWaitTimeout
		case <-ctx.Done():
			return nil, c.ctxError(ctx, op, name, ctx.Err())
		}
	}
}

// newHold is the client's side of a hold granted at granted on lc, with
// the options of cfg; its keeper is not started yet (see register).
func (c *Client) newHold(name, key string, fence uint64, cfg lockConfig, lc *lockConn, granted time.Time) *hold {
	h := &hold{
		c:          c,
		name:       name,
		key:        key,
		fence:      fence,
		owner:      cfg.owner,
		detached:   cfg.detach,
		shared:     cfg.shared,
		autoRenew:  cfg.autoRenew,
		lc:         lc,
		lost:       make(chan struct{}),
		stopc:      make(chan struct{}),
		resched:    make(chan struct{}, 1),
		checkc:     make(chan struct{}, 1),
		opMu:       make(opLock, 1),
		keeperDone: make(chan struct{}),
		refs:       1,
	}
	h.ctx, h.cancel = context.WithCancelCause(context.Background())
	h.kctx, h.kcancel = context.WithCancel(context.Background())
	if !cfg.detach {
		h.dead = lc.current().dead
	}
	switch {
	case cfg.ttl > 0:
		h.ttl = cfg.ttl
		h.deadline = granted.Add(cfg.ttl)
		h.renewAt = granted.Add(renewInterval(cfg.ttl))
	case cfg.autoRenew && (cfg.detach || !c.noDefaultTTL.Load()):
		// No TTL asked for, but the server may have a --default-ttl: ask
		// (a RENEW without TTL reports the duration in force) at once.
		h.ttl = ttlUnknown
		h.renewAt = granted
	}
	return h
}

// register records a new hold and starts its keeper, unless the Client was
// closed meanwhile.
func (c *Client) register(h *hold) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.holds[h] = struct{}{}
	if h.owner != "" {
		c.owned[ownerKey{h.name, h.owner}] = h
	}
	c.keepers.Add(1)
	go func() {
		defer c.keepers.Done()
		h.keep()
	}()
	return true
}

// forget drops a hold that was released or lost.
func (c *Client) forget(h *hold) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.holds, h)
	if h.owner != "" && c.owned[ownerKey{h.name, h.owner}] == h {
		delete(c.owned, ownerKey{h.name, h.owner})
	}
}

// reenter re-enters a hold with the same owner that this Client holds, on
// that hold's connection. done is false when there is no such hold (or it
// turned out to be gone): the caller then acquires afresh.
func (c *Client) reenter(ctx context.Context, name string, cfg lockConfig) (l *Lock, done bool, err error) {
	c.mu.Lock()
	h := c.owned[ownerKey{name, cfg.owner}]
	c.mu.Unlock()
	if h == nil {
		return nil, false, nil
	}
	// An Upgrade of the hold may be waiting, holding opMu: as long as it
	// takes, the re-entry waits, within its own ctx.
	if err := h.opMu.lock(ctx); err != nil {
		return nil, true, c.ctxError(ctx, "LOCK", name, err)
	}
	defer h.opMu.unlock()
	if !h.held() {
		return nil, false, nil
	}
	if h.reattaches() && h.conn().dead() {
		// The re-entry must go to the connection the hold is bound to:
		// re-attach it first.
		if _, err := h.renew(0); err != nil {
			if errors.Is(err, ErrLost) {
				return nil, false, nil
			}
			return nil, true, err
		}
	}
	// TRYLOCK, not LOCK: a re-entry is granted at once, and if the hold is
	// gone the request must not wait on the connection the keeper uses.
	args := []any{"TRYLOCK", name}
	if cfg.ttl > 0 {
		args = append(args, "TTL", durationMS(cfg.ttl))
	}
	if cfg.size > 0 && !cfg.shared {
		args = append(args, "SIZE", cfg.size)
	}
	args = append(args, "OWNER", cfg.owner)
	if cfg.detach {
		args = append(args, "DETACH")
	}
	if cfg.shared {
		args = append(args, "SHARED")
	}
	sent := time.Now()
	res, err := h.do(c.opt.ReadTimeout, args...)
	switch {
	case err == redis.Nil:
		h.lose(ErrNotHeld)
		return nil, false, nil
	case err != nil:
		err = serverError("TRYLOCK", name, err)
		if !isReply(err) && !h.detached && !h.reattaches() {
			h.lose(connClosed(err))
		}
		return nil, true, err
	}
	if key, _ := res.(string); key != h.currentKey() {
		// A new grant: the old hold was gone. Give it back and start over.
		h.do(c.opt.ReadTimeout, "UNLOCK", name, key)
		h.lose(ErrNotHeld)
		return nil, false, nil
	}
	h.mu.Lock()
	h.refs++
	if cfg.ttl > 0 {
		h.ttl = cfg.ttl
		h.deadline = sent.Add(cfg.ttl)
		h.renewAt = sent.Add(renewInterval(cfg.ttl))
	}
	h.mu.Unlock()
	h.poke()
	return &Lock{h: h}, true, nil
}

// parseFence returns the decimal prefix of a key.
func parseFence(key string) (uint64, error) {
	f, _, ok := strings.Cut(key, "-")
	if !ok {
		return 0, errors.New("malformed key")
	}
	return strconv.ParseUint(f, 10, 64)
}

// Lock is one granted lock: a hold on the server, with its connection and,
// for a TTL, its auto-renewal. It is safe for concurrent use.
//
// A Lock ends in one of two ways: Unlock (Context is cancelled with cause
// ErrReleased; Lost stays open), or a loss (Lost is closed, Context is
// cancelled and Err returns a *LostError). A Lock never re-acquires a lost
// lock by itself.
type Lock struct {
	h        *hold
	released atomic.Bool // Unlock was called on this Lock
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.h.name }

// Key returns the hold's key, the secret proof of ownership: any client that
// presents it may UNLOCK, RENEW or CHECK the hold. Upgrade replaces it.
func (l *Lock) Key() string { return l.h.currentKey() }

// Fence returns the hold's fencing token: strictly greater than the fence of
// every earlier grant of the server, so that a storage service can reject a
// write from an older holder. Re-entries with Owner share the fence.
// Upgrade replaces it with a larger one.
func (l *Lock) Fence() uint64 {
	_, fence := l.h.keyFence()
	return fence
}

// Shared reports whether the hold is shared (a reader: taken with Shared,
// or downgraded) rather than exclusive.
func (l *Lock) Shared() bool {
	l.h.mu.Lock()
	defer l.h.mu.Unlock()
	return l.h.shared
}

// Lost is closed when the lock is lost: see ErrLost. It stays open after
// Unlock.
func (l *Lock) Lost() <-chan struct{} { return l.h.lost }

// Context returns a context that is cancelled when the lock is lost (its
// cause, context.Cause, is the *LostError) or released (cause ErrReleased).
// Run the work the lock protects under it.
func (l *Lock) Context() context.Context { return l.h.ctx }

// Err returns why the lock was lost (a *LostError matching ErrLost and its
// cause), or nil if it was not.
func (l *Lock) Err() error {
	l.h.mu.Lock()
	defer l.h.mu.Unlock()
	if l.h.state == stateLost {
		return l.h.err
	}
	return nil
}

// Unlock releases the lock (with Owner: counts it down) and stops its
// renewal. It returns nil when the server released it; Err() if it was lost
// before (a *LostError; errors.Is(err, ErrNotHeld) holds when the server
// said so); an error wrapping ErrNotHeld if this Lock was already unlocked.
//
// Unlock sends UNLOCK even when ctx is done and waits at most
// Options.ReadTimeout for the reply: abandoning a reply closes the
// connection. If the UNLOCK fails on the network, the connection is closed,
// which releases a hold that is not DETACHed. In cluster mode, while the
// hold's connection is down (a leader change), UNLOCK goes by key to the
// leader; if none answers within Options.ReadTimeout, the hold is left to
// expire (its TTL, or the server's --restore-grace for an orphan).
func (l *Lock) Unlock(ctx context.Context) error {
	h := l.h
	if !l.released.CompareAndSwap(false, true) {
		if err := l.Err(); err != nil {
			return err
		}
		return fmt.Errorf("unlock %s: already unlocked: %w", quote(h.name), ErrNotHeld)
	}
	h.opMu.lock(context.Background()) // after an Upgrade under way
	defer h.opMu.unlock()
	// Until Unlock returns, a "released ... unlock" event is this UNLOCK's.
	h.unlocking.Add(1)
	defer h.unlocking.Add(-1)
	h.mu.Lock()
	last := h.refs == 1
	h.refs--
	h.mu.Unlock()
	if last {
		h.stopKeeper()
	}
	if !h.held() {
		return l.Err()
	}
	_, err := h.do(h.c.opt.ReadTimeout, "UNLOCK", h.name, h.currentKey())
	err = serverError("UNLOCK", h.name, err)
	switch {
	case err == nil:
		if last {
			h.end(stateReleased, ErrReleased)
		}
		return nil
	case errors.Is(err, ErrNotHeld):
		h.lose(ErrNotHeld)
		return l.Err()
	case errors.Is(err, ErrConnClosed):
		// The connection had closed before: the server released the hold.
		h.lose(err)
		return l.Err()
	default:
		if last {
			h.conn().abort() // releases the hold if the UNLOCK did not
			h.end(stateReleased, ErrReleased)
		} else if !h.detached && !h.reattaches() {
			h.lose(connClosed(err))
		}
		if isReply(err) {
			return err // a *ServerError names UNLOCK and the lock itself
		}
		return fmt.Errorf("UNLOCK %s: %w", quote(h.name), err)
	}
}

// Renew restarts the hold's TTL now; ttl > 0 also sets a new TTL duration
// (auto-renewal follows it). ErrNotHeld (in a *LostError) if the server no
// longer holds it, which also marks the Lock lost. Like Unlock it waits at
// most Options.ReadTimeout once sent; ctx is checked before sending.
func (l *Lock) Renew(ctx context.Context, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("RENEW %s: negative TTL", quote(l.h.name))
	}
	if err := l.usable(); err != nil {
		return err
	}
	_, err := l.h.renew(ttl)
	return err
}

// Check asks the server for the time left on the hold (-1: no TTL): a
// sequencer check. ErrNotHeld (in a *LostError) if it is no longer held,
// which also marks the Lock lost.
func (l *Lock) Check(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := l.usable(); err != nil {
		return 0, err
	}
	h := l.h
	key := h.currentKey()
	res, err := h.do(h.c.opt.ReadTimeout, "CHECK", h.name, key)
	if err != nil {
		return 0, h.failedKey("CHECK", key, err)
	}
	ms, _ := res.(int64)
	if ms < 0 {
		return -1, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// usable returns the error for using a Lock that was unlocked or lost.
func (l *Lock) usable() error {
	if err := l.Err(); err != nil {
		return err
	}
	if l.released.Load() {
		return fmt.Errorf("lock %s was unlocked: %w", quote(l.h.name), ErrNotHeld)
	}
	return nil
}

type holdState uint8

const (
	stateHeld holdState = iota
	stateReleased
	stateLost
)

// ttlUnknown marks a hold whose TTL the keeper has yet to learn.
const ttlUnknown = -1

// hold is the client's side of one hold on the server. Re-entries with the
// same owner share it (refs counts their Locks).
type hold struct {
	c         *Client
	name      string
	owner     string
	detached  bool
	autoRenew bool

	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   chan struct{} // closed on loss

	// opMu serializes the round trips that change refs on the server
	// (UNLOCK, re-entry, UPGRADE, DOWNGRADE), so that refs and the
	// server's count agree.
	opMu opLock

	stopc    chan struct{} // closed to stop the keeper
	stopOnce sync.Once
	// kctx is cancelled with stopc: it aborts the keeper's dials and
	// backoffs while it re-attaches the hold.
	kctx    context.Context
	kcancel context.CancelFunc
	// attachMu serializes re-attachments (keeper, Lock.Renew, re-entry).
	attachMu   sync.Mutex
	resched    chan struct{} // buffered(1): the schedule changed
	checkc     chan struct{} // buffered(1): ask the server whether it is still held
	keeperDone chan struct{} // closed when the keeper returned

	// unlocking counts this Client's UNLOCKs of the hold under way: a
	// "released ... unlock" event is then its own, not a loss.
	unlocking atomic.Int32
	// upgrading is set while this Client's UPGRADE of the hold is under
	// way (see Lock.Upgrade): the hold's connection is busy with it, a
	// "released <old fence> upgraded" event is its own, and a NOTHELD to
	// a command sent with the old key may be the upgrade's doing.
	upgrading atomic.Bool
	// watched: the lossWatch routes the events of the hold's fence to it.
	// Guarded by the lossWatch's mu.
	watched bool

	// mu guards the fields below.
	mu sync.Mutex
	// key and fence are the hold's; an UPGRADE replaces both.
	key   string
	fence uint64
	// shared: a shared hold (SHARED, or DOWNGRADE); else exclusive.
	shared bool
	// lc is the connection the hold lives on; a re-attachment replaces it.
	lc *lockConn
	// dead is closed when lc closes; nil for a detached hold, which
	// survives its connection.
	dead     <-chan struct{}
	state    holdState
	err      error // the *LostError, once lost
	refs     int   // Locks not yet unlocked
	ttl      time.Duration
	deadline time.Time // conservative estimate of the server's deadline; zero: none
	renewAt  time.Time // next renewal; zero: none
}

// conn returns the connection the hold lives on now.
func (h *hold) conn() *lockConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lc
}

// deadChan returns the channel closed when the hold's connection closes.
func (h *hold) deadChan() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dead
}

// reattaches reports whether a dropped connection is not the end of the
// hold: in cluster mode it may be a leader change, and the keeper
// re-attaches a bound hold on the new leader (failover.go).
func (h *hold) reattaches() bool { return h.c.cluster && !h.detached }

func (h *hold) held() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state == stateHeld
}

// lose marks the hold lost with cause, unless it already ended: see end.
func (h *hold) lose(cause error) {
	h.end(stateLost, cause)
}

// end ends the hold, unless it already ended. A loss (stateLost, with its
// cause) closes Lost and cancels the Context with the *LostError; a release
// (stateReleased) cancels the Context with ErrReleased. Either way the
// keeper is told to stop (end never waits for it: the keeper calls end
// too). After a release by UNLOCK the connection carries nothing and goes
// back to the idle list; otherwise it is closed, so that the server surely
// releases a bound hold. A connection that LockMany's holds share is put
// back or closed when the last of them ends (lockConn.leave).
func (h *hold) end(state holdState, cause error) {
	h.mu.Lock()
	if h.state != stateHeld {
		h.mu.Unlock()
		return
	}
	h.state = state
	if state == stateLost {
		le := &LostError{Name: h.name, Fence: h.fence, Cause: cause}
		if re, ok := cause.(*releasedError); ok {
			le.Reason = re.reason
		}
		h.err = le
		cause = h.err
	}
	h.mu.Unlock()
	// The Context first: whoever sees Lost closed finds it cancelled.
	h.cancel(cause)
	if state == stateLost {
		close(h.lost)
	}
	h.stop()
	h.c.forget(h)
	h.c.loss.detach(h)
	h.conn().leave(state == stateReleased)
}

// stop tells the keeper to stop, aborting a re-attachment's dials.
func (h *hold) stop() {
	h.stopOnce.Do(func() {
		close(h.stopc)
		h.kcancel()
	})
}

// stopKeeper stops the keeper and waits until it has returned.
func (h *hold) stopKeeper() {
	h.stop()
	<-h.keeperDone
}

// poke tells the keeper that its schedule changed.
func (h *hold) poke() {
	select {
	case h.resched <- struct{}{}:
	default:
	}
}

// renew sends RENEW (with TTL if ttl > 0) and records the result. It
// returns the TTL now in force (0: none). In cluster mode a bound hold
// whose connection dropped is re-attached by this RENEW, within
// Options.ReadTimeout (see reattach).
func (h *hold) renew(ttl time.Duration) (time.Duration, error) {
	if h.reattaches() && h.conn().dead() {
		ctx, cancel := context.WithTimeout(h.kctx, h.c.opt.ReadTimeout)
		defer cancel()
		if got, err, done := h.reattach(ctx, ttl); done {
			return got, err
		}
		// Re-attached meanwhile: renew on the new connection.
	}
	key := h.currentKey()
	args := []any{"RENEW", h.name, key}
	if ttl > 0 {
		args = append(args, "TTL", durationMS(ttl))
	}
	timeout := h.c.opt.ReadTimeout
	h.mu.Lock()
	if h.detached && !h.deadline.IsZero() {
		// A detached hold may retry on a new connection: do not wait past
		// the deadline for this attempt.
		timeout = min(timeout, max(time.Until(h.deadline), 10*time.Millisecond))
	}
	h.mu.Unlock()
	sent := time.Now()
	res, err := h.do(timeout, args...)
	if err != nil {
		return 0, h.failedKey("RENEW", key, err)
	}
	ms, _ := res.(int64)
	got := msDuration(ms)
	h.mu.Lock()
	h.renewedLocked(sent, got)
	h.mu.Unlock()
	h.poke()
	return got, nil
}

// renewedLocked records a successful RENEW sent at sent that set the TTL
// got (0: none). The caller holds h.mu and pokes the keeper.
func (h *hold) renewedLocked(sent time.Time, got time.Duration) {
	h.ttl = got
	if got > 0 {
		h.deadline = sent.Add(got)
		h.renewAt = sent.Add(renewInterval(got))
	} else {
		h.deadline, h.renewAt = time.Time{}, time.Time{}
	}
}

// do sends a command about the hold and waits at most timeout for the
// reply (see lockConn.doHeld): on the hold's connection while it lives. A
// bound hold whose connection broke is gone with it on a single server:
// nothing is sent. A detached hold's commands then go through the shared
// pool by key, and so do a bound hold's UNLOCK and CHECK in cluster mode
// (the hold may be an orphan on a new leader); RENEW and a re-entry would
// bind the hold to a pooled connection, so they are not sent (renew
// re-attaches instead).
func (h *hold) do(timeout time.Duration, args ...any) (any, error) {
	cmd, _ := args[0].(string)
	if lc := h.conn(); !lc.dead() {
		if h.upgrading.Load() && cmd != "UPGRADE" {
			// The connection waits for the UPGRADE's reply: anything sent
			// on it would wait behind it. Send by key through the pool
			// (the hold stays bound to its connection).
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			return h.c.poolDo(ctx, time.Time{}, cmd != "UNLOCK", args...)
		}
		return lc.doHeld(timeout, args...)
	}
	if !h.detached && (!h.c.cluster || cmd == "RENEW" || cmd == "TRYLOCK") {
		return nil, ErrConnClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return h.c.poolDo(ctx, time.Time{}, cmd != "UNLOCK", args...)
}

// failed turns the error of a command about the hold into the error to
// return, marking the hold lost when the error means it is: NOTHELD, or a
// network error on the connection a bound hold lives on (on a single
// server; in cluster mode the keeper re-attaches the hold instead).
func (h *hold) failed(op string, err error) error {
	err = serverError(op, h.name, err)
	switch {
	case errors.Is(err, ErrNotHeld):
		h.lose(ErrNotHeld)
	case !isReply(err) && !h.detached && !h.reattaches():
		h.lose(connClosed(err))
	default:
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil { // it had ended before: report the error itself
		return err
	}
	return h.err
}

// failedKey is failed for a command sent with key: a NOTHELD is not a
// loss when an UPGRADE of this Client replaced the key meanwhile (or may
// be doing so now); the error is then returned as it is and the keeper
// retries with the new key. (A loss during the upgrade is the UPGRADE's
// to report: it gets NOTHELD.)
func (h *hold) failedKey(op, key string, err error) error {
	serr := serverError(op, h.name, err)
	if (errors.Is(serr, ErrNotHeld) || errors.Is(serr, redis.ErrPoolTimeout)) &&
		(h.upgrading.Load() || h.currentKey() != key) {
		// (A pool timeout: the command chose the hold's connection just
		// before an UPGRADE took it.)
		return serr
	}
	return h.failed(op, err)
}

// keyFence returns the hold's key and fence.
func (h *hold) keyFence() (string, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.key, h.fence
}

// currentKey returns the hold's key.
func (h *hold) currentKey() string {
	key, _ := h.keyFence()
	return key
}

// connClosed is the cause of a loss by a network error on a bound hold's
// connection: go-redis closes a connection after such an error.
func connClosed(err error) error {
	if errors.Is(err, ErrConnClosed) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrConnClosed, err)
}
