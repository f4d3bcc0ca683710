package integration

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// Lock events over pub/sub (README "Lock events", SPEC §8.1), on the wire:
// reply shapes, payloads, reasons, order, ACLs, and a cluster's followers.

// subscriber is a raw connection that reads pub/sub messages.
type subscriber struct {
	*rawConn
	t testing.TB
}

func subscribe(t testing.TB, srv *server, cmd string, channels ...string) *subscriber {
	t.Helper()
	s := &subscriber{rawConn: dialRaw(t, srv), t: t}
	if err := s.send(append([]string{cmd}, channels...)...); err != nil {
		t.Fatal(err)
	}
	for range channels {
		if got, err := s.read(); err != nil || !strings.Contains(got, strings.ToLower(cmd)) {
			t.Fatalf("%s: %q, %v", cmd, got, err)
		}
	}
	return s
}

// next returns the next message as "channel payload" (pmessage: the
// pattern is left out).
func (s *subscriber) next() string {
	s.t.Helper()
	got, err := s.read()
	if err != nil {
		s.t.Fatalf("no event: %v", err)
	}
	f := bulks(got)
	switch {
	case len(f) == 3 && f[0] == "message":
		return f[1] + " " + f[2]
	case len(f) == 4 && f[0] == "pmessage":
		return f[2] + " " + f[3]
	}
	s.t.Fatalf("not a message: %q", got)
	return ""
}

// expect reads len(want) messages and compares them with want.
func (s *subscriber) expect(what string, want ...string) {
	s.t.Helper()
	for i, w := range want {
		if got := s.next(); got != w {
			s.t.Fatalf("%s: event %d is %q; want %q", what, i, got, w)
		}
	}
}

// bulks returns the bulk strings of a raw reply, in order.
func bulks(raw string) []string {
	var out []string
	lines := strings.Split(raw, "\r\n")
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "$") && lines[i] != "$-1" && i+1 < len(lines) {
			out = append(out, lines[i+1])
			i++
		}
	}
	return out
}

// rawFence returns the fence of a raw bulk-string key reply.
func rawFence(t testing.TB, raw string) string {
	t.Helper()
	b := bulks(raw)
	if len(b) != 1 || !strings.Contains(b[0], "-") {
		t.Fatalf("not a key: %q", raw)
	}
	return strings.SplitN(b[0], "-", 2)[0]
}

// TestEvents_EveryReasonInOrder: each way a hold ends is reported with its
// reason, after the acquired event and before free; a request that waits
// is reported as contended; events never hold a key.
func TestEvents_EveryReasonInOrder(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	sub := subscribe(t, srv, "PSUBSCRIBE", "__lock__:ev-*")
	admin := dialRaw(t, srv)

	a := dialRaw(t, srv)
	key := bulks(a.do(t, "LOCK", "ev-unlock"))[0]
	f := strings.SplitN(key, "-", 2)[0]
	a.do(t, "UNLOCK", "ev-unlock", key)
	sub.expect("unlock", "__lock__:ev-unlock acquired "+f, "__lock__:ev-unlock released "+f+" unlock", "__lock__:ev-unlock free")

	d := dialRaw(t, srv)
	f = rawFence(t, d.do(t, "LOCK", "ev-disconnect"))
	d.Close()
	sub.expect("disconnect", "__lock__:ev-disconnect acquired "+f, "__lock__:ev-disconnect released "+f+" disconnect", "__lock__:ev-disconnect free")

	f = rawFence(t, a.do(t, "LOCK", "ev-expired", "TTL", "30"))
	sub.expect("expiry", "__lock__:ev-expired acquired "+f, "__lock__:ev-expired released "+f+" expired", "__lock__:ev-expired free")

	f = rawFence(t, a.do(t, "LOCK", "ev-forced"))
	admin.do(t, "FORCEUNLOCK", "ev-forced")
	sub.expect("forced", "__lock__:ev-forced acquired "+f, "__lock__:ev-forced released "+f+" forced", "__lock__:ev-forced free")

	k := dialRaw(t, srv)
	f = rawFence(t, k.do(t, "LOCK", "ev-killed"))
	id := strings.TrimSuffix(strings.TrimPrefix(k.do(t, "CLIENT", "ID"), ":"), "\r\n")
	admin.do(t, "CLIENT", "KILL", "ID", id)
	sub.expect("killed", "__lock__:ev-killed acquired "+f, "__lock__:ev-killed released "+f+" killed", "__lock__:ev-killed free")

	f = rawFence(t, a.do(t, "LOCK", "ev-reset"))
	a.do(t, "RESET")
	sub.expect("reset", "__lock__:ev-reset acquired "+f, "__lock__:ev-reset released "+f+" reset", "__lock__:ev-reset free")

	// Contention: b waits behind a, then gets the lock when a unlocks.
	key = bulks(a.do(t, "LOCK", "ev-contended"))[0]
	f = strings.SplitN(key, "-", 2)[0]
	b := dialRaw(t, srv)
	if err := b.send("LOCK", "ev-contended"); err != nil {
		t.Fatal(err)
	}
	sub.expect("contention", "__lock__:ev-contended acquired "+f, "__lock__:ev-contended contended 1")
	a.do(t, "UNLOCK", "ev-contended", key)
	reply, err := b.read()
	if err != nil {
		t.Fatal(err)
	}
	f2 := rawFence(t, reply)
	sub.expect("handoff", "__lock__:ev-contended released "+f+" unlock", "__lock__:ev-contended acquired "+f2)
	b.Close()
	sub.expect("waiter gone", "__lock__:ev-contended released "+f2+" disconnect", "__lock__:ev-contended free")
}

// TestEvents_SubscriptionReplies: Redis's reply shapes; a channel outside
// __lock__: fails the command and subscribes none of its channels; a RESP2
// subscriber may only (un)subscribe, PING, QUIT and RESET.
func TestEvents_SubscriptionReplies(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := dialRaw(t, srv)
	if got := c.do(t, "SUBSCRIBE", "__lock__:a", "news"); !strings.HasPrefix(got, "-ERR ") {
		t.Fatalf("SUBSCRIBE to a non-lock channel: %q; want -ERR", got)
	}
	if got := c.do(t, "UNSUBSCRIBE"); got != "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n" {
		t.Fatalf("UNSUBSCRIBE after the failed SUBSCRIBE: %q; want no subscription", got)
	}
	if got := c.do(t, "SUBSCRIBE", "__lock__:a"); got != "*3\r\n$9\r\nsubscribe\r\n$10\r\n__lock__:a\r\n:1\r\n" {
		t.Fatalf("SUBSCRIBE: %q", got)
	}
	if got := c.do(t, "PSUBSCRIBE", "__lock__:b*"); got != "*3\r\n$10\r\npsubscribe\r\n$11\r\n__lock__:b*\r\n:2\r\n" {
		t.Fatalf("PSUBSCRIBE: %q", got)
	}
	if got := c.do(t, "LOCK", "a"); !strings.HasPrefix(got, "-ERR Can't execute 'lock'") {
		t.Fatalf("LOCK in subscribed mode: %q", got)
	}
	if got := c.do(t, "PING"); got != "*2\r\n$4\r\npong\r\n$0\r\n\r\n" {
		t.Fatalf("PING in subscribed mode: %q", got)
	}
	if got := c.do(t, "PUNSUBSCRIBE"); got != "*3\r\n$12\r\npunsubscribe\r\n$11\r\n__lock__:b*\r\n:1\r\n" {
		t.Fatalf("PUNSUBSCRIBE: %q", got)
	}
	if got := c.do(t, "RESET"); got != "+RESET\r\n" {
		t.Fatalf("RESET: %q", got)
	}
	if got := c.do(t, "TRYLOCK", "a"); !strings.HasPrefix(got, "$") {
		t.Fatalf("TRYLOCK after RESET left subscribed mode: %q", got)
	}

	// RESP3: any command, and messages are pushes.
	r := dialRaw(t, srv)
	r.do(t, "HELLO", "3")
	if got := r.do(t, "SUBSCRIBE", "__lock__:c"); got != ">3\r\n$9\r\nsubscribe\r\n$10\r\n__lock__:c\r\n:1\r\n" {
		t.Fatalf("RESP3 SUBSCRIBE: %q", got)
	}
	key := r.do(t, "TRYLOCK", "c")
	if !strings.HasPrefix(key, "$") {
		t.Fatalf("TRYLOCK on a RESP3 subscriber: %q", key)
	}
	push, err := r.read()
	if err != nil || !strings.HasPrefix(push, ">3\r\n$7\r\nmessage\r\n$10\r\n__lock__:c\r\n") || !strings.Contains(push, "acquired "+rawFence(t, key)) {
		t.Fatalf("RESP3 event: %q, %v", push, err)
	}
	if got := r.do(t, "CLIENT", "LIST"); !strings.Contains(got, " sub=1 psub=0 ") {
		t.Errorf("CLIENT LIST does not count the subscription: %q", got)
	}
}

// TestEvents_ACL: a user subscribes only to locks its globs allow, and a
// pattern delivers only the locks it may see.
func TestEvents_ACL(t *testing.T) {
	t.Parallel()
	srv, _ := startACLServer(t)
	app := dialRaw(t, srv)
	app.do(t, "AUTH", "app", "app-pass")
	if got := app.do(t, "SUBSCRIBE", "__lock__:app:x", "__lock__:other"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("SUBSCRIBE to a lock outside the user's globs: %q; want -NOPERM", got)
	}
	app.do(t, "PSUBSCRIBE", "__lock__:*")
	sub := &subscriber{rawConn: app, t: t}
	root := dialRaw(t, srv)
	root.do(t, "AUTH", "root", "root-pass")
	hidden := rawFence(t, root.do(t, "TRYLOCK", "other"))
	f := rawFence(t, root.do(t, "TRYLOCK", "app:x"))
	if got := sub.next(); got != "__lock__:app:x acquired "+f {
		t.Fatalf("first event: %q; want app:x's (other's, fence %s, is not app's to see)", got, hidden)
	}
}

// TestEvents_ReachSubscribersPromptly: events come as the changes happen,
// not at some later sweep (loosely bounded here: the latency is measured
// by make bench).
func TestEvents_ReachSubscribersPromptly(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	sub := subscribe(t, srv, "SUBSCRIBE", "__lock__:p")
	c := dialRaw(t, srv)
	start := time.Now()
	c.do(t, "TRYLOCK", "p", "TTL", "20")
	sub.next()
	sub.next() // released expired
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("acquired and expired (20 ms TTL) reported after %v", took)
	}
}

// TestEvents_EveryClusterMemberPublishes: in a cluster every member
// publishes the events of the log it applies, so a subscriber on a
// follower sees the leader's locks change, in order.
func TestEvents_EveryClusterMemberPublishes(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(c.nodes, 15*time.Second)
	var subs []*subscriber
	for _, nd := range c.nodes {
		subs = append(subs, subscribe(t, nd.srv, "SUBSCRIBE", "__lock__:cl"))
	}
	lc := dialRaw(t, leader.srv)
	key := bulks(lc.do(t, "LOCK", "cl", "TTL", "10000"))[0]
	f := strings.SplitN(key, "-", 2)[0]
	if got := lc.do(t, "UNLOCK", "cl", key); got != ":1\r\n" {
		t.Fatalf("UNLOCK: %q", got)
	}
	for i, s := range subs {
		s.expect(c.nodes[i].id, "__lock__:cl acquired "+f, "__lock__:cl released "+f+" unlock", "__lock__:cl free")
	}
}

// TestEvents_SubscriberThatStopsReadingIsCutOff: a subscriber that reads
// nothing is disconnected once its unsent events pass the limit (8 MiB),
// while the connection making the changes keeps being answered promptly.
func TestEvents_SubscriberThatStopsReadingIsCutOff(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	slow := subscribe(t, srv, "PSUBSCRIBE", "__lock__:*") // and never reads again
	c := dialRaw(t, srv)
	// Batches of LOCK+UNLOCK of a long name: each cycle publishes
	// acquired, released and free (~3 × 300 bytes).
	name := "slow:" + strings.Repeat("x", 200)
	const batch = 500
	admin := dialRaw(t, srv)
	deadline := time.Now().Add(60 * time.Second)
	for round := 0; ; round++ {
		if time.Now().After(deadline) || round > 1000 {
			t.Fatalf("the subscriber that reads nothing was not disconnected after %d rounds", round)
		}
		// One lock, taken and released batch times: LOCK then UNLOCK.
		for i := range batch {
			key := keyOf(t, c.do(t, "LOCK", name, "TTL", "60000"))
			if got := c.do(t, "UNLOCK", name, key); got != ":1\r\n" {
				t.Fatalf("UNLOCK %d: %q", i, got)
			}
		}
		info := admin.do(t, "INFO", "stats")
		if strings.Contains(info, "pubsub_clients_dropped:1\r\n") {
			break
		}
	}
	start := time.Now()
	if got := c.do(t, "PING"); got != "+PONG\r\n" || time.Since(start) > time.Second {
		t.Fatalf("PING after the cut-off: %q in %v", got, time.Since(start))
	}
	slow.expectClosedAfterDrain(t)
}

// expectClosedAfterDrain reads what the server sent before it closed the
// connection, and fails unless the connection ends within the deadline.
func (s *subscriber) expectClosedAfterDrain(t testing.TB) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<20)
	for range 10_000 {
		if _, err := s.Conn.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the cut-off subscriber's connection is still open")
			}
			return
		}
	}
	t.Fatal("the cut-off subscriber's connection sent too much")
}
