package commands

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/persist"
	"github.com/relock/relock/resp"
)

const lockOpts = resp.OptTTL | resp.OptWait | resp.OptSize | resp.OptOwner | resp.OptDetach | resp.OptLockDelay | resp.OptShared

// cmdLock: LOCK name [TTL ms] [WAIT ms] [SIZE n] [OWNER id] [DETACH] [SHARED] [LOCKDELAY ms]
func (sess *session) cmdLock(args [][]byte) *pendingWait {
	return sess.acquire(args, lockOpts, true)
}

// cmdTryLock: TRYLOCK name [TTL ms] [SIZE n] [OWNER id] [DETACH] [SHARED] [LOCKDELAY ms]
func (sess *session) cmdTryLock(args [][]byte) *pendingWait {
	return sess.acquire(args, lockOpts&^resp.OptWait, false)
}

func (sess *session) acquire(args [][]byte, allowed resp.Opt, wait bool) *pendingWait {
	srv := sess.srv
	opts, err := resp.ScanOptions(args[2:], allowed)
	if err == nil && opts.Shared && opts.Has&resp.OptSize != 0 {
		err = errors.New(resp.ErrSyntax) // a shared hold is of a size-1 lock
	}
	if err != nil {
		sess.fail(err.Error())
		return nil
	}
	if !sess.checkName(args[1]) {
		return nil
	}
	req, timeout, ok := sess.request(opts)
	if !ok {
		return nil
	}
	req.Name = string(args[1])
	ttl := time.Duration(req.TTL)
	now := srv.now()
	sess.ev.Reset()
	key, outcome, err := srv.eng.acquire(&sess.ev, sess, req, now, wait)
	var cerr error
	if err == nil && outcome == locktable.Granted {
		cerr = sess.commitGrant(&sess.ev, req.Name, key)
	} else {
		cerr = sess.commit(&sess.ev, false)
	}
	if err != nil {
		sess.tableError(err, req.Name)
		return nil
	}
	if cerr != nil && outcome == locktable.Granted {
		// Not durable, so not granted: undo it (a re-entry counts down).
		var ev locktable.Events
		srv.eng.unlock(&ev, req.Name, key, srv.now())
		srv.commit(&ev, false)
		sess.persistError(cerr)
		return nil
	}
	switch outcome {
	case locktable.Granted:
		srv.stats.grants.Add(1)
		if srv.debug {
			srv.log.Debug("granted", "lock", req.Name, "fence", key.Fence, "client", sess.id)
		}
		if ttl > 0 {
			srv.expiry.schedule(now + int64(ttl))
		}
		sess.writeKey(key)
	case locktable.Busy:
		sess.w.Null()
	case locktable.Queued:
		return &pendingWait{name: req.Name, timeout: timeout, since: time.Now()}
	}
	return nil
}

// cmdUnlock: UNLOCK name key
func (sess *session) cmdUnlock(args [][]byte) *pendingWait {
	srv := sess.srv
	key, ok := sess.parseKey(args[1], args[2])
	if !ok {
		return nil
	}
	sess.ev.Reset()
	err := srv.eng.unlock(&sess.ev, string(args[1]), key, srv.now())
	if sess.settled(err, sess.commit(&sess.ev, err == nil), "") {
		sess.w.Int(1)
	}
	return nil
}

// cmdRenew: RENEW name key [TTL ms]
func (sess *session) cmdRenew(args [][]byte) *pendingWait {
	srv := sess.srv
	opts, err := resp.ScanOptions(args[3:], resp.OptTTL)
	if err != nil {
		sess.fail(err.Error())
		return nil
	}
	var ttl time.Duration
	if opts.Has&resp.OptTTL != 0 {
		ttl = time.Duration(opts.TTL) * time.Millisecond
		if !sess.checkTTL(ttl) {
			return nil
		}
	}
	key, ok := sess.parseKey(args[1], args[2])
	if !ok {
		return nil
	}
	now := srv.now()
	sess.ev.Reset()
	set, err := srv.eng.renew(&sess.ev, sess, string(args[1]), key, int64(ttl), now)
	if !sess.settled(err, sess.commit(&sess.ev, err == nil), "") {
		return nil
	}
	if set == 0 {
		sess.w.Int(-1)
		return nil
	}
	srv.expiry.schedule(now + set)
	sess.w.Int(set / int64(time.Millisecond))
	return nil
}

// cmdCheck: CHECK name key
func (sess *session) cmdCheck(args [][]byte) *pendingWait {
	srv := sess.srv
	key, ok := sess.parseKey(args[1], args[2])
	if !ok {
		return nil
	}
	sess.ev.Reset()
	left, err := srv.eng.check(&sess.ev, string(args[1]), key, srv.now())
	sess.commit(&sess.ev, false)
	if err != nil {
		sess.tableError(err, "")
		return nil
	}
	if left < 0 {
		sess.w.Int(-1)
		return nil
	}
	// Round up: a hold that is still held never shows 0 ms left.
	sess.w.Int((left + int64(time.Millisecond) - 1) / int64(time.Millisecond))
	return nil
}

// cmdForceUnlock: FORCEUNLOCK name
func (sess *session) cmdForceUnlock(args [][]byte) *pendingWait {
	srv := sess.srv
	if !sess.checkName(args[1]) {
		return nil
	}
	sess.ev.Reset()
	n, err := srv.eng.forceUnlock(&sess.ev, string(args[1]), srv.now())
	if err != nil {
		srv.deliver(&sess.ev)
		sess.tableError(err, "")
		return nil
	}
	if cerr := sess.commit(&sess.ev, n > 0); cerr != nil {
		sess.persistError(cerr)
		return nil
	}
	if n > 0 {
		srv.log.Info("force unlock", "lock", string(args[1]), "holds", n, "by_client", sess.id)
	}
	sess.w.Int(int64(n))
	return nil
}

// cmdMLock: MLOCK numnames name [name ...] [TTL ms] [WAIT ms] [OWNER id]
// [DETACH] [SHARED] [LOCKDELAY ms] — every name at once or none; waits on
// all of them at one instant.
func (sess *session) cmdMLock(args [][]byte) *pendingWait {
	return sess.acquireMulti(args, lockOpts&^resp.OptSize, true)
}

// cmdMTryLock: MTRYLOCK numnames name [name ...] [TTL ms] [OWNER id]
// [DETACH] [SHARED] [LOCKDELAY ms]
func (sess *session) cmdMTryLock(args [][]byte) *pendingWait {
	return sess.acquireMulti(args, lockOpts&^(resp.OptSize|resp.OptWait), false)
}

func (sess *session) acquireMulti(args [][]byte, allowed resp.Opt, wait bool) *pendingWait {
	srv := sess.srv
	n, ok := resp.ParseInt(args[1])
	if !ok {
		sess.fail(resp.ErrNotInteger)
		return nil
	}
	if n < 1 {
		sess.fail("ERR numnames must be at least 1")
		return nil
	}
	if int(n) > len(args)-2 {
		sess.fail(resp.ErrSyntax)
		return nil
	}
	if n > int64(srv.cfg.MaxMulti) {
		sess.fail(resp.Limit("more than max-multi (" + itoa(int64(srv.cfg.MaxMulti)) + ") names"))
		return nil
	}
	names := args[2 : 2+n]
	opts, err := resp.ScanOptions(args[2+n:], allowed)
	if err != nil {
		sess.fail(err.Error())
		return nil
	}
	seen := make(map[string]struct{}, len(names))
	for _, name := range names {
		if !sess.checkName(name) {
			return nil
		}
		if _, dup := seen[string(name)]; dup {
			sess.fail("ERR lock '" + resp.Printable(string(name)) + "' is named twice")
			return nil
		}
		seen[string(name)] = struct{}{}
	}
	tmpl, timeout, ok := sess.request(opts)
	if !ok {
		return nil
	}
	ttl := time.Duration(tmpl.TTL)
	reqs := make([]locktable.Request, len(names))
	for i, name := range names {
		reqs[i] = tmpl
		reqs[i].Name = string(name)
		reqs[i].Rand = randKey()
	}
	now := srv.now()
	sess.ev.Reset()
	keys, outcome, err := srv.eng.acquireMulti(&sess.ev, sess, reqs, now, wait)
	var cerr error
	if err == nil && outcome == locktable.Granted {
		cerr = sess.commitGrants(&sess.ev, reqs, keys)
	} else {
		cerr = sess.commit(&sess.ev, false)
	}
	if err != nil {
		sess.tableError(err, string(names[0]))
		return nil
	}
	if cerr != nil && outcome == locktable.Granted {
		var ev locktable.Events
		for i, k := range keys {
			srv.eng.unlock(&ev, reqs[i].Name, k, srv.now())
		}
		srv.commit(&ev, false)
		sess.persistError(cerr)
		return nil
	}
	switch outcome {
	case locktable.Granted:
		srv.stats.grants.Add(int64(len(keys)))
		if ttl > 0 {
			srv.expiry.schedule(now + int64(ttl))
		}
		sess.w.Array(len(keys))
		for _, k := range keys {
			sess.writeKey(k)
		}
	case locktable.Busy:
		sess.w.NullArray()
	case locktable.Queued:
		return &pendingWait{name: reqs[0].Name, timeout: timeout, since: time.Now(), multi: true}
	}
	return nil
}

// request turns the options of a LOCK, TRYLOCK or MLOCK into a request
// (without its name) with the server's defaults, and the WAIT to apply;
// false: an option was refused (the error is written).
func (sess *session) request(opts resp.Options) (locktable.Request, time.Duration, bool) {
	cfg := &sess.srv.cfg
	if len(opts.Owner) > cfg.MaxNameLen {
		sess.fail(resp.Limit("OWNER longer than max-name-len (" + itoa(int64(cfg.MaxNameLen)) + " bytes)"))
		return locktable.Request{}, 0, false
	}
	ttl := cfg.DefaultTTL
	if opts.Has&resp.OptTTL != 0 {
		ttl = time.Duration(opts.TTL) * time.Millisecond
		if !sess.checkTTL(ttl) {
			return locktable.Request{}, 0, false
		}
	}
	if opts.Detach && ttl == 0 {
		sess.fail(resp.ErrDetachTTL)
		return locktable.Request{}, 0, false
	}
	timeout := cfg.DefaultWait
	if opts.Has&resp.OptWait != 0 {
		timeout = time.Duration(opts.Wait) * time.Millisecond
	}
	req := locktable.Request{
		TTL: int64(ttl), Size: 1, Owner: string(opts.Owner), Detach: opts.Detach, Shared: opts.Shared,
		LockDelay: int64(cfg.LockDelay), Rand: randKey(),
	}
	if opts.Has&resp.OptSize != 0 {
		req.Size = uint32(opts.Size)
	}
	if opts.Has&resp.OptLockDelay != 0 {
		req.LockDelay = opts.LockDelay * int64(time.Millisecond)
	}
	return req, timeout, true
}

// cmdUpgrade: UPGRADE name key [WAIT ms] — the shared hold becomes
// exclusive, at once if it is the lock's only hold, else once the others
// are gone (waiting ahead of every queued request). Reply: the new key;
// nil when WAIT ran out (the shared hold is kept).
func (sess *session) cmdUpgrade(args [][]byte) *pendingWait {
	srv := sess.srv
	key, ok := sess.parseKey(args[1], args[2])
	if !ok {
		return nil
	}
	opts, err := resp.ScanOptions(args[3:], resp.OptWait)
	if err != nil {
		sess.fail(err.Error())
		return nil
	}
	timeout := srv.cfg.DefaultWait
	if opts.Has&resp.OptWait != 0 {
		timeout = time.Duration(opts.Wait) * time.Millisecond
	}
	name := string(args[1])
	sess.ev.Reset()
	nk, outcome, err := srv.eng.upgrade(&sess.ev, sess, name, key, randKey(), srv.now())
	var cerr error
	if err == nil && outcome == locktable.Granted {
		// Like a hold granted at once: if the round's commit fails, the
		// upgraded hold (its new key never sent) is released.
		cerr = sess.commitGrant(&sess.ev, name, nk)
	} else {
		cerr = sess.commit(&sess.ev, false)
	}
	if !sess.settled(err, cerr, name) {
		return nil
	}
	if outcome == locktable.Queued {
		return &pendingWait{name: name, timeout: timeout, since: time.Now()}
	}
	srv.stats.grants.Add(1)
	sess.writeKey(nk)
	return nil
}

// cmdDowngrade: DOWNGRADE name key — the exclusive hold becomes shared
// (same key); the shared requests at the head of the queue are granted.
func (sess *session) cmdDowngrade(args [][]byte) *pendingWait {
	srv := sess.srv
	key, ok := sess.parseKey(args[1], args[2])
	if !ok {
		return nil
	}
	name := string(args[1])
	sess.ev.Reset()
	err := srv.eng.downgrade(&sess.ev, name, key, srv.now())
	if sess.settled(err, sess.commit(&sess.ev, err == nil), name) {
		sess.w.Int(1)
	}
	return nil
}

// checkName validates a lock name, writing the error if it is invalid.
func (sess *session) checkName(name []byte) bool {
	if len(name) == 0 {
		sess.fail(resp.ErrEmptyName)
		return false
	}
	if max := sess.srv.cfg.MaxNameLen; len(name) > max {
		sess.fail(resp.Limit("lock name longer than max-name-len (" + itoa(int64(max)) + " bytes)"))
		return false
	}
	if !sess.mayLock(string(name)) {
		sess.fail("NOPERM this user has no permissions to access the '" + resp.Printable(string(name)) + "' lock")
		return false
	}
	return true
}

// checkTTL enforces max-ttl, writing the error if ttl is over it.
func (sess *session) checkTTL(ttl time.Duration) bool {
	if max := sess.srv.cfg.MaxTTL; max > 0 && ttl > max {
		sess.fail(resp.Limit("TTL " + itoa(int64(ttl/time.Millisecond)) + " ms exceeds max-ttl " + itoa(int64(max/time.Millisecond)) + " ms"))
		return false
	}
	return true
}

// parseKey validates name and parses key. A malformed key holds nothing:
// NOTHELD, as for any other key that does not hold the lock.
func (sess *session) parseKey(name, key []byte) (locktable.Key, bool) {
	if !sess.checkName(name) {
		return locktable.Key{}, false
	}
	k, err := locktable.ParseKey(key)
	if err != nil {
		sess.fail(resp.ErrNotHeld)
		return locktable.Key{}, false
	}
	return k, true
}

// writeKey writes a key as a bulk string without allocating.
func (sess *session) writeKey(k locktable.Key) {
	var buf [48]byte
	sess.w.Bulk(k.Append(buf[:0]))
}

// settled reports whether an operation succeeded (err) and was committed
// (cerr), writing the error reply if not (name: the lock a
// -SIZEMISMATCH names; "" where the operation cannot get one).
func (sess *session) settled(err, cerr error, name string) bool {
	if err != nil {
		sess.tableError(err, name)
		return false
	}
	if cerr != nil {
		sess.persistError(cerr)
		return false
	}
	return true
}

// persistError reports a change that the store could not commit.
func (sess *session) persistError(err error) {
	if errors.Is(err, persist.ErrClosed) {
		sess.fail("ERR server is shutting down")
		return
	}
	sess.fail("ERR persistence failed: " + err.Error())
}

// tableError turns a locktable sentinel error into its RESP error.
func (sess *session) tableError(err error, name string) {
	var sm *locktable.SizeMismatchError
	var dl *locktable.DeadlockError
	switch {
	case errors.Is(err, errMoved):
		sess.fail(sess.srv.eng.moved())
	case errors.Is(err, errOutcomeUnknown):
		sess.fail("TRYAGAIN " + err.Error())
	case errors.Is(err, locktable.ErrSessionClosed):
		sess.fail("ERR this connection's session ended (leader change); reconnect")
	case errors.As(err, &sm):
		if sm.Name != "" {
			name = sm.Name // the one of several names (MLOCK) whose size differs
		}
		sess.fail(resp.SizeMismatch(name, sm.Have, sm.Want))
	case errors.Is(err, locktable.ErrNotHeld):
		sess.fail(resp.ErrNotHeld)
	case errors.Is(err, locktable.ErrDetachMismatch):
		sess.fail(resp.ErrDetachMatch)
	case errors.Is(err, locktable.ErrDetachNeedsTTL):
		sess.fail(resp.ErrDetachTTL)
	case errors.Is(err, locktable.ErrTooManyWaiters):
		sess.fail(resp.Limit("too many waiters on this lock (max-waiters " + itoa(int64(sess.srv.cfg.MaxWaiters)) + ")"))
	case errors.Is(err, locktable.ErrTableFull):
		sess.fail(resp.Limit("too many live holds on lock names that hash like this one; use other names"))
	case errors.Is(err, locktable.ErrTooManyReentries):
		sess.fail(resp.Limit("hold re-entered too many times"))
	case errors.Is(err, locktable.ErrModeMismatch):
		sess.fail("ERR this OWNER holds '" + resp.Printable(name) + "' in the other mode; use UPGRADE or DOWNGRADE")
	case errors.Is(err, locktable.ErrNotShared):
		sess.fail("ERR the hold is exclusive already (UPGRADE takes a shared hold)")
	case errors.Is(err, locktable.ErrNotExclusive):
		sess.fail("ERR the hold is shared already (DOWNGRADE takes an exclusive hold)")
	case errors.As(err, &dl):
		names := make([]string, len(dl.Locks))
		for i, l := range dl.Locks {
			names[i] = "'" + resp.Printable(l) + "'"
		}
		sess.fail("DEADLOCK waiting would close a cycle of waits through locks " + strings.Join(names, " -> ") + "; nothing changed")
	case errors.Is(err, locktable.ErrDeadlock):
		sess.fail("DEADLOCK another UPGRADE of '" + resp.Printable(name) + "' is waiting: each would wait for the other's shared hold")
	case errors.Is(err, locktable.ErrTooManyHolds):
		sess.fail(resp.Limit("too many holds and waits on this connection (max-holds-per-client " + itoa(int64(sess.srv.cfg.MaxHolds)) + ")"))
	default:
		sess.srv.log.Error("unexpected lock table error", "err", err)
		sess.fail("ERR " + err.Error())
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
