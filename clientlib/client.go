package clientlib

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultAddr is the address of a relock server started without --listen.
const DefaultAddr = "127.0.0.1:6380"

// Options configure a Client. The zero value connects to DefaultAddr.
type Options struct {
	// Addr is "host:port" for TCP, or the path of a unix socket: anything
	// containing a '/' (optionally prefixed "unix:"). Default DefaultAddr
	// when Addrs is empty too.
	Addr string
	// Addrs lists the members of a relock cluster, in the form of Addr.
	// Any of them will do: the Client finds the leader (see "Clusters" in
	// the package documentation). Addr, if set too, is tried first. More
	// than one address in all turns cluster mode on.
	Addrs []string
	// Cluster turns cluster mode on with a single address too (say a DNS
	// name or load balancer in front of a cluster). In cluster mode a
	// refused connection is retried on the other addresses, and a held
	// lock whose connection drops is re-attached on the (new) leader by
	// RENEW instead of being reported lost at once. Without it, one
	// address means one server: a dropped connection is a loss, as the
	// server released the hold. MOVED and CLUSTERDOWN replies are followed
	// and retried in either mode.
	Cluster bool
	// FailoverTimeout bounds how long a call keeps looking for the leader
	// (CLUSTERDOWN during an election, nodes that refuse connections)
	// before it returns the last error; the call's ctx bounds it too, and
	// Options.ReadTimeout bounds it for the calls on a Lock (Unlock, Renew,
	// Check). It is also how long a held lock without a TTL is re-attached
	// after its connection dropped before it is reported lost (a lock with
	// a TTL is re-attached until its TTL deadline). Default 15 s.
	FailoverTimeout time.Duration
	// Username and Password authenticate every connection (HELLO ... AUTH).
	// An empty Username means the "default" user.
	Username string
	Password string
	// TLSConfig enables TLS when set. Its ServerName defaults to the host
	// of Addr.
	TLSConfig *tls.Config
	// DialTimeout bounds connecting (and the TLS handshake). Default 5 s.
	DialTimeout time.Duration
	// ReadTimeout bounds the wait for the reply of every command that does
	// not wait for a lock: TRYLOCK, UNLOCK, RENEW, CHECK, LOCKS,
	// FORCEUNLOCK. A LOCK waits as long as its ctx and its Wait option
	// allow, never cut short by ReadTimeout. Default 3 s.
	ReadTimeout time.Duration
	// PoolSize is the number of connections of the shared pool (LOCKS,
	// FORCEUNLOCK and the key-based Client methods) and the number of idle
	// lock connections kept for reuse. Locks themselves are not limited by
	// it: each waiting or held lock has a connection of its own. Default 10.
	PoolSize int
	// ClientName is set on every connection (CLIENT LIST shows it).
	ClientName string
}

// Client is a relock client. It is safe for concurrent use. Create it with
// New and release it with Close.
//
// Each Lock and TryLock call uses a dedicated connection, taken from a list
// of idle ones or dialled, and a granted lock keeps that connection until it
// is released, because the server binds a hold to the connection that took
// it. A connection goes back to the idle list only when it carries no hold
// and no queued wait; a wait aborted by its ctx closes its connection,
// which is how the server learns to drop the waiter.
type Client struct {
	opt     Options
	addrs   []endpoint    // Addr, then Addrs; at least one
	cluster bool          // cluster mode (see Options.Cluster)
	pool    *redis.Client // shared pool of addrs[0]: admin commands and key-based operations
	done    chan struct{} // closed by Close: route backoffs end

	// noDefaultTTL is set once a LOCK without TTL was seen to get no TTL:
	// the server has no --default-ttl, and such holds need no probe.
	noDefaultTTL atomic.Bool

	keepers sync.WaitGroup // one per hold: the renew/watch goroutine

	// loss tells held locks of their loss from the lock events.
	loss *lossWatch

	// mu guards the fields below.
	mu     sync.Mutex
	closed bool
	conns  map[*lockConn]struct{} // every open lock connection
	idle   []*lockConn            // open, carrying nothing, for reuse
	holds  map[*hold]struct{}     // held (not yet released or lost)
	owned  map[ownerKey]*hold     // held with an OWNER, for re-entry
	// owning: a Lock/TryLock with an OWNER under way, closed when it
	// returns; a second call with that owner and name waits for it, then
	// re-enters what it got (ownerTurn).
	owning map[ownerKey]chan struct{}
	pools  map[endpoint]*redis.Client // shared pools by address; pool among them
	subs   map[*subscriber]struct{}   // pub/sub connections: Watchers, the lossWatch
	leader endpoint                   // where lock commands go; zero: not known
}

type ownerKey struct{ name, owner string }

// New returns a Client for opt. It does not connect: connections are dialled
// when needed, so a server that is down shows up as an error of the first
// call (or of Ping).
func New(opt Options) (*Client, error) {
	if opt.Addr == "" && len(opt.Addrs) == 0 {
		opt.Addr = DefaultAddr
	}
	if opt.DialTimeout <= 0 {
		opt.DialTimeout = 5 * time.Second
	}
	if opt.ReadTimeout <= 0 {
		opt.ReadTimeout = 3 * time.Second
	}
	if opt.PoolSize <= 0 {
		opt.PoolSize = 10
	}
	if opt.FailoverTimeout <= 0 {
		opt.FailoverTimeout = 15 * time.Second
	}
	list := opt.Addrs
	if opt.Addr != "" {
		list = append([]string{opt.Addr}, list...)
	}
	var addrs []endpoint
	for _, a := range list {
		network, addr := splitAddr(a)
		if addr == "" {
			return nil, fmt.Errorf("empty address %q", a)
		}
		ep := endpoint{network, addr}
		if !slices.Contains(addrs, ep) {
			addrs = append(addrs, ep)
		}
	}
	c := &Client{
		opt:     opt,
		addrs:   addrs,
		cluster: opt.Cluster || len(addrs) > 1,
		done:    make(chan struct{}),
		conns:   make(map[*lockConn]struct{}),
		holds:   make(map[*hold]struct{}),
		owned:   make(map[ownerKey]*hold),
		owning:  make(map[ownerKey]chan struct{}),
		pools:   make(map[endpoint]*redis.Client),
		subs:    make(map[*subscriber]struct{}),
	}
	c.loss = newLossWatch(c)
	c.pool = c.newPool(addrs[0])
	c.pools[addrs[0]] = c.pool
	return c, nil
}

// newPool returns a shared pool of connections to ep.
func (c *Client) newPool(ep endpoint) *redis.Client {
	return c.newPoolDialer(ep, c.dialRaw)
}

// newPoolDialer returns a pool of connections to ep dialled by dial.
func (c *Client) newPoolDialer(ep endpoint, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *redis.Client {
	opt := c.opt
	return redis.NewClient(&redis.Options{
		Network:                  ep.network,
		Addr:                     ep.addr,
		Dialer:                   dial,
		Username:                 opt.Username,
		Password:                 opt.Password,
		ClientName:               opt.ClientName,
		Protocol:                 2,
		PoolSize:                 opt.PoolSize,
		MaxRetries:               -1,
		DialTimeout:              opt.DialTimeout,
		DialerRetries:            1,
		ReadTimeout:              opt.ReadTimeout,
		WriteTimeout:             opt.ReadTimeout,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// poolFor returns the shared pool of ep, creating it on first use (after
// Close: the closed pool of the first address, whose calls fail).
func (c *Client) poolFor(ep endpoint) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pools[ep]
	if p == nil {
		if c.closed {
			return c.pool
		}
		p = c.newPool(ep)
		c.pools[ep] = p
	}
	return p
}

// splitAddr tells a unix socket path from a TCP address.
func splitAddr(a string) (network, addr string) {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		return "unix", strings.TrimPrefix(p, "//")
	}
	if strings.Contains(a, "/") {
		return "unix", a
	}
	return "tcp", a
}

// Close releases the Client. Every lock still held through it is lost
// (Lost is closed, Context cancelled, Err is a *LostError with cause
// ErrClosed), its connection closed, so that the server releases it; a
// DETACHed hold stays until its TTL runs out. Lock calls still waiting
// return ErrClosed; every Watcher stops (its Events closes). Close waits for
// the goroutines the Client started.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	holds := make([]*hold, 0, len(c.holds))
	for h := range c.holds {
		holds = append(holds, h)
	}
	c.mu.Unlock()
	for _, h := range holds {
		h.lose(ErrClosed)
	}
	c.keepers.Wait()
	c.loss.close()
	c.mu.Lock()
	subs := make([]*subscriber, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	for _, s := range subs {
		s.close() // a Watcher's Events closes
	}
	c.mu.Lock()
	conns := make([]*lockConn, 0, len(c.conns))
	for lc := range c.conns {
		conns = append(conns, lc)
	}
	c.idle = nil
	pools := make([]*redis.Client, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
	}
	c.mu.Unlock()
	for _, lc := range conns {
		lc.close()
	}
	var err error
	for _, p := range pools {
		if perr := p.Close(); p == c.pool {
			err = perr
		}
	}
	return err
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// getLockConn returns an idle lock connection to ep or dials a new one;
// ctx bounds the dial.
func (c *Client) getLockConn(ctx context.Context, ep endpoint) (*lockConn, error) {
	c.mu.Lock()
	for i := len(c.idle) - 1; i >= 0 && !c.closed; i-- {
		lc := c.idle[i]
		if lc.ep != ep && !lc.dead() {
			continue
		}
		c.idle = slices.Delete(c.idle, i, i+1)
		if !lc.dead() {
			c.mu.Unlock()
			return lc, nil
		}
		c.mu.Unlock()
		lc.close()
		c.mu.Lock()
		i = min(i, len(c.idle))
	}
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	lc, err := c.dialLockConn(ctx, ep)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		lc.close()
		return nil, ErrClosed
	}
	c.conns[lc] = struct{}{}
	c.mu.Unlock()
	return lc, nil
}

// putLockConn takes back a lock connection that carries no hold and no
// wait, keeping it for reuse if there is room and it leads to the leader
// (as far as the Client knows).
func (c *Client) putLockConn(lc *lockConn) {
	c.mu.Lock()
	toLeader := c.leader == endpoint{} || lc.ep == c.leader
	if !c.closed && len(c.idle) < c.opt.PoolSize && !lc.dead() && toLeader {
		c.idle = append(c.idle, lc)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	lc.close()
}

// Ping checks that the server answers (in a cluster: the leader, or the
// first member that answers while no leader is known).
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.poolDo(ctx, c.retryUntil(), true, "PING")
	return err
}

// Redis returns the go-redis client of the shared pool, for commands
// clientlib does not wrap. Do not take locks through it: a hold is bound to
// a pooled connection that other calls share. In a cluster it is the pool
// of the first address, which may be a follower: lock commands sent
// through it may be answered with MOVED.
func (c *Client) Redis() *redis.Client { return c.pool }

// retryUntil is when a call that starts now stops looking for a leader.
func (c *Client) retryUntil() time.Time { return time.Now().Add(c.opt.FailoverTimeout) }

// Unlock releases the hold of name with key — a key handed over from
// another process, for example a DETACHed hold's. ErrNotHeld if the key
// does not hold the lock. For a *Lock, use Lock.Unlock.
func (c *Client) Unlock(ctx context.Context, name, key string) error {
	_, err := c.poolDo(ctx, c.retryUntil(), false, "UNLOCK", name, key)
	return serverError("UNLOCK", name, err)
}

// Renew restarts the TTL of the hold of name with key; ttl > 0 also sets a
// new TTL duration. It returns the duration now in force (0: none).
// ErrNotHeld if the key does not hold the lock. For a *Lock, use
// Lock.Renew (or its auto-renewal).
func (c *Client) Renew(ctx context.Context, name, key string, ttl time.Duration) (time.Duration, error) {
	args := []any{"RENEW", name, key}
	if ttl > 0 {
		args = append(args, "TTL", durationMS(ttl))
	}
	ms, err := int64Reply(c.poolDo(ctx, c.retryUntil(), true, args...))
	if err != nil {
		return 0, serverError("RENEW", name, err)
	}
	return msDuration(ms), nil
}

// Check returns the time left on the hold of name with key (-1: no TTL),
// or ErrNotHeld: a sequencer check, for a service that is handed a key and
// wants to know that it still holds the lock.
func (c *Client) Check(ctx context.Context, name, key string) (time.Duration, error) {
	ms, err := int64Reply(c.poolDo(ctx, c.retryUntil(), true, "CHECK", name, key))
	if err != nil {
		return 0, serverError("CHECK", name, err)
	}
	if ms < 0 {
		return -1, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// ForceUnlock releases every hold of name, whoever holds it, and returns how
// many it released. The holders learn of it from the lock's "released ...
// forced" event at once (a clientlib Lock's Lost channel closes), or at
// their next renewal against a server without lock events.
func (c *Client) ForceUnlock(ctx context.Context, name string) (int, error) {
	n, err := int64Reply(c.poolDo(ctx, c.retryUntil(), false, "FORCEUNLOCK", name))
	if err != nil {
		return 0, serverError("FORCEUNLOCK", name, err)
	}
	return int(n), nil
}

// int64Reply reads an integer reply.
func int64Reply(res any, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	n, ok := res.(int64)
	if !ok {
		return 0, fmt.Errorf("redis: unexpected type=%T for Int64", res)
	}
	return n, nil
}

// durationMS converts a positive duration to whole milliseconds, rounding
// up so that a TTL or wait is never shortened to 0.
func durationMS(d time.Duration) int64 {
	// Not (d + 1ms - 1) / 1ms: that overflows for d near math.MaxInt64
	// (a "forever" TTL or Wait), which then became 1 ms.
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond > 0 {
		ms++
	}
	if ms < 1 {
		ms = 1
	}
	return ms
}

// msDuration converts a server TTL in ms (-1: none) to a duration (0: none).
func msDuration(ms int64) time.Duration {
	if ms < 0 {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// ctxError is the error of a call aborted by its ctx, or ErrClosed when
// the Client was closed under it.
func (c *Client) ctxError(ctx context.Context, op, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s: %w", op, quote(name), cerr)
	}
	if c.isClosed() {
		return ErrClosed
	}
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%s %s: %w", op, quote(name), err)
}
