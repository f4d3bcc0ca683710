// Package clientlib is the Go client of relock, the lock server that speaks
// the Redis protocol. It is built on go-redis and adds what raw commands
// leave to the user: a dedicated connection per lock, waits that a ctx
// aborts at once, auto-renewal of TTL holds, loss notification, fencing
// tokens, and helpers for the usual patterns (Semaphore, Election, Mutex,
// RWMutex).
//
// # Locks
//
//	c, err := clientlib.New(clientlib.Options{Addr: "127.0.0.1:6380"})
//	l, err := c.Lock(ctx, "reports:daily", clientlib.TTL(15*time.Second))
//	defer l.Unlock(ctx)
//	doWork(l.Context(), l.Fence())
//
// Lock waits in the server's FIFO queue until it is granted; TryLock does
// not wait. Not getting the lock is the error ErrWaitTimeout with a nil
// *Lock — from TryLock when the lock is busy, from Lock when its Wait
// option (or the server's --default-wait) ran out — so that every failure
// to lock is an error and a nil check on the error is all a caller needs.
// Cancelling the ctx of a waiting Lock returns the ctx's error at once.
//
// LockMany takes several names with one MLOCK: all of them at one instant
// or none, holding none while it waits, so two LockMany calls never
// deadlock whatever the order of their names. Each name is its own *Lock;
// they share the connection of their MLOCK (see LockMany). ErrDeadlock
// (from Lock, LockMany and Upgrade) says the server refused a wait that
// would never end; since each Lock call has its own connection, the
// server sees the calls of one worker as one participant only when they
// share an Owner id.
//
// # Connections
//
// The server binds a hold to the connection that took it and releases it
// when that connection closes, so a crashed client never keeps a lock. Each
// Lock call therefore runs on a connection of its own, and a granted lock
// keeps it until Unlock: waits never block a connection another call needs,
// and a wait aborted by its ctx is removed from the server's queue by
// closing its connection. Connections that carry nothing are reused. LOCK
// is never retried by go-redis (a retry would queue a second waiter) and is
// never cut short by a read timeout (Options.ReadTimeout applies to the
// commands that do not wait).
//
// # Renewal and loss
//
// A hold with a TTL expires unless renewed, even while its connection
// lives, so that a hung client cannot keep a lock forever. A Lock renews
// its TTL every third of it (minus some jitter) and reports a loss instead
// of panicking or re-acquiring behind the caller's back: Lost is closed,
// Context is cancelled and Err returns a *LostError that matches ErrLost and
// its cause — ErrNotHeld (the server no longer holds it: expired,
// FORCEUNLOCK), ErrConnClosed (the connection closed: noticed at once,
// because a goroutine keeps reading the socket; in a cluster the hold is
// re-attached first, see Clusters), ErrExpired (renewals kept
// failing until the TTL deadline passed) or ErrClosed (Client.Close). Work
// done under a lock should run under Lock.Context and pass Lock.Fence to
// the storage it writes, so that a write from a holder that lost the lock
// can be refused there.
//
// A loss is also noticed at once, not at the next renewal, from the
// server's lock events: while a Client holds locks, one connection of its
// own subscribes to the event channel of each, and the server's
// "released" event for a hold's fence (TTL expired, FORCEUNLOCK, CLIENT
// KILL, UNLOCK with its key elsewhere) marks it lost within milliseconds —
// holds without a TTL, which never renew, included. LostError.Reason then
// names the server's reason. Lock returns once that subscription is
// confirmed (it is sent while the LOCK is under way, so it costs no round
// trip). A release that comes while the grant's reply is still on its
// way is a loss too: the events of a lock's fences are kept while a Lock
// of it is under way, and a grant none of whose events were seen (the
// subscription may have come after it) is checked with CHECK. Renewal stays the fallback: against a server without lock events
// (SUBSCRIBE refused) the Client watches nothing and relies on it, and
// after the event connection was re-established every hold is checked
// with CHECK, as events may have been missed meanwhile. In cluster mode
// that connection (like a Watcher's) goes to another member when the one
// it was on goes away: every member publishes the events.
//
// # Events
//
// Watch delivers the events of the locks matching a pattern — acquired,
// released (with the reason), contended, free — on a channel, in order per
// lock, over a connection of its own that reconnects by itself:
//
//	w, err := c.Watch(ctx, "jobs:*")
//	for ev := range w.Events() {
//		fmt.Println(ev.Lock, ev.Kind, ev.Fence, ev.Reason)
//	}
//
// # Clusters
//
// A relock cluster is a Raft group in which only the leader serves lock
// commands; a follower answers them with MOVED (naming the leader) or,
// during an election, CLUSTERDOWN. Give the Client the members' addresses:
//
//	c, err := clientlib.New(clientlib.Options{
//		Addrs: []string{"10.0.0.1:6380", "10.0.0.2:6380", "10.0.0.3:6380"},
//	})
//
// Every call goes to the leader the Client last learnt of, or else to each
// address in turn. A MOVED reply is followed at once (a LOCK answered so
// was not queued, so sending it to the leader is safe) and the leader
// remembered for later calls. A CLUSTERDOWN reply or a refused connection
// is retried on the other addresses and then, after each round, with a
// backoff of up to half a second, for at most Options.FailoverTimeout (and
// within the call's ctx; within Options.ReadTimeout for Lock.Unlock,
// Lock.Renew and Lock.Check). The error after that matches ErrClusterDown
// or is the last network error. A command whose reply was lost is not
// sent again (an UNLOCK might have been applied), with one exception: a
// Lock or TryLock.
//
// A Lock waiting on a leader that dies is queued again on the new leader,
// without the caller noticing (it goes to the back of the queue; a Wait
// counts from the first try). The catch is that its grant may have been
// committed just before the crash, its key never delivered: the new
// leader then keeps that hold as an orphan, and a plain LOCK sent again
// would queue behind its own orphan until --restore-grace ran out. So in
// cluster mode each Lock call sends its LOCK with an OWNER unique to the
// call ("clientlib:" and 16 hex digits; LOCKS shows it). The decision rule:
// MOVED and CLUSTERDOWN mean the LOCK was not applied: it is sent to the
// leader. A connection that closed while the LOCK was in flight or
// waiting, or a TRYAGAIN reply, means the outcome is unknown: the same
// LOCK is sent again, and the server decides, in log order, after the new
// leader's takeover entry: if the earlier LOCK was granted, the hold with
// the call's OWNER exists and the new LOCK re-enters it at once (same key
// and fence); if not, nothing holds that OWNER and the LOCK queues. A key
// got after an unknown outcome is settled before Lock returns it: RENEW
// adopts an orphan onto the call's connection, LOCKS checks the binding,
// and UNLOCK counts the re-entries down to one. One Lock call thus never
// ends with two holds, and a hold it got is returned or released: if the
// call gives up while an outcome is unknown (no leader within
// FailoverTimeout, its ctx, Close, 16 unknown outcomes in a row; the
// first is sent again at once, the next after a backoff), a
// TRYLOCK with its OWNER, sent in the background, re-enters a hold left
// behind and UNLOCKs it (if no leader answers that either, the orphan
// expires). With the caller's own Owner the OWNER is not the call's alone
// (other calls with it re-enter the same hold), so an unknown outcome is
// returned as an error instead — except in Election.Campaign, whose
// candidate id is one campaign's at a time.
//
// Holds survive a leader change. The server binds a hold to the
// connection that took it; when the leader goes away, its connections
// close, and the new leader keeps their holds as orphans until the
// server's --restore-grace (or their own TTL deadline, if sooner) runs
// out. The first RENEW with a hold's key adopts it: binds it to the
// renewing connection. So in cluster mode — more than one address, or
// Options.Cluster — a Lock whose connection drops is not reported lost at
// once: its keeper dials the leader, sends RENEW, checks with LOCKS that
// the hold is bound to the new connection, and keeps the lock there,
// without the caller noticing (Key and Fence stay the same). The keeper
// never sends LOCK: if RENEW answers NOTHELD (the connection dropped but
// the leader did not change, so the server released the hold, as a
// single server does), the loss is reported with cause ErrNotHeld; if no
// leader re-attaches the hold before its TTL deadline (a lock without a
// TTL: Options.FailoverTimeout after the drop), with cause ErrConnClosed.
// Until the keeper has re-attached the hold, whether it is still held is
// not known; work that must never overlap another holder's should hand
// Fence to the storage it writes to. With NoAutoRenew the keeper does not
// RENEW a TTL hold behind the caller's back: the caller's next Lock.Renew
// re-attaches it. A single address without Options.Cluster means a single
// server: a dropped connection is a loss at once, as the server released
// the hold.
//
// # Helpers
//
// Semaphore is a lock of size n (at most n holders: limiting concurrent use
// of a resource). Election is leader election, the primary/secondary
// failover pattern: Campaign waits to lead, the Lock's Lost channel says
// when leadership ends, Resign hands it to the next candidate, Leader and
// Observe show who leads. Mutex is a sync.Locker on a lock. RWMutex is a
// reader/writer lock on shared holds (see Shared): readers share it, a
// writer has it alone, and Upgrade makes a reader the writer atomically
// (Lock.Upgrade: a new key and a larger fence, renewed and watched like
// the old), Downgrade lets the queued readers back in.
//
// # Errors
//
// Error replies are *ServerError values matching ErrNotHeld,
// ErrSizeMismatch, ErrLimit, ErrDeadlock or ErrClusterDown with errors.Is. Network errors are go-redis's
// and net's own, wrapped.
//
// The package imports only go-redis and the standard library; its tests
// start an in-process server from package commands.
package clientlib
