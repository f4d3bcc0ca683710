package clientlib

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A relock cluster is a Raft group: only the leader serves lock commands.
// A follower answers them with "-MOVED 0 host:port" (the leader's client
// address) or, while no leader is known (an election), with
// "-CLUSTERDOWN ...". A route walks the cluster for one call: it tries
// the leader the Client last learnt of, else each configured address in
// turn, follows MOVED, and backs off after a round of failures.

// endpoint is one server address as dialled.
type endpoint struct {
	network string // "tcp" or "unix"
	addr    string
}

func (e endpoint) String() string { return e.addr }

// leaderEndpoint returns the leader the Client knows of, if any.
func (c *Client) leaderEndpoint() (endpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader, c.leader != endpoint{}
}

// setLeader records where lock commands go from now on: the address a
// MOVED reply named, or (in cluster mode) one that served a lock command.
func (c *Client) setLeader(ep endpoint) {
	c.mu.Lock()
	c.leader = ep
	c.mu.Unlock()
}

// leaderFailed forgets ep as the leader, if it was: it refused a
// connection or answered that it does not lead.
func (c *Client) leaderFailed(ep endpoint) {
	c.mu.Lock()
	if c.leader == ep {
		c.leader = endpoint{}
	}
	c.mu.Unlock()
}

// maxBackoff bounds the pause between two rounds over the cluster: an
// election takes a second or two, and a lock waits for it to end.
const maxBackoff = 500 * time.Millisecond

// route is one call's walk over the cluster.
type route struct {
	c     *Client
	until time.Time // no retry starts after it; zero: only ctx bounds it
	next  int       // index of the address to try while no leader is known
	fails int       // failures since the last backoff
	delay time.Duration
	hops  int      // MOVED replies followed
	to    endpoint // the address a MOVED named, tried next
}

func (c *Client) newRoute(until time.Time) *route {
	return &route{c: c, until: until, delay: 25 * time.Millisecond}
}

// target is the address to try now.
func (r *route) target() endpoint {
	if ep := r.to; ep != (endpoint{}) {
		r.to = endpoint{}
		return ep
	}
	if ep, ok := r.c.leaderEndpoint(); ok {
		return ep
	}
	return r.c.addrs[r.next%len(r.c.addrs)]
}

// retry records that ep failed in a way another try may cure (a refused
// connection, CLUSTERDOWN) and waits for the next try: none while
// addresses of this round are untried, a backoff after each round. It
// returns false when the call must give up: ctx ended, until passed, or
// the Client was closed.
func (r *route) retry(ctx context.Context, ep endpoint) bool {
	r.c.leaderFailed(ep)
	if ep == r.c.addrs[r.next%len(r.c.addrs)] {
		r.next++
	}
	r.fails++
	if r.fails < len(r.c.addrs) {
		return r.alive(ctx)
	}
	r.fails = 0
	return r.wait(ctx)
}

// moved records the leader a MOVED reply named and says whether to try it:
// at once the first time, after a backoff when redirected again (a
// follower that has not learnt of a newer leader yet).
func (r *route) moved(ctx context.Context, to endpoint) bool {
	r.c.setLeader(to)
	r.to = to
	r.hops++
	if r.hops == 1 {
		return r.alive(ctx)
	}
	return r.wait(ctx)
}

func (r *route) alive(ctx context.Context) bool {
	if ctx.Err() != nil || r.c.isClosed() {
		return false
	}
	return r.until.IsZero() || time.Now().Before(r.until)
}

// wait sleeps for the backoff (jittered, doubling up to 500 ms), never past
// until, and returns alive.
func (r *route) wait(ctx context.Context) bool {
	if !r.alive(ctx) {
		return false
	}
	d := r.delay/2 + rand.N(r.delay/2+1)
	r.delay = min(2*r.delay, maxBackoff)
	if !r.until.IsZero() {
		d = min(d, time.Until(r.until))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-r.c.done:
	}
	return ctx.Err() == nil && !r.c.isClosed()
}

// onLeader runs send on a lock connection to the leader: the one the
// Client knows of, else each address in turn. A MOVED reply is followed; a
// CLUSTERDOWN reply, a session ended by a leader change and (in cluster
// mode) a refused connection are retried, other addresses first, until
// ctx ends or until passes. A LOCK answered so was not queued, so sending
// it again is safe; onLeader never resends after a network error.
//
// It returns the connection with the reply send got (the caller owns the
// connection, open unless send aborted it), or a nil connection with the
// error that ended the walk.
func (c *Client) onLeader(ctx context.Context, until time.Time, send func(*lockConn) (any, error, bool)) (*lockConn, any, error, bool) {
	r := c.newRoute(until)
	for {
		ep := r.target()
		lc, err := c.getLockConn(ctx, ep)
		if err != nil {
			if isDialError(err) {
				c.leaderFailed(ep)
				if c.cluster && r.retry(ctx, ep) {
					continue
				}
			}
			return nil, nil, err, false
		}
		res, err, aborted := send(lc)
		if aborted {
			return lc, res, err, true
		}
		if to, ok := movedTo(err); ok {
			c.setLeader(to)
			c.putLockConn(lc) // a follower's: closed, as it is not the leader
			if r.moved(ctx, to) {
				continue
			}
			return nil, nil, err, false
		}
		switch {
		case isClusterDown(err), c.cluster && isShuttingDown(err):
			c.putLockConn(lc)
			if r.retry(ctx, ep) {
				continue
			}
			return nil, nil, err, false
		case isSessionEnded(err):
			lc.close()
			if r.retry(ctx, ep) {
				continue
			}
			return nil, nil, err, false
		}
		if err == nil || err == redis.Nil || isRedisReply(err) {
			c.servedBy(ep)
		}
		return lc, res, err, false
	}
}

// poolDo sends one command through the shared pool of the leader (see
// onLeader for the walk). idempotent commands (LOCKS, CHECK, RENEW, PING)
// are also retried, in cluster mode, after a network error: a connection
// the server closed when it stopped leading.
func (c *Client) poolDo(ctx context.Context, until time.Time, idempotent bool, args ...any) (any, error) {
	r := c.newRoute(until)
	for {
		ep := r.target()
		res, err := c.poolFor(ep).Do(ctx, args...).Result()
		if to, ok := movedTo(err); ok {
			if r.moved(ctx, to) {
				continue
			}
			return nil, err
		}
		if isDialError(err) {
			c.leaderFailed(ep)
		}
		switch {
		case isClusterDown(err), c.cluster && isShuttingDown(err),
			c.cluster && isDialError(err),
			c.cluster && idempotent && isConnDropped(ctx, err):
			if r.retry(ctx, ep) {
				continue
			}
			return nil, err
		}
		if err == nil || err == redis.Nil || isRedisReply(err) {
			if isLockCommand(args) {
				c.servedBy(ep)
			}
		}
		return res, err
	}
}

// servedBy records, in cluster mode, that ep answered a lock command
// itself: it leads.
func (c *Client) servedBy(ep endpoint) {
	if c.cluster {
		c.setLeader(ep)
	}
}

// isLockCommand reports whether args is a command only the leader serves.
func isLockCommand(args []any) bool {
	name, _ := args[0].(string)
	switch strings.ToUpper(name) {
	case "LOCK", "TRYLOCK", "UNLOCK", "RENEW", "CHECK", "LOCKS", "FORCEUNLOCK":
		return true
	}
	return false
}

// movedTo returns the address of a "MOVED <slot> host:port" reply.
func movedTo(err error) (endpoint, bool) {
	msg, ok := replyText(err)
	if !ok || !strings.HasPrefix(msg, "MOVED ") {
		return endpoint{}, false
	}
	f := strings.Fields(msg)
	if len(f) != 3 || f[2] == "" {
		return endpoint{}, false
	}
	return endpoint{network: "tcp", addr: f[2]}, true
}

// isClusterDown: the cluster has no leader now (an election).
func isClusterDown(err error) bool {
	msg, ok := replyText(err)
	return ok && strings.HasPrefix(msg, "CLUSTERDOWN")
}

// isShuttingDown: the node is stopping; the command was not run.
func isShuttingDown(err error) bool {
	msg, ok := replyText(err)
	return ok && strings.HasPrefix(msg, "ERR server is shutting down")
}

// isSessionEnded: the connection was opened on a node before it took over
// as leader, and the takeover ended its session; the command was not run
// and the connection is of no further use.
func isSessionEnded(err error) bool {
	msg, ok := replyText(err)
	return ok && strings.HasPrefix(msg, "ERR this connection's session ended")
}

// replyText returns the text of an error reply (go-redis's or a
// *ServerError's).
func replyText(err error) (string, bool) {
	if err == nil || err == redis.Nil {
		return "", false
	}
	var se *ServerError
	if errors.As(err, &se) {
		return se.Reply, true
	}
	var re redis.Error
	if errors.As(err, &re) {
		return re.Error(), true
	}
	return "", false
}

// isRedisReply reports whether err is an error reply of go-redis (the
// connection it came on is healthy).
func isRedisReply(err error) bool {
	_, ok := replyText(err)
	return ok
}

// isConnDropped: a command failed because its connection broke (not an
// error reply, a timeout, a cancelled ctx or a closed Client) — a node that
// stopped leading closes its client connections.
func isConnDropped(ctx context.Context, err error) bool {
	if err == nil || err == redis.Nil || isRedisReply(err) || ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// isDialError: connecting failed (refused, unreachable, timed out), so
// nothing was sent.
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}
