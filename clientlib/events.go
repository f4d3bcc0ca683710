package clientlib

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lock events: the server publishes every change of a lock on the pub/sub
// channel "__lock__:" + its name (SUBSCRIBE, PSUBSCRIBE). Watch delivers
// them as Events; a Client also uses them to learn at once that a lock it
// holds was released behind its back (see losswatch.go).

// EventChannelPrefix starts the pub/sub channel of every lock's events:
// the channel of lock "x" is "__lock__:x".
const EventChannelPrefix = "__lock__:"

// EventKind is what happened to a lock.
type EventKind uint8

const (
	// Acquired: a hold was granted (Fence is its fence). A re-entry with
	// OWNER is not an event.
	Acquired EventKind = iota + 1
	// Released: a hold ended (Fence, Reason).
	Released
	// Contended: a request started waiting on the held lock (Waiters is
	// the number of waiters now).
	Contended
	// Free: the lock has no holders, no waiters and no slot in lock-delay
	// left: it no longer exists.
	Free
)

// String returns the kind as the server's payload names it: "acquired",
// "released", "contended" or "free".
func (k EventKind) String() string {
	switch k {
	case Acquired:
		return "acquired"
	case Released:
		return "released"
	case Contended:
		return "contended"
	case Free:
		return "free"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Reasons of a Released event.
const (
	ReasonUnlock     = "unlock"     // UNLOCK with the hold's key
	ReasonDisconnect = "disconnect" // the holding connection closed
	ReasonExpired    = "expired"    // the TTL ran out
	ReasonForced     = "forced"     // FORCEUNLOCK
	ReasonKilled     = "killed"     // CLIENT KILL of the holding connection
	ReasonReset      = "reset"      // RESET on the holding connection
	ReasonUpgraded   = "upgraded"   // UPGRADE replaced the fence (an Acquired with the new one follows)
)

// Event is one change of a lock, in the order the server made them (per
// lock). Fields that do not apply to the Kind are zero.
type Event struct {
	Lock    string    // the lock's name
	Kind    EventKind // what happened
	Fence   uint64    // Acquired, Released: the hold's fence
	Reason  string    // Released: one of the Reason* constants (or a newer one)
	Waiters int       // Contended: how many requests wait now
	At      time.Time // when the client received it
}

// String formats the event as one line: "name kind field=value...".
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.Lock)
	b.WriteByte(' ')
	b.WriteString(e.Kind.String())
	switch e.Kind {
	case Acquired:
		fmt.Fprintf(&b, " fence=%d", e.Fence)
	case Released:
		fmt.Fprintf(&b, " fence=%d reason=%s", e.Fence, e.Reason)
	case Contended:
		fmt.Fprintf(&b, " waiters=%d", e.Waiters)
	}
	return b.String()
}

// parseEvent turns a message on channel into an Event. ok is false for a
// channel outside EventChannelPrefix and for a payload it does not know
// (a newer server's event): those are skipped. Fields after the known ones
// are ignored, so that a server may add some.
func parseEvent(channel, payload string, at time.Time) (ev Event, ok bool) {
	name, found := strings.CutPrefix(channel, EventChannelPrefix)
	if !found {
		return Event{}, false
	}
	f := strings.Split(payload, " ")
	ev = Event{Lock: name, At: at}
	var err error
	switch f[0] {
	case "acquired":
		if len(f) < 2 {
			return Event{}, false
		}
		ev.Kind = Acquired
		ev.Fence, err = strconv.ParseUint(f[1], 10, 64)
	case "released":
		if len(f) < 3 || f[2] == "" {
			return Event{}, false
		}
		ev.Kind, ev.Reason = Released, f[2]
		ev.Fence, err = strconv.ParseUint(f[1], 10, 64)
	case "contended":
		if len(f) < 2 {
			return Event{}, false
		}
		ev.Kind = Contended
		ev.Waiters, err = strconv.Atoi(f[1])
	case "free":
		ev.Kind = Free
	default:
		return Event{}, false
	}
	if err != nil {
		return Event{}, false
	}
	return ev, true
}

// isGlob reports whether a pattern has glob characters (or escapes), so
// that it needs PSUBSCRIBE rather than SUBSCRIBE.
func isGlob(pattern string) bool { return strings.ContainsAny(pattern, `*?[\`) }

// Watcher delivers the lock events of the locks whose names match a
// pattern. Create it with Client.Watch; stop it with Close or by ending
// the ctx given to Watch. It is safe for concurrent use.
type Watcher struct {
	sub     *subscriber
	events  chan Event
	stopCtx func() bool // unregisters the ctx's AfterFunc

	// mu guards err.
	mu  sync.Mutex
	err error
}

// Watch subscribes to the events of the locks whose names match pattern,
// a glob as LOCKS takes it (*, ?, [a-z], \x; "*" for every lock; a name
// without glob characters watches that one lock), and returns once the
// server confirmed the subscription: every change after that is
// delivered, in order per lock, on Events.
//
// The Watcher has a connection of its own. If it breaks, the Watcher
// reconnects and subscribes again (with a backoff of up to a second) —
// in cluster mode to the next member in turn, as every member publishes
// the events, so that a member that went away is left behind — and the
// events in between are lost: a Watcher tells what happens, it is
// not a log. It also reconnects when the server disconnects it for not
// reading its events fast enough (the server bounds a subscriber's
// unsent output), so read Events promptly. Events the Client does not
// know (from a newer server) are skipped.
//
// Events is closed when ctx ends, on Close, on Client.Close, or when the
// server refuses the subscription after a reconnect (Err says why). An
// error reply to the first subscription (a server without lock events,
// a user whose ACL does not allow the names) is returned by Watch as a
// *ServerError.
func (c *Client) Watch(ctx context.Context, pattern string) (*Watcher, error) {
	if pattern == "" {
		return nil, errors.New("watch: empty pattern")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("watch %s: %w", quote(pattern), err)
	}
	w := &Watcher{events: make(chan Event, 64)}
	sub, err := c.newSubscriber(w.handle)
	if err != nil {
		return nil, err
	}
	w.sub = sub
	cmd := "SUBSCRIBE"
	if isGlob(pattern) {
		cmd = "PSUBSCRIBE"
	}
	if err := sub.first(ctx, cmd, EventChannelPrefix+pattern); err != nil {
		sub.close()
		c.dropSubscriber(sub)
		err = serverError(cmd, "", err)
		if isReply(err) {
			return nil, err
		}
		return nil, c.ctxError(ctx, "watch", pattern, err)
	}
	w.stopCtx = context.AfterFunc(ctx, sub.stop)
	sub.start(func(err error) {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		close(w.events)
		c.dropSubscriber(sub)
	})
	return w, nil
}

// handle passes on one message read from the connection; it returns false
// when the Watcher is stopping.
func (w *Watcher) handle(msg any) bool {
	m, ok := msg.(*redis.Message)
	if !ok {
		return true
	}
	ev, ok := parseEvent(m.Channel, m.Payload, time.Now())
	if !ok {
		return true
	}
	select {
	case w.events <- ev:
		return true
	case <-w.sub.stopc:
		return false
	}
}

// Events returns the channel of events. It is closed when the Watcher
// stops (see Watch).
func (w *Watcher) Events() <-chan Event { return w.events }

// Close stops the Watcher, closing its connection and Events, and waits
// until its goroutine has returned. Idempotent.
func (w *Watcher) Close() error {
	w.sub.close()
	w.stopCtx()
	return nil
}

// Err returns why Events was closed when the Watcher stopped by itself
// (the server refused to subscribe again after a reconnect), or nil.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// subscriber is one pub/sub connection of a Client (a go-redis PubSub on
// the shared pool's options, so a connection of its own) and the goroutine
// that reads it. The Client owns it: Client.Close stops every subscriber
// and waits for its goroutine.
type subscriber struct {
	c  *Client
	ps *redis.PubSub
	// rdb is, in cluster mode, the subscriber's own go-redis client, whose
	// dialer walks the members (see memberDialer); nil otherwise (ps is
	// then made by the shared pool of its address).
	rdb *redis.Client
	// handle is called with every message read (a *redis.Message or a
	// *redis.Subscription), in order, from the reading goroutine; it
	// returns false to stop reading.
	handle func(any) bool

	stopc    chan struct{} // closed by stop
	stopOnce sync.Once
	done     chan struct{} // closed when the reading goroutine returned
	running  atomic.Bool   // start launched the reading goroutine
}

// healthInterval is how long a subscriber's connection may stay silent
// before it is sent a PING; pingTimeout is how long the PONG may take
// before the connection is replaced. They find a connection whose peer
// vanished without a reset (a half-open TCP connection).
const (
	healthInterval = 15 * time.Second
	pingTimeout    = 5 * time.Second
)

// newSubscriber returns a subscriber whose messages go to handle, not yet
// connected, registered with the Client (ErrClosed after Close).
func (c *Client) newSubscriber(handle func(any) bool) (*subscriber, error) {
	s := &subscriber{c: c, handle: handle, stopc: make(chan struct{}), done: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	// In a cluster the events come from the leader, as far as the Client
	// knows one.
	ep := c.addrs[0]
	if c.leader != (endpoint{}) {
		ep = c.leader
	}
	if c.cluster {
		// go-redis reconnects a PubSub to the address it was made for:
		// had the member gone for good, the subscriber would be deaf for
		// good. Its own dialer makes each reconnect try the next member
		// (every member publishes the events); go-redis subscribes there
		// again.
		d := newMemberDialer(c, ep)
		s.rdb = c.newPoolDialer(ep, d.dial)
		s.ps = s.rdb.Subscribe(context.Background())
	} else {
		p := c.pools[ep]
		if p == nil {
			p = c.newPool(ep)
			c.pools[ep] = p
		}
		s.ps = p.Subscribe(context.Background())
	}
	c.subs[s] = struct{}{}
	return s, nil
}

// memberDialer dials a subscriber's connection in cluster mode: first the
// member chosen for it, then, each time go-redis reconnects, the members
// after the one it last tried, in turn, each once per dial, so that a
// member that went away is left behind.
type memberDialer struct {
	c     *Client
	first endpoint

	// mu guards the fields below.
	mu     sync.Mutex
	dialed bool // the first dial was made
	next   int  // index in c.addrs of the member to try next
}

func newMemberDialer(c *Client, first endpoint) *memberDialer {
	d := &memberDialer{c: c, first: first}
	d.tried(first)
	return d
}

// dial is the go-redis Dialer of the subscriber's client; it ignores the
// address go-redis asks for.
func (d *memberDialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var last error
	for _, ep := range d.order() {
		conn, err := d.c.dialRaw(ctx, ep.network, ep.addr)
		d.tried(ep)
		if err == nil {
			return conn, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// order returns the members to try in one dial: the first member the
// first time, then every member once, from the one after the last tried.
func (d *memberDialer) order() []endpoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	addrs := d.c.addrs
	eps := make([]endpoint, 0, len(addrs)+1)
	if !d.dialed {
		d.dialed = true
		eps = append(eps, d.first)
	}
	for i := range addrs {
		if ep := addrs[(d.next+i)%len(addrs)]; !slices.Contains(eps, ep) {
			eps = append(eps, ep)
		}
	}
	return eps
}

// tried records that ep was just tried: the next dial starts after it.
func (d *memberDialer) tried(ep endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i := slices.Index(d.c.addrs, ep); i >= 0 {
		d.next = (i + 1) % len(d.c.addrs)
	}
}

// dropSubscriber forgets a stopped subscriber.
func (c *Client) dropSubscriber(s *subscriber) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
}

// first sends cmd (SUBSCRIBE or PSUBSCRIBE) for channel and waits, within
// ctx and Options.ReadTimeout, for the server's confirmation or error.
// Cancelling ctx aborts it.
func (s *subscriber) first(ctx context.Context, cmd, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, s.c.opt.DialTimeout+s.c.opt.ReadTimeout)
	defer cancel()
	// go-redis reads with the ctx's deadline but is not woken by a cancel:
	// closing the PubSub is.
	stop := context.AfterFunc(ctx, s.stop)
	defer stop()
	var err error
	if cmd == "PSUBSCRIBE" {
		err = s.ps.PSubscribe(ctx, channel)
	} else {
		err = s.ps.Subscribe(ctx, channel)
	}
	if err != nil {
		return err
	}
	for {
		msg, err := s.ps.Receive(ctx)
		if err != nil {
			return err
		}
		if sub, ok := msg.(*redis.Subscription); ok && sub.Channel == channel {
			return nil
		}
	}
}

// start starts the reading goroutine; ended is called once it stops, with
// the error that stopped it (nil when stopped by stop), before done
// closes. After Client.Close it starts nothing and calls ended at once.
func (s *subscriber) start(ended func(error)) {
	s.c.mu.Lock()
	if s.c.closed {
		s.c.mu.Unlock()
		s.stop()
		ended(nil)
		return
	}
	s.running.Store(true)
	s.c.mu.Unlock()
	go func() {
		defer close(s.done)
		err := s.read()
		s.stop() // closes the connection, if read ended by itself
		ended(err)
	}()
}

// read reads the connection until stop, or until the server answers a
// (re)subscription with an error, which it returns. After a network error
// go-redis reconnects (in cluster mode through memberDialer: to the next
// member) and subscribes again on the next read; read waits a
// backoff (50 ms doubling up to 1 s) between failed tries.
func (s *subscriber) read() error {
	backoff := time.Duration(0)
	pinged := false
	for {
		if s.stopping() {
			return nil
		}
		var msg any
		var err error
		if pinged {
			// A read whose deadline is the ctx's: running out of it is a
			// bad connection to go-redis, which replaces it.
			ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
			msg, err = s.ps.Receive(ctx)
			cancel()
		} else {
			// Running out of this timeout keeps the connection.
			msg, err = s.ps.ReceiveTimeout(context.Background(), healthInterval)
		}
		if s.stopping() {
			return nil
		}
		if err != nil {
			var rerr redis.Error
			switch {
			case errors.As(err, &rerr):
				return serverError("SUBSCRIBE", "", err)
			case !pinged && isTimeout(err):
				ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
				perr := s.ps.Ping(ctx)
				cancel()
				pinged = perr == nil
				continue
			}
			pinged = false
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			if !s.sleep(backoff) {
				return nil
			}
			continue
		}
		backoff, pinged = 0, false
		if !s.handle(msg) {
			return nil
		}
	}
}

// isTimeout reports whether err is a read timing out.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func (s *subscriber) stopping() bool {
	select {
	case <-s.stopc:
		return true
	default:
		return false
	}
}

// sleep waits d; false if stopped meanwhile.
func (s *subscriber) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stopc:
		return false
	}
}

// stop makes the subscriber stop, closing its connection, without waiting.
// Idempotent; safe from any goroutine.
func (s *subscriber) stop() {
	s.stopOnce.Do(func() {
		close(s.stopc)
		s.ps.Close()
		if s.rdb != nil {
			s.rdb.Close()
		}
	})
}

// close stops the subscriber and waits for its goroutine, if started.
func (s *subscriber) close() {
	s.stop()
	if s.running.Load() {
		<-s.done
	}
}
