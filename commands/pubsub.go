package commands

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/resp"
)

// Lock events over pub/sub (SPEC §8.1). A connection subscribes to
// __lock__:<name> channels and __lock__:<glob> patterns; the lock table
// tells the Hub of every change of a lock (locktable.Notice) in the
// critical section of the change, so the Hub sees a lock's changes in
// order. It queues each message for its subscribers and posts one
// msgPublish to each subscriber's owner, which writes the queue into the
// connection's output in its round: like every reply, after the round's
// commit (--fsync always), so that no event reports what a crash could
// undo. In a cluster the table is the Raft FSM's, which applies only
// committed entries, on every node: followers serve events too.

// lockChannelPrefix starts every channel relock publishes on.
const lockChannelPrefix = "__lock__:"

// defaultPubsubLimit is the unsent event output a subscriber may have
// before it is disconnected (Config.PubsubLimit), as Redis's pubsub client
// output limit does (its hard limit is 32 MiB; events are small).
const defaultPubsubLimit = 8 << 20

// Hub routes lock notices to subscribed connections. Make it with NewHub
// and give it to the lock table's config (Notify, Watched) and to the
// server's (Config.Hub); a server without one makes its own.
type Hub struct {
	// subs counts subscriptions of every connection: while 0 the table
	// builds no notice (Watched).
	subs atomic.Int64
	// limit is Config.PubsubLimit, set by the server before it serves.
	limit atomic.Int64

	// mu guards the maps; Notify reads them under the table's shard
	// mutex, (un)subscribing writes them (never under a shard mutex).
	mu       sync.RWMutex
	channels map[string]map[*subscriber]struct{} // by lock name
	patterns map[string]*patternSubs             // by glob (after the prefix)
	// prefixes index patterns by their glob's literal prefix; lens are
	// the distinct prefix lengths, ascending: a name is matched only
	// against the patterns whose prefix it starts with.
	prefixes map[string][]*patternSubs
	lens     []int
	nlen     map[int]int // prefixes indexed of each length in lens

	published atomic.Int64 // messages queued for subscribers
	dropped   atomic.Int64 // subscribers disconnected for not reading
	conns     atomic.Int64 // connections with at least one subscription

	// Patterns are matched off the table's critical section (match):
	// Notify leaves each notice in pending, in order, for the goroutine
	// running dispatch, while one does. pmu guards pending and lost.
	pmu         sync.Mutex
	pending     []locktable.Notice
	lost        bool          // pending was full: notices were dropped
	pendingMax  int           // maxPendingNotices (tests lower it)
	pwake       chan struct{} // cap 1: pending has notices
	dispatching atomic.Bool
}

// maxPendingNotices bounds the notices waiting for pattern matching. Past
// it, notices are dropped and every pattern subscriber, which would miss
// them, is disconnected, as a slow subscriber is: matching cannot keep up
// (the patterns are too many or too costly for the rate of changes).
const maxPendingNotices = 1 << 16

// patternSubs are the subscribers of one pattern.
type patternSubs struct {
	glob    string // after the prefix
	channel string // as subscribed: prefix + glob
	prefix  string // the glob's literal prefix
	at      int    // its index in prefixes[prefix]
	subs    map[*subscriber]struct{}
}

// NewHub returns a hub with no subscriptions.
func NewHub() *Hub {
	h := &Hub{
		channels:   map[string]map[*subscriber]struct{}{},
		patterns:   map[string]*patternSubs{},
		prefixes:   map[string][]*patternSubs{},
		nlen:       map[int]int{},
		pwake:      make(chan struct{}, 1),
		pendingMax: maxPendingNotices,
	}
	h.limit.Store(defaultPubsubLimit)
	return h
}

// Watched reports whether any connection subscribes to anything (the lock
// table's Config.Watched).
func (h *Hub) Watched() bool { return h.subs.Load() > 0 }

// Notify queues n for the connections subscribed to its lock (the lock
// table's Config.Notify). It runs in the table's critical section: it
// only appends to queues and posts to owners. Pattern subscriptions are
// matched later, in order, by dispatch (a glob costs up to
// len(pattern)·len(name), and a change must not wait for every pattern
// of every connection); without a dispatcher (tests), here.
func (h *Hub) Notify(n locktable.Notice) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var m message // built on the first match
	for sub := range h.channels[n.Name] {
		if m.channel == "" {
			m = newMessage(n)
		}
		h.queue(sub, m)
	}
	switch {
	case len(h.patterns) == 0:
	case h.dispatching.Load():
		h.pmu.Lock()
		if len(h.pending) < h.pendingMax {
			n.Name = strings.Clone(n.Name) // the table's memory may hold it
			h.pending = append(h.pending, n)
		} else {
			h.lost = true
		}
		h.pmu.Unlock()
		select {
		case h.pwake <- struct{}{}:
		default:
		}
	default:
		h.match(n, m)
	}
}

// match queues n for the pattern subscriptions it matches (m: its
// message, if built already). Caller holds h.mu (read).
func (h *Hub) match(n locktable.Notice, m message) {
	for _, l := range h.lens {
		if l > len(n.Name) {
			break
		}
		for _, ps := range h.prefixes[n.Name[:l]] {
			if len(ps.subs) == 0 || !globMatch(ps.glob, n.Name) {
				continue
			}
			if m.channel == "" {
				m = newMessage(n)
			}
			pm := m
			pm.pattern = ps.channel
			for sub := range ps.subs {
				h.queue(sub, pm)
			}
		}
	}
}

// dispatch matches the notices Notify leaves for the pattern
// subscriptions, in order, until stop is closed. The server runs it.
func (h *Hub) dispatch(stop <-chan struct{}) {
	h.dispatching.Store(true)
	defer h.dispatching.Store(false)
	var batch []locktable.Notice
	for {
		select {
		case <-stop:
			return
		case <-h.pwake:
		}
		h.pmu.Lock()
		batch, h.pending = h.pending, batch[:0]
		lost := h.lost
		h.lost = false
		h.pmu.Unlock()
		if lost {
			h.cutOffPatterns()
		}
		for i, n := range batch {
			h.mu.RLock() // per notice: (un)subscribing waits for one only
			h.match(n, message{})
			h.mu.RUnlock()
			batch[i] = locktable.Notice{}
		}
	}
}

// cutOffPatterns disconnects every pattern subscriber: notices it may
// match were dropped (maxPendingNotices).
func (h *Hub) cutOffPatterns() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, ps := range h.patterns {
		for sub := range ps.subs {
			h.overflow(sub)
		}
	}
}

// message is one event on its way to a subscriber.
type message struct {
	pattern string // the pattern it matched; "": a channel subscription
	channel string // prefix + lock name
	payload string
	name    string // the lock's name (ACL)
}

// newMessage renders n: its payload never holds a key.
func newMessage(n locktable.Notice) message {
	var p []byte
	p = append(p, n.Kind.String()...)
	switch n.Kind {
	case locktable.NoticeAcquired:
		p = append(p, ' ')
		p = strconv.AppendUint(p, n.Fence, 10)
	case locktable.NoticeReleased:
		p = append(p, ' ')
		p = strconv.AppendUint(p, n.Fence, 10)
		p = append(p, ' ')
		p = append(p, n.Reason.String()...)
	case locktable.NoticeContended:
		p = append(p, ' ')
		p = strconv.AppendInt(p, int64(n.Waiters), 10)
	}
	return message{channel: lockChannelPrefix + n.Name, payload: string(p), name: n.Name}
}

// queue appends m to sub's queue and wakes sub's owner, unless sub is over
// its limit: then it is marked to be disconnected.
func (h *Hub) queue(sub *subscriber, m message) {
	size := len(m.pattern) + len(m.channel) + len(m.payload) + 48 // framing
	sub.mu.Lock()
	if sub.overflow {
		sub.mu.Unlock()
		return
	}
	if sub.queued+size > int(h.limit.Load()) {
		sub.mu.Unlock()
		h.overflow(sub)
		return
	}
	sub.queue = append(sub.queue, m)
	sub.queued += size
	post := !sub.posted
	sub.posted = true
	sub.mu.Unlock()
	h.published.Add(1)
	if post {
		sub.c.own.post(msg{c: sub.c, kind: msgPublish})
	}
}

// overflow marks sub to be disconnected (once): its owner's msgPublish
// closes it, after cutOff counted it and broke a write it may be stuck in.
func (h *Hub) overflow(sub *subscriber) {
	sub.mu.Lock()
	if sub.overflow {
		sub.mu.Unlock()
		return
	}
	sub.overflow = true
	post := !sub.posted
	sub.posted = true
	sub.mu.Unlock()
	go h.cutOff(sub)
	if post {
		sub.c.own.post(msg{c: sub.c, kind: msgPublish})
	}
}

// cutOff counts and logs a subscriber whose queue passed the limit, and
// breaks a write its owner may be blocked in (a goroutine-served
// connection whose client stopped reading), so that the owner gets to its
// msgPublish, which closes the connection. Off the table's critical
// section (a goroutine of its own, not counted: it only closes a socket,
// never waits).
func (h *Hub) cutOff(sub *subscriber) {
	h.dropped.Add(1)
	c := sub.c
	c.own.srv.log.Warn("subscriber disconnected: its queued events passed the limit", "client", c.sess.id, "addr", c.sess.addr, "limit", h.limit.Load())
	c.io.breakWrite()
}

// subscriber is a connection's subscriptions and its queue of messages.
type subscriber struct {
	c *conn
	// setMu guards channels (lock names) and patterns (globs): the
	// connection's owner changes them, and so may its command running
	// off the owner (RESET) while the owner closes the connection.
	setMu    sync.Mutex
	channels map[string]struct{}
	patterns map[string]struct{}

	// mu guards the queue, which Notify fills from any goroutine.
	mu       sync.Mutex
	queue    []message
	spare    []message
	queued   int  // bytes, roughly
	posted   bool // a msgPublish is on its way, or the queue waits for a running command
	overflow bool // over the limit: disconnect
}

func (sub *subscriber) count() int {
	sub.setMu.Lock()
	defer sub.setMu.Unlock()
	return len(sub.channels) + len(sub.patterns)
}

// patternCount is how many patterns sub subscribes to.
func (sub *subscriber) patternCount() int {
	sub.setMu.Lock()
	defer sub.setMu.Unlock()
	return len(sub.patterns)
}

// newPatterns returns how many of patterns sub does not subscribe to
// yet, each counted once.
func (sub *subscriber) newPatterns(patterns [][]byte) int {
	sub.setMu.Lock()
	defer sub.setMu.Unlock()
	fresh := map[string]struct{}{}
	for _, a := range patterns {
		glob, _ := lockOfChannel(a)
		if _, ok := sub.patterns[glob]; !ok {
			fresh[glob] = struct{}{}
		}
	}
	return len(fresh)
}

// names returns sub's lock names (pattern: globs), sorted.
func (sub *subscriber) names(pattern bool) []string {
	sub.setMu.Lock()
	defer sub.setMu.Unlock()
	set := sub.channels
	if pattern {
		set = sub.patterns
	}
	out := make([]string, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// subscribed reports whether the session has any subscription.
func (sess *session) subscribed() bool { return sess.sub != nil && sess.sub.count() > 0 }

// subscribe adds lock name (pattern: a glob) to sub's subscriptions.
func (h *Hub) subscribe(sub *subscriber, name string, pattern bool) {
	sub.setMu.Lock()
	defer sub.setMu.Unlock()
	set := sub.channels
	if pattern {
		set = sub.patterns
	}
	if _, ok := set[name]; ok {
		return
	}
	if len(sub.channels)+len(sub.patterns) == 0 {
		h.conns.Add(1)
	}
	set[name] = struct{}{}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs.Add(1)
	if !pattern {
		sub.c.sess.nch.Add(1)
		m := h.channels[name]
		if m == nil {
			m = map[*subscriber]struct{}{}
			h.channels[name] = m
		}
		m[sub] = struct{}{}
		return
	}
	sub.c.sess.npat.Add(1)
	ps := h.patterns[name]
	if ps == nil {
		ps = &patternSubs{glob: name, channel: lockChannelPrefix + name, prefix: globPrefix(name), subs: map[*subscriber]struct{}{}}
		h.patterns[name] = ps
		if len(h.prefixes[ps.prefix]) == 0 {
			h.addLen(len(ps.prefix))
		}
		ps.at = len(h.prefixes[ps.prefix])
		h.prefixes[ps.prefix] = append(h.prefixes[ps.prefix], ps)
	}
	ps.subs[sub] = struct{}{}
}

// unsubscribe removes lock name (pattern: a glob) from sub's
// subscriptions; false if it was not there.
func (h *Hub) unsubscribe(sub *subscriber, name string, pattern bool) bool {
	sub.setMu.Lock()
	defer sub.setMu.Unlock()
	set := sub.channels
	if pattern {
		set = sub.patterns
	}
	if _, ok := set[name]; !ok {
		return false
	}
	delete(set, name)
	if len(sub.channels)+len(sub.patterns) == 0 {
		h.conns.Add(-1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs.Add(-1)
	if !pattern {
		sub.c.sess.nch.Add(-1)
		m := h.channels[name]
		delete(m, sub)
		if len(m) == 0 {
			delete(h.channels, name)
		}
		return true
	}
	sub.c.sess.npat.Add(-1)
	ps := h.patterns[name]
	delete(ps.subs, sub)
	if len(ps.subs) == 0 {
		delete(h.patterns, name)
		// In constant time (a connection may end a thousand patterns of
		// one prefix at once): the last pattern of the list takes its
		// place.
		list := h.prefixes[ps.prefix]
		last := list[len(list)-1]
		list[ps.at], last.at = last, ps.at
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if len(list) == 0 {
			delete(h.prefixes, ps.prefix)
			h.dropLen(len(ps.prefix))
		} else {
			h.prefixes[ps.prefix] = list
		}
	}
	return true
}

// addLen and dropLen keep lens: the distinct lengths of the prefixes
// indexed, and nlen. Caller holds h.mu.
func (h *Hub) addLen(l int) {
	h.nlen[l]++
	if h.nlen[l] > 1 {
		return
	}
	h.lens = append(h.lens, l)
	for i := len(h.lens) - 1; i > 0 && h.lens[i] < h.lens[i-1]; i-- {
		h.lens[i], h.lens[i-1] = h.lens[i-1], h.lens[i]
	}
}

func (h *Hub) dropLen(l int) {
	h.nlen[l]--
	if h.nlen[l] > 0 {
		return // another prefix of that length remains
	}
	delete(h.nlen, l)
	for i, x := range h.lens {
		if x == l {
			h.lens = append(h.lens[:i], h.lens[i+1:]...)
			return
		}
	}
}

// unsubscribeAll ends every subscription of sub (RESET, close).
func (h *Hub) unsubscribeAll(sub *subscriber) {
	if sub == nil {
		return
	}
	for _, name := range sub.names(false) {
		h.unsubscribe(sub, name, false)
	}
	for _, glob := range sub.names(true) {
		h.unsubscribe(sub, glob, true)
	}
	sub.mu.Lock()
	clear(sub.queue)
	sub.queue = sub.queue[:0]
	sub.queued = 0
	sub.mu.Unlock()
}

// publish writes c's queued messages into its output (msgPublish); the
// round commits before the output is written. A connection whose queue
// or output passed the limit is disconnected: a subscriber that stops
// reading never slows anyone else.
func (o *owner) publish(c *conn) {
	sess := c.sess
	sub := sess.sub
	if c.closed || sub == nil {
		return
	}
	if c.running() {
		return // posted stays set: msgRan publishes once the command is done
	}
	sub.mu.Lock()
	q, over := sub.queue, sub.overflow
	sub.queue, sub.spare = sub.spare[:0], q
	sub.queued = 0
	sub.posted = false
	sub.mu.Unlock()
	hub := o.srv.hub
	limit := int(hub.limit.Load())
	if !over {
		checkACL := o.srv.authRequired()
		for i := range q {
			m := &q[i]
			if checkACL && !sess.mayLock(m.name) {
				continue // a pattern matched a lock this user may not see
			}
			writeMessage(&sess.w, m)
		}
	}
	clear(q)
	if over {
		o.close(c) // counted and logged by cutOff
		return
	}
	if len(sess.w.B) > limit {
		hub.dropped.Add(1)
		o.srv.log.Warn("subscriber disconnected: its unsent event output passed the limit", "client", sess.id, "addr", sess.addr, "limit", limit)
		o.close(c)
		return
	}
	c.markDirty()
}

// writeMessage writes a message as Redis does: a push in RESP3, an array
// in RESP2.
func writeMessage(w *resp.Writer, m *message) {
	if m.pattern != "" {
		w.Push(4)
		w.BulkString("pmessage")
		w.BulkString(m.pattern)
	} else {
		w.Push(3)
		w.BulkString("message")
	}
	w.BulkString(m.channel)
	w.BulkString(m.payload)
}

// subscriber returns sess's subscriber, made on first use.
func (sess *session) subscriber() *subscriber {
	if sess.sub == nil {
		sess.sub = &subscriber{c: sess.c, channels: map[string]struct{}{}, patterns: map[string]struct{}{}}
	}
	return sess.sub
}

// cmdSubscribe: SUBSCRIBE channel [channel ...] — each channel is
// __lock__:<name>. A channel outside that space, or a lock the user may
// not touch, fails the command and subscribes none.
func (sess *session) cmdSubscribe(args [][]byte) *pendingWait {
	return sess.subscribeCmd(args, false)
}

// cmdPSubscribe: PSUBSCRIBE pattern [pattern ...] — each pattern is
// __lock__:<glob>; messages come only for locks the user may touch.
func (sess *session) cmdPSubscribe(args [][]byte) *pendingWait {
	return sess.subscribeCmd(args, true)
}

func (sess *session) subscribeCmd(args [][]byte, pattern bool) *pendingWait {
	if sess.c == nil {
		sess.fail("ERR subscriptions need a connection")
		return nil
	}
	for _, a := range args[1:] {
		name, ok := lockOfChannel(a)
		if !ok {
			sess.fail("ERR relock publishes lock events only, on channels named '" + lockChannelPrefix + "<lock name>' (got '" + string(a) + "')")
			return nil
		}
		if !pattern && !sess.mayLock(name) {
			sess.fail("NOPERM User " + sess.userName() + " has no permissions to access the '" + string(a) + "' channel")
			return nil
		}
		if len(name) > sess.srv.cfg.MaxNameLen {
			sess.fail(resp.Limit("lock name longer than max-name-len"))
			return nil
		}
	}
	sub := sess.subscriber()
	if max := sess.srv.cfg.MaxPatterns; pattern && sub.patternCount()+sub.newPatterns(args[1:]) > max {
		// Every pattern is matched against every change of the locks its
		// literal prefix covers: without a bound, one connection's
		// patterns would slow every lock command. (A channel is one map
		// lookup per change, whatever their number: clientlib's loss
		// watch subscribes to one per lock its client holds.)
		sess.fail(resp.Limit("too many patterns on this connection (max-patterns " + strconv.Itoa(max) + ")"))
		return nil
	}
	kind := "subscribe"
	if pattern {
		kind = "psubscribe"
	}
	for _, a := range args[1:] {
		name, _ := lockOfChannel(a)
		sess.srv.hub.subscribe(sub, name, pattern)
		sess.writeSubReply(kind, string(a), true, sub.count())
	}
	return nil
}

// cmdUnsubscribe: UNSUBSCRIBE [channel ...] — without channels, every one.
func (sess *session) cmdUnsubscribe(args [][]byte) *pendingWait {
	return sess.unsubscribeCmd(args, false)
}

// cmdPUnsubscribe: PUNSUBSCRIBE [pattern ...] — without patterns, every one.
func (sess *session) cmdPUnsubscribe(args [][]byte) *pendingWait {
	return sess.unsubscribeCmd(args, true)
}

func (sess *session) unsubscribeCmd(args [][]byte, pattern bool) *pendingWait {
	kind := "unsubscribe"
	if pattern {
		kind = "punsubscribe"
	}
	sub := sess.sub
	hub := sess.srv.hub
	if len(args) == 1 {
		var all []string
		if sub != nil {
			all = sub.names(pattern) // sorted: a stable order for clients and tests
		}
		if len(all) == 0 {
			n := 0
			if sub != nil {
				n = sub.count()
			}
			sess.writeSubReply(kind, "", false, n)
			return nil
		}
		for _, name := range all {
			hub.unsubscribe(sub, name, pattern)
			sess.writeSubReply(kind, lockChannelPrefix+name, true, sub.count())
		}
		return nil
	}
	for _, a := range args[1:] {
		n := 0
		if sub != nil {
			if name, ok := lockOfChannel(a); ok {
				hub.unsubscribe(sub, name, pattern)
			}
			n = sub.count()
		}
		sess.writeSubReply(kind, string(a), true, n)
	}
	return nil
}

// writeSubReply writes one (un)subscribe confirmation: [kind, channel,
// count], a push in RESP3 as in Redis; a nil channel when !ok.
func (sess *session) writeSubReply(kind, channel string, ok bool, count int) {
	w := &sess.w
	w.Push(3)
	w.BulkString(kind)
	w.BulkOrNull(channel, ok)
	w.Int(int64(count))
}

// lockOfChannel returns the lock name (or glob) of a channel (or pattern)
// in relock's space.
func lockOfChannel(ch []byte) (string, bool) {
	if len(ch) <= len(lockChannelPrefix) || string(ch[:len(lockChannelPrefix)]) != lockChannelPrefix {
		return "", false
	}
	return string(ch[len(lockChannelPrefix):]), true
}

// userName is the connection's user for messages ("default" without one).
func (sess *session) userName() string {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.user == "" {
		return "default"
	}
	return sess.user
}

// subscribedModeOK lists what a RESP2 connection with subscriptions may
// run, as in Redis.
func subscribedModeOK(name string) bool {
	switch name {
	case "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit", "reset":
		return true
	}
	return false
}
