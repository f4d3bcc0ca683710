package clientlib

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// lossWatch is how a Client learns at once that a lock it holds was
// released behind its back (its TTL ran out, FORCEUNLOCK, CLIENT KILL):
// one pub/sub connection per Client, started with the first Lock call,
// subscribed to the event channel of every lock the Client holds or is
// taking. A "released <fence> <reason>" event for the fence of a hold
// marks it lost at once, instead of at its next renewal — which stays the
// fallback: for a server without lock events (SUBSCRIBE refused: the
// watch turns itself off for good), for the events missed while the
// connection is re-established (every watched hold is then checked with
// CHECK), and for holds without a TTL, which never renew.
//
// It has two goroutines, owned by the Client and stopped by Client.Close:
// the subscriber's, which reads events, and sync, which sends the
// SUBSCRIBE and UNSUBSCRIBE commands that bring the connection's
// subscriptions in line with the names wanted, so that no Lock or Unlock
// call ever waits on this connection's writes or dials. A Lock call waits
// only for the confirmation of its name's subscription (see ready), at
// most Options.ReadTimeout.
type lossWatch struct {
	c    *Client
	kick chan struct{} // buffered(1): names changed, sync again
	// ctx is cancelled by close: it stops sync and aborts its writes.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards the fields below.
	mu      sync.Mutex
	started bool
	off     bool // no events (refused, or closed): renewal only
	sub     *subscriber
	names   map[string]*watchedName
	// subscribed are the names the connection is (or will be, once the
	// commands sent are applied) subscribed to.
	subscribed map[string]bool
	// inflight counts the SUBSCRIBEs of a name sent and not yet confirmed.
	inflight map[string]int
}

// watchedName is one name the lossWatch is subscribed to for.
type watchedName struct {
	refs  int              // Lock calls under way and holds
	holds map[uint64]*hold // by fence
	ready chan struct{}    // closed once the subscription is confirmed (or off)
	// seen are the latest events of fences no hold was attached for,
	// kept while a Lock call of the name is under way (refs > holds): a
	// grant's events may come before the grant's reply, and so before
	// its hold is attached (see attach). At most maxSeen, oldest first.
	seen []seenFence
}

// seenFence is an event of a fence: acquired (reason ""), or released
// with its reason.
type seenFence struct {
	fence  uint64
	reason string
}

// maxSeen bounds watchedName.seen: a grant whose events are older than
// the last maxSeen of its lock is checked with CHECK instead.
const maxSeen = 64

// pending reports whether a Lock call of the name is under way: a hold
// may yet be attached.
func (n *watchedName) pending() bool { return n.refs > len(n.holds) }

// remember records an event of a fence no hold is attached for, while a
// Lock call is under way.
func (n *watchedName) remember(ev Event) {
	if !n.pending() {
		return
	}
	if len(n.seen) == maxSeen {
		n.seen = append(n.seen[:0], n.seen[1:]...)
	}
	reason := ev.Reason
	if ev.Kind == Acquired {
		reason = ""
	}
	n.seen = append(n.seen, seenFence{ev.Fence, reason})
}

// lookup returns what the events seen say of fence: released (with its
// reason), or acquired only (seen), or nothing (neither).
func (n *watchedName) lookup(fence uint64) (released string, seen bool) {
	for i := len(n.seen) - 1; i >= 0; i-- {
		if f := n.seen[i]; f.fence == fence {
			if f.reason != "" {
				return f.reason, true
			}
			seen = true
		}
	}
	return "", seen
}

func newLossWatch(c *Client) *lossWatch {
	w := &lossWatch{
		c:          c,
		kick:       make(chan struct{}, 1),
		names:      make(map[string]*watchedName),
		subscribed: make(map[string]bool),
		inflight:   make(map[string]int),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// want adds a reference to name, subscribing to its channel if it is the
// first; the caller drops it with unwant, or hands it to a hold with
// attach. It returns the channel closed once the subscription is
// confirmed (at once when the watch is off).
func (w *lossWatch) want(name string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off {
		return closedChan
	}
	if !w.started {
		if !w.startLocked() {
			return closedChan
		}
	}
	n := w.names[name]
	if n == nil {
		n = &watchedName{holds: make(map[uint64]*hold), ready: make(chan struct{})}
		w.names[name] = n
		if w.subscribed[name] && w.inflight[name] == 0 {
			// Wanted again before sync unsubscribed it: still subscribed.
			close(n.ready)
		} else {
			w.poke()
		}
	}
	n.refs++
	return n.ready
}

// closedChan is a channel that is always closed.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// unwant drops a reference taken by want; the last one unsubscribes.
func (w *lossWatch) unwant(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked(name)
}

func (w *lossWatch) releaseLocked(name string) {
	n := w.names[name]
	if n == nil {
		return
	}
	if n.refs--; n.refs <= 0 {
		delete(w.names, name)
		w.poke()
	} else if !n.pending() {
		n.seen = nil
	}
}

// attach makes the reference taken by want the hold's: events for its
// fence reach it until detach. The events of a grant may come before its
// reply: released is the reason of a release of the hold's fence that
// came before (the hold was released while its grant was on its way; the
// caller reports the loss), and unsure is true when no event of the
// fence was seen at all (the subscription may have come after the grant
// and missed its release): the caller then has the hold checked, once
// the subscription is confirmed.
func (w *lossWatch) attach(h *hold) (released string, unsure bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.names[h.name]
	if n == nil {
		return "", false // no events (the watch is off): renewal only
	}
	_, fence := h.keyFence()
	released, seen := n.lookup(fence)
	n.holds[fence] = h
	h.watched = true
	if !n.pending() {
		n.seen = nil
	}
	return released, !seen
}

// detach drops the reference of a hold that ended.
func (w *lossWatch) detach(h *hold) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !h.watched {
		return
	}
	h.watched = false
	if n := w.names[h.name]; n != nil {
		_, fence := h.keyFence()
		if n.holds[fence] == h {
			delete(n.holds, fence)
		}
	}
	w.releaseLocked(h.name)
}

// upgraded gives the hold its new key and fence (an UPGRADE's), and routes
// the events of the new fence to it instead of the old one's, in one step:
// the "released <old fence> upgraded" event, whenever it comes, then
// either finds the hold upgrading (not a loss) or finds no hold.
func (w *lossWatch) upgraded(h *hold, key string, fence uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h.mu.Lock()
	old := h.fence
	h.key, h.fence, h.shared = key, fence, false
	h.mu.Unlock()
	if !h.watched {
		return
	}
	if n := w.names[h.name]; n != nil {
		if n.holds[old] == h {
			delete(n.holds, old)
		}
		n.holds[fence] = h
	}
}

func (w *lossWatch) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// startLocked creates the subscriber and starts the goroutines; false if
// the Client is closed.
func (w *lossWatch) startLocked() bool {
	sub, err := w.c.newSubscriber(w.handle)
	if err != nil {
		w.offLocked()
		return false
	}
	w.started, w.sub = true, sub
	sub.start(func(err error) {
		w.c.dropSubscriber(sub)
		if err != nil {
			// The server refused SUBSCRIBE (no lock events, ACL): renewal
			// only, for good.
			w.mu.Lock()
			w.offLocked()
			w.mu.Unlock()
			sub.stop()
		}
	})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.sync()
	}()
	return true
}

// offLocked turns the watch off: every wait for a subscription ends.
func (w *lossWatch) offLocked() {
	if w.off {
		return
	}
	w.off = true
	for _, n := range w.names {
		closeOnce(n.ready)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// sync sends the (UN)SUBSCRIBE commands that make the connection's
// subscriptions the names wanted, whenever they change, until close or
// until the watch is off. A failed write needs no retry: go-redis keeps
// the channels it was asked for and subscribes to them again when it
// reconnects (which the subscriber's next read does).
func (w *lossWatch) sync() {
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.kick:
		}
		for {
			w.mu.Lock()
			if w.off {
				w.mu.Unlock()
				return
			}
			var sub, unsub []string
			for name := range w.names {
				if !w.subscribed[name] {
					w.subscribed[name] = true
					w.inflight[name]++
					sub = append(sub, EventChannelPrefix+name)
				}
			}
			for name := range w.subscribed {
				if w.names[name] == nil {
					delete(w.subscribed, name)
					unsub = append(unsub, EventChannelPrefix+name)
				}
			}
			ps := w.sub.ps
			w.mu.Unlock()
			if len(sub) == 0 && len(unsub) == 0 {
				break
			}
			ctx, cancel := context.WithTimeout(w.ctx, w.c.opt.DialTimeout+w.c.opt.ReadTimeout)
			if len(unsub) > 0 {
				ps.Unsubscribe(ctx, unsub...)
			}
			if len(sub) > 0 {
				ps.Subscribe(ctx, sub...)
			}
			cancel()
		}
	}
}

// handle takes one message of the subscriber: a confirmation makes a
// name ready; a release of a watched hold's fence marks it lost.
func (w *lossWatch) handle(msg any) bool {
	switch m := msg.(type) {
	case *redis.Subscription:
		if m.Kind != "subscribe" {
			return true
		}
		name, ok := cutChannel(m.Channel)
		if !ok {
			return true
		}
		var check []*hold
		w.mu.Lock()
		if w.inflight[name] > 0 {
			if w.inflight[name]--; w.inflight[name] == 0 {
				delete(w.inflight, name)
			}
		} else if n := w.names[name]; n != nil {
			// Not asked for: go-redis subscribed again after a reconnect.
			// Events may have been missed meanwhile: check the holds.
			for _, h := range n.holds {
				check = append(check, h)
			}
		}
		if n := w.names[name]; n != nil && w.inflight[name] == 0 {
			closeOnce(n.ready)
		}
		w.mu.Unlock()
		for _, h := range check {
			h.checkSoon()
		}
	case *redis.Message:
		ev, ok := parseEvent(m.Channel, m.Payload, time.Now())
		if !ok || (ev.Kind != Released && ev.Kind != Acquired) {
			return true
		}
		w.mu.Lock()
		var h *hold
		if n := w.names[ev.Lock]; n != nil {
			if h = n.holds[ev.Fence]; h == nil {
				n.remember(ev) // perhaps of a grant not attached yet
			}
		}
		w.mu.Unlock()
		if ev.Kind != Released {
			return true
		}
		if h != nil {
			h.releasedBy(ev.Reason)
		}
	}
	return true
}

// cutChannel returns the lock name of an event channel.
func cutChannel(channel string) (string, bool) {
	if len(channel) < len(EventChannelPrefix) || channel[:len(EventChannelPrefix)] != EventChannelPrefix {
		return "", false
	}
	return channel[len(EventChannelPrefix):], true
}

// close stops the goroutines and closes the connection, and waits for
// them. Called by Client.Close once every hold has ended.
func (w *lossWatch) close() {
	w.mu.Lock()
	w.offLocked()
	sub := w.sub
	w.mu.Unlock()
	w.cancel()
	if sub != nil {
		sub.close()
	}
	w.wg.Wait()
}
