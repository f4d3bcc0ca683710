package clientlib

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// lockConn is one dedicated connection for one Lock call and, if granted,
// for the hold it got: a go-redis client with a pool of exactly one
// connection that never retries. Its socket is a watchConn, so that a
// close by the server or the network is seen at once.
//
// The socket is dialled by clientlib (under the Lock call's ctx) and handed
// to go-redis once; go-redis never dials another. A connection is never
// replaced: a hold is bound to it, and a broken one is closed for good.
// (go-redis's pool would also start a background re-dial loop, outliving
// Close, after a failed dial of its own.)
//
// A lockConn goes back to the Client's idle list only when it carries no
// hold and no queued wait (after UNLOCK, a nil reply or an error reply);
// after anything else (abort, network error, loss) it is closed.
//
// The holds of one LockMany share one lockConn (the server bound them all
// to the connection of their MLOCK): leave counts them down, and the
// connection is put back or closed only when the last of them ended.
type lockConn struct {
	c   *Client
	ep  endpoint // the server it is connected to
	rdb *redis.Client
	cur *watchConn // the socket; never changes

	// mu guards the fields below.
	mu      sync.Mutex
	handed  bool // go-redis has the socket
	aborted bool // abort ran
	// holds counts the holds bound to the connection that have not ended
	// yet, when more than one shares it (LockMany); 0 for a single hold.
	holds int
	// unclean: a hold that shared the connection ended otherwise than by
	// UNLOCK, so the connection is closed, not reused, after the last.
	unclean bool

	closeOnce sync.Once
}

// dialLockConn dials a new lock connection to ep.
func (c *Client) dialLockConn(ctx context.Context, ep endpoint) (*lockConn, error) {
	raw, err := c.dialRaw(ctx, ep.network, ep.addr)
	if err != nil {
		return nil, err
	}
	lc := &lockConn{c: c, ep: ep, cur: newWatchConn(raw)}
	lc.rdb = redis.NewClient(&redis.Options{
		Network:    ep.network,
		Addr:       ep.addr,
		Dialer:     lc.dial,
		Username:   c.opt.Username,
		Password:   c.opt.Password,
		ClientName: c.opt.ClientName,
		Protocol:   2,
		PoolSize:   1,
		// Never retry: a LOCK retried on a new connection would queue a
		// second waiter, and an UNLOCK retried after a lost reply would
		// report NOTHELD for a lock it released.
		MaxRetries:    -1,
		DialTimeout:   c.opt.DialTimeout,
		DialerRetries: 1,
		// No deadline of go-redis's own: lockConn.do and doHeld pass a ctx
		// whose deadline bounds the reply, or none for a LOCK, which waits
		// until its ctx ends (then abort closes the socket).
		ReadTimeout:           -1,
		WriteTimeout:          -1,
		ContextTimeoutEnabled: true,
		PoolTimeout:           c.opt.ReadTimeout + c.opt.DialTimeout,
		// An idle check would close a connection that carries a hold.
		ConnMaxIdleTime:          -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	return lc, nil
}

// dial is go-redis's Dialer: it hands over the socket, once.
func (lc *lockConn) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.handed || lc.aborted {
		return nil, net.ErrClosed
	}
	lc.handed = true
	return lc.cur, nil
}

// current returns the socket.
func (lc *lockConn) current() *watchConn { return lc.cur }

// dead reports whether the socket has closed or failed.
func (lc *lockConn) dead() bool { return lc.cur.failed() }

// abort closes the socket at once, from any goroutine, and keeps the
// lockConn from dialing again. The server sees a disconnect: it drops the
// connection's queued wait and releases its bound holds. The caller must
// close the lockConn afterwards.
func (lc *lockConn) abort() {
	lc.mu.Lock()
	lc.aborted = true
	lc.mu.Unlock()
	lc.cur.Close()
}

// share records that n holds are bound to the connection (LockMany).
func (lc *lockConn) share(n int) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.holds = n
}

// shared reports whether more than one hold is bound to the connection.
func (lc *lockConn) shared() bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.holds > 1
}

// leave is called once by each hold bound to the connection when it ends:
// released (by UNLOCK, the connection carrying nothing of it any more) or
// not. When the last hold leaves, the connection goes back to the idle
// list if every hold was released and it is alive, and is closed
// otherwise, so that the server surely releases whatever is left.
func (lc *lockConn) leave(released bool) {
	lc.mu.Lock()
	lc.holds--
	if !released {
		lc.unclean = true
	}
	last, clean := lc.holds <= 0, !lc.unclean
	if last {
		lc.holds, lc.unclean = 0, false
	}
	lc.mu.Unlock()
	switch {
	case !last:
	case clean && !lc.dead():
		lc.c.putLockConn(lc)
	default:
		lc.close()
	}
}

// close closes the connection for good and forgets it. Idempotent.
func (lc *lockConn) close() {
	lc.closeOnce.Do(func() {
		lc.abort()
		lc.rdb.Close()
		lc.c.mu.Lock()
		delete(lc.c.conns, lc)
		lc.c.mu.Unlock()
	})
}

// do sends one command and waits for its reply. Cancelling ctx aborts the
// command at once by closing the connection (aborted is then true and the
// caller must close lc). timeout > 0 bounds the wait for the reply; going
// over it also closes the connection (go-redis drops a connection whose
// reply it stopped waiting for) but is not an abort.
func (lc *lockConn) do(ctx context.Context, timeout time.Duration, args ...any) (res any, err error, aborted bool) {
	// go-redis gets no deadline: the ctx's end (deadline or cancel) aborts
	// through AfterFunc, so that the error is always the ctx's.
	cmdCtx := context.WithoutCancel(ctx)
	if timeout > 0 {
		var cancel context.CancelFunc
		cmdCtx, cancel = context.WithTimeout(cmdCtx, timeout)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, lc.abort)
	res, err = lc.rdb.Do(cmdCtx, args...).Result()
	if !stop() {
		return res, err, true
	}
	return res, err, false
}

// doHeld sends a command about a hold this connection may carry (UNLOCK,
// RENEW, CHECK, a re-entry). It waits at most timeout and is not
// cancellable: abandoning the reply would close the connection and so
// release the hold.
func (lc *lockConn) doHeld(timeout time.Duration, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return lc.rdb.Do(ctx, args...).Result()
}

// dialRaw dials the server, with TLS if configured.
func (c *Client) dialRaw(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: c.opt.DialTimeout, KeepAlive: 15 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if c.opt.TLSConfig == nil {
		return conn, nil
	}
	cfg := c.opt.TLSConfig.Clone()
	if cfg.ServerName == "" && network == "tcp" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.opt.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// watchConn reads its socket ahead of go-redis in a goroutine of its own,
// so that the moment the server or the network closes the connection,
// dead is closed, even when no command is in flight. go-redis reads the
// bytes read ahead through Read, with the deadlines it sets.
type watchConn struct {
	net.Conn
	dead       chan struct{} // closed when the socket reports an error (EOF, reset, closed)
	ready      chan struct{} // buffered(1): "buf or err changed"
	readerDone chan struct{}
	closeOnce  sync.Once

	// mu guards buf, err and deadline.
	mu       sync.Mutex
	buf      []byte // read ahead; buf[off:] is not consumed yet
	off      int
	err      error // the socket's error, returned once buf is drained
	deadline time.Time
}

func newWatchConn(c net.Conn) *watchConn {
	w := &watchConn{
		Conn:       c,
		dead:       make(chan struct{}),
		ready:      make(chan struct{}, 1),
		readerDone: make(chan struct{}),
	}
	go w.readLoop()
	return w
}

func (w *watchConn) readLoop() {
	defer close(w.readerDone)
	b := make([]byte, 16<<10)
	for {
		n, err := w.Conn.Read(b)
		w.mu.Lock()
		w.buf = append(w.buf, b[:n]...)
		if err != nil {
			w.err = err
		}
		w.mu.Unlock()
		select {
		case w.ready <- struct{}{}:
		default:
		}
		if err != nil {
			close(w.dead)
			return
		}
	}
}

// Read returns bytes read ahead, waiting for them until the read deadline.
func (w *watchConn) Read(p []byte) (int, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		if w.off < len(w.buf) {
			n := copy(p, w.buf[w.off:])
			w.off += n
			if w.off == len(w.buf) {
				w.buf, w.off = w.buf[:0], 0
			}
			w.mu.Unlock()
			return n, nil
		}
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return 0, err
		}
		dl := w.deadline
		w.mu.Unlock()
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			expired = timer.C
		}
		select {
		case <-w.ready:
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// failed reports whether the socket reported an error (it may still hold
// bytes read before it).
func (w *watchConn) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err != nil
}

// SetReadDeadline sets the deadline for Read; the socket itself keeps no
// read deadline, so that the read-ahead goroutine always waits.
func (w *watchConn) SetReadDeadline(t time.Time) error {
	w.mu.Lock()
	w.deadline = t
	w.mu.Unlock()
	return nil
}

func (w *watchConn) SetDeadline(t time.Time) error {
	w.SetReadDeadline(t)
	return w.Conn.SetWriteDeadline(t)
}

// Close closes the socket and waits for the read-ahead goroutine to end.
func (w *watchConn) Close() error {
	var err error
	w.closeOnce.Do(func() { err = w.Conn.Close() })
	<-w.readerDone
	return err
}
