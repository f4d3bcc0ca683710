package clientlib

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
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
	// containing a '/' (optionally prefixed "unix:"). Default DefaultAddr.
	Addr string
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
	network string
	addr    string
	pool    *redis.Client // shared: admin commands and key-based operations

	// noDefaultTTL is set once a LOCK without TTL was seen to get no TTL:
	// the server has no --default-ttl, and such holds need no probe.
	noDefaultTTL atomic.Bool

	keepers sync.WaitGroup // one per hold: the renew/watch goroutine

	// mu guards the fields below.
	mu     sync.Mutex
	closed bool
	conns  map[*lockConn]struct{} // every open lock connection
	idle   []*lockConn            // open, carrying nothing, for reuse
	holds  map[*hold]struct{}     // held (not yet released or lost)
	owned  map[ownerKey]*hold     // held with an OWNER, for re-entry
}

type ownerKey struct{ name, owner string }

// New returns a Client for opt. It does not connect: connections are dialled
// when needed, so a server that is down shows up as an error of the first
// call (or of Ping).
func New(opt Options) (*Client, error) {
	if opt.Addr == "" {
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
	network, addr := splitAddr(opt.Addr)
	if addr == "" {
		return nil, fmt.Errorf("relock: empty address %q", opt.Addr)
	}
	c := &Client{
		opt:     opt,
		network: network,
		addr:    addr,
		conns:   make(map[*lockConn]struct{}),
		holds:   make(map[*hold]struct{}),
		owned:   make(map[ownerKey]*hold),
	}
	c.pool = redis.NewClient(&redis.Options{
		Network:                  network,
		Addr:                     addr,
		Dialer:                   c.dialRaw,
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
	return c, nil
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
// return ErrClosed. Close waits for the goroutines the Client started.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	holds := make([]*hold, 0, len(c.holds))
	for h := range c.holds {
		holds = append(holds, h)
	}
	c.mu.Unlock()
	for _, h := range holds {
		h.lose(ErrClosed)
	}
	c.keepers.Wait()
	c.mu.Lock()
	conns := make([]*lockConn, 0, len(c.conns))
	for lc := range c.conns {
		conns = append(conns, lc)
	}
	c.idle = nil
	c.mu.Unlock()
	for _, lc := range conns {
		lc.close()
	}
	return c.pool.Close()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// getLockConn returns an idle lock connection or dials a new one; ctx
// bounds the dial.
func (c *Client) getLockConn(ctx context.Context) (*lockConn, error) {
	c.mu.Lock()
	for len(c.idle) > 0 && !c.closed {
		lc := c.idle[len(c.idle)-1]
		c.idle = c.idle[:len(c.idle)-1]
		if !lc.dead() {
			c.mu.Unlock()
			return lc, nil
		}
		c.mu.Unlock()
		lc.close()
		c.mu.Lock()
	}
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	lc, err := c.dialLockConn(ctx)
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
// wait, keeping it for reuse if there is room.
func (c *Client) putLockConn(lc *lockConn) {
	c.mu.Lock()
	if !c.closed && len(c.idle) < c.opt.PoolSize && !lc.dead() {
		c.idle = append(c.idle, lc)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	lc.close()
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.pool.Ping(ctx).Err()
}

// Redis returns the go-redis client of the shared pool, for commands
// clientlib does not wrap. Do not take locks through it: a hold is bound to
// a pooled connection that other calls share.
func (c *Client) Redis() *redis.Client { return c.pool }

// Unlock releases the hold of name with key — a key handed over from
// another process, for example a DETACHed hold's. ErrNotHeld if the key
// does not hold the lock. For a *Lock, use Lock.Unlock.
func (c *Client) Unlock(ctx context.Context, name, key string) error {
	err := c.pool.Do(ctx, "UNLOCK", name, key).Err()
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
	ms, err := c.pool.Do(ctx, args...).Int64()
	if err != nil {
		return 0, serverError("RENEW", name, err)
	}
	return msDuration(ms), nil
}

// Check returns the time left on the hold of name with key (-1: no TTL),
// or ErrNotHeld: a sequencer check, for a service that is handed a key and
// wants to know that it still holds the lock.
func (c *Client) Check(ctx context.Context, name, key string) (time.Duration, error) {
	ms, err := c.pool.Do(ctx, "CHECK", name, key).Int64()
	if err != nil {
		return 0, serverError("CHECK", name, err)
	}
	if ms < 0 {
		return -1, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// ForceUnlock releases every hold of name, whoever holds it, and returns how
// many it released. The holders learn of it at their next renewal (their
// Lost channel closes); holders without a TTL do not learn of it at all.
func (c *Client) ForceUnlock(ctx context.Context, name string) (int, error) {
	n, err := c.pool.Do(ctx, "FORCEUNLOCK", name).Int()
	if err != nil {
		return 0, serverError("FORCEUNLOCK", name, err)
	}
	return n, nil
}

// durationMS converts a positive duration to whole milliseconds, rounding
// up so that a TTL or wait is never shortened to 0.
func durationMS(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
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
		return fmt.Errorf("relock: %s %s: %w", op, quote(name), cerr)
	}
	if c.isClosed() {
		return ErrClosed
	}
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("relock: %s %s: %w", op, quote(name), err)
}
