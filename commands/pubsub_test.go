package commands

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relock/relock/persist"
)

// messages returns c's written replies with pub/sub messages as
// "message <channel> <payload>" (or "pmessage <pattern> …").
func (h *testOwner) messages(c *conn) []string {
	h.t.Helper()
	var out []string
	for _, r := range h.rawReplies(c) {
		parts := strings.Split(r, "\r\n")
		var fields []string
		for i := 1; i < len(parts)-1; i++ {
			if strings.HasPrefix(parts[i], "$") {
				i++
			}
			fields = append(fields, parts[i])
		}
		out = append(out, strings.Join(fields, " "))
	}
	return out
}

// twoOwners returns two owners of srv's connections; at the end of the
// test the first's connections are closed before the second checks that
// no session outlived its connection.
func twoOwners(t *testing.T, srv *Server) (*testOwner, *testOwner) {
	h1 := newTestOwner(t, srv, true)
	h2 := newTestOwner(t, srv, true)
	t.Cleanup(func() {
		for _, c := range h1.conns {
			h1.own.close(c)
		}
		h1.round()
	})
	return h1, h2
}

// TestPubSub_EventsWaitForTheCommit: with --fsync always an event is
// written to its subscriber only after the change it reports is durable,
// even when the change was made by another owner whose round has not yet
// committed: the subscriber's owner commits first.
func TestPubSub_EventsWaitForTheCommit(t *testing.T) {
	var subOut atomic.Int64
	var h2 *testOwner
	var sub *conn
	st, err := persist.Open(persist.Options{Dir: t.TempDir(), Mode: persist.Always, Fault: func(point string) error {
		if point == "before-fsync" && h2 != nil && sub != nil {
			subOut.Store(int64(len(h2.drv.out[sub])))
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(Config{Listen: "127.0.0.1:0", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.attachStore(); err != nil {
		t.Fatal(err)
	}
	h1, h2x := twoOwners(t, srv)
	h2 = h2x
	a := h1.connect()
	sub = h2.connect()
	h1.round()
	h2.send(sub, "SUBSCRIBE __lock__:x")
	h2.round()
	if got := h2.messages(sub); !equal(got, []string{"subscribe __lock__:x :1"}) {
		t.Fatalf("SUBSCRIBE: %q", got)
	}

	h1.send(a, "TRYLOCK x") // made and journaled now; h1's round would commit it
	if !st.Pending() {
		t.Fatal("the grant is not pending commit")
	}
	subOut.Store(-1)
	h2.roundsUntil("the event", func() bool { return len(h2.drv.out[sub]) > 0 })
	if n := subOut.Load(); n != 0 {
		t.Fatalf("at the commit the subscriber had %d bytes of output; want the commit first (-1: no commit at all)", n)
	}
	got := h2.messages(sub)
	if len(got) != 1 || !strings.HasPrefix(got[0], "message __lock__:x acquired ") {
		t.Fatalf("event: %q", got)
	}
	h1.round()
}

// TestPubSub_SlowSubscriberIsCutOff: a subscriber that does not read is
// disconnected once its unsent event output passes the limit, and the
// connection making the changes is served throughout.
func TestPubSub_SlowSubscriberIsCutOff(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0", PubsubLimit: 4096})
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := twoOwners(t, srv)
	a := h1.connect()
	slow := h2.connect()
	h2.send(slow, "PSUBSCRIBE __lock__:*")
	h2.round()
	h2.rawReplies(slow)
	h2.drv.stalled = true
	for i := 0; i < 1000 && !slow.closed; i++ {
		key := h1.take(a, "x")
		h1.send(a, "UNLOCK x "+key)
		if got := h1.await(a); !equal(got, []string{":1"}) {
			t.Fatalf("UNLOCK: %q", got)
		}
		h2.round()
	}
	if !slow.closed {
		t.Fatal("the subscriber that reads nothing was not disconnected")
	}
	if n := srv.hub.dropped.Load(); n != 1 {
		t.Errorf("dropped subscribers: %d; want 1", n)
	}
	if srv.hub.Watched() {
		t.Error("the dropped subscriber's subscriptions outlived it")
	}
}

// TestPubSub_PatternMatchingThatFallsBehindCutsOffPatternSubscribers:
// patterns are matched off the table's critical section, from a bounded
// queue of notices; when matching falls so far behind that notices are
// dropped, every pattern subscriber (which would miss them) is
// disconnected, and a channel subscriber, served at once, is not.
func TestPubSub_PatternMatchingThatFallsBehindCutsOffPatternSubscribers(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := twoOwners(t, srv)
	a := h1.connect()
	pat, ch := h2.connect(), h2.connect()
	h2.send(pat, "PSUBSCRIBE __lock__:x*")
	h2.send(ch, "SUBSCRIBE __lock__:x")
	h2.round()
	h2.rawReplies(pat)
	h2.rawReplies(ch)
	hub := srv.hub
	hub.pendingMax = 4
	hub.dispatching.Store(true) // a dispatcher that has not caught up yet
	for range 4 {               // 8 notices: acquired, released
		key := h1.take(a, "x")
		h1.send(a, "UNLOCK x "+key)
		if got := h1.await(a); !equal(got, []string{":1"}) {
			t.Fatalf("UNLOCK: %q", got)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { hub.dispatch(stop); close(done) }()
	deadline := time.Now().Add(inboxDeadline)
	for !pat.closed && time.Now().Before(deadline) {
		h2.round()
		time.Sleep(time.Millisecond)
	}
	close(stop)
	<-done
	if !pat.closed {
		t.Fatal("the pattern subscriber, whose notices were dropped, is still connected")
	}
	if ch.closed {
		t.Fatal("the channel subscriber was disconnected too")
	}
	if got := len(h2.rawReplies(ch)); got == 0 {
		t.Error("the channel subscriber got no event")
	}
	if n := hub.dropped.Load(); n != 1 {
		t.Errorf("dropped subscribers: %d; want 1", n)
	}
}

// TestPubSub_SubscribedModeRESP2: a RESP2 connection with subscriptions
// runs only (un)subscriptions, PING, QUIT and RESET, as in Redis; RESP3
// runs anything and gets pushes.
func TestPubSub_SubscribedModeRESP2(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestOwner(t, srv, true)
	c2, c3 := h.connect(), h.connect()
	h.send(c3, "HELLO 3")
	h.round()
	h.rawReplies(c3)
	h.send(c2, "SUBSCRIBE __lock__:a __lock__:b", "TRYLOCK x", "PING", "UNSUBSCRIBE", "TRYLOCK x")
	h.round()
	got := h.messages(c2)
	want := []string{
		"subscribe __lock__:a :1", "subscribe __lock__:b :2",
		"", // the error
		"pong ",
		"unsubscribe __lock__:a :1", "unsubscribe __lock__:b :0",
		"", // the key
	}
	if len(got) != len(want) {
		t.Fatalf("replies %q; want %d", got, len(want))
	}
	for i, w := range want {
		if w != "" && got[i] != w {
			t.Errorf("reply %d: %q; want %q", i, got[i], w)
		}
	}
	h.send(c3, "SUBSCRIBE __lock__:y", "TRYLOCK y")
	h.round()
	raw := h.rawReplies(c3)
	if len(raw) != 3 || !strings.HasPrefix(raw[0], ">3\r\n") || summarize(raw[1]) != "KEY" || !strings.HasPrefix(raw[2], ">3\r\n$7\r\nmessage") {
		t.Errorf("RESP3: %q; want the subscribe push, the key, the acquired push", raw)
	}
}
