package commands

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/persist"
)

// Version is relock's version, reported by INFO and HELLO.
var Version = "0.1.0"

// Commit is the commit relock was built from ("" when unknown), reported
// by the relock_build_info metric with Version.
var Commit string

// Config is the server's configuration. Durations of 0 mean "none" where
// the field says so.
type Config struct {
	Listen       string        // TCP address; empty: no TCP listener
	UnixSocket   string        // unix socket path; empty: none
	DefaultTTL   time.Duration // TTL for requests without one; 0: none
	MaxTTL       time.Duration // larger TTLs get -LIMIT; 0: no limit
	DefaultWait  time.Duration // WAIT for LOCK without one; 0: no limit
	MaxClients   int           // 0: no limit
	MaxNameLen   int           // bytes; 0 means 1024
	MaxWaiters   int           // per lock; 0: no limit
	MaxHolds     int           // bound holds + waits per connection; 0: no limit
	TCPKeepAlive time.Duration // 0: OS default; negative: off
	Shards       int           // 0: GOMAXPROCS×4 rounded up to a power of two
	// LockDelay is the lock-delay of requests without LOCKDELAY (0: none;
	// at most 60s): see SPEC §8.2 and docs/protocol.md.
	LockDelay time.Duration
	// MaxMulti bounds the names of one MLOCK (0 means 64).
	MaxMulti int
	// MaxPatterns bounds one connection's pattern subscriptions (0 means
	// 1024).
	MaxPatterns int
	// PubsubLimit is the unsent event output a subscribed connection may
	// have before it is disconnected (0 means 8 MiB).
	PubsubLimit int
	// IO picks how connections are served: "goroutine" (one per
	// connection) or "" / "auto": event loops where they
	// can serve (Linux, no TLS).
	IO     string
	Loops  int // event loops; 0: GOMAXPROCS
	Logger *slog.Logger

	// Store, if set, persists holds (--data-dir); New restores from it and
	// Run closes it. RestoreGrace is the deadline restored connection-bound
	// holds get (--restore-grace).
	Store        *persist.Store
	RestoreGrace time.Duration

	// MetricsListen, if set, serves the metrics handler (MetricsHandler)
	// there, with Go's /debug/pprof/ too if Pprof, for as long as Run.
	MetricsListen string
	Pprof         bool
	// Reload, if set, is received from (a SIGHUP, say) to replace the
	// users by those ReloadUsers returns, without dropping connections or
	// holds; a failed reload keeps the users in force.
	Reload      <-chan os.Signal
	ReloadUsers func() ([]User, error)
	// Background tasks run while the server serves (a cluster join, say):
	// each gets a context cancelled at shutdown, and Run waits for them.
	Background []func(ctx context.Context)

	// Cluster, if set, replicates the lock table with Raft (see engine.go):
	// only the leader serves lock commands; followers answer -MOVED.
	// RestoreGrace is then the deadline of a lost leader's bound holds.
	Cluster *Cluster

	// Security (see README "Security").
	Users          []User        // accounts; empty: no authentication
	TLS            *tls.Config   // serve TCP over TLS (mutual if ClientCAs is set)
	TLSAuthCN      bool          // a verified client certificate's CN logs in as that user
	InsecureNoAuth bool          // allow a non-loopback listener without authentication
	AuthTimeout    time.Duration // close connections not authenticated by then; 0 means 10s
	MaxArgs        int           // arguments per request; 0 means 1024
	MaxBulk        int           // bytes per argument; 0 means 64 KiB
}

func (c *Config) setDefaults() error {
	if c.LockDelay < 0 || c.LockDelay > time.Duration(locktable.MaxLockDelay) {
		return errors.New("--lock-delay must be between 0 and 60s")
	}
	if c.MaxNameLen <= 0 {
		c.MaxNameLen = 1024
	}
	if c.MaxMulti <= 0 {
		c.MaxMulti = 64
	}
	if c.MaxPatterns <= 0 {
		c.MaxPatterns = 1024
	}
	if c.Shards <= 0 {
		c.Shards = 1
		for c.Shards < runtime.GOMAXPROCS(0)*4 {
			c.Shards <<= 1
		}
	}
	if c.Shards&(c.Shards-1) != 0 || c.Shards > 4096 {
		return fmt.Errorf("shards must be a power of two up to 4096, got %d", c.Shards)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxTTL > 0 && c.DefaultTTL > c.MaxTTL {
		return fmt.Errorf("default-ttl %v exceeds max-ttl %v", c.DefaultTTL, c.MaxTTL)
	}
	if c.Listen == "" && c.UnixSocket == "" {
		return errors.New("nothing to listen on: set --listen or --unix-socket")
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.MaxArgs <= 0 {
		c.MaxArgs = defaultMaxArgs
	}
	if c.MaxBulk <= 0 {
		c.MaxBulk = defaultMaxBulk
	}
	if c.MaxBulk < c.MaxNameLen+64 {
		c.MaxBulk = c.MaxNameLen + 64
	}
	mtls := c.TLS != nil && c.TLS.ClientCAs != nil && c.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	if c.Listen != "" && len(c.Users) == 0 && !mtls && !c.InsecureNoAuth && !IsLoopback(c.Listen) {
		return fmt.Errorf("protected mode: refusing to listen on %s without authentication; "+
			"set --requirepass or --users-file (or --tls-client-ca for mutual TLS), "+
			"listen on a loopback address, or pass --insecure-no-auth if the network is trusted", c.Listen)
	}
	return nil
}

// IsLoopback reports whether a listen address can only be reached from
// this machine (what protected mode asks of an address without
// authentication: the client port's here, the Raft port's in cmd/relock).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a relock server. Create it with New, run it with Run.
type Server struct {
	cfg Config
	log *slog.Logger
	// eng is where changes go (engine.go); table is the local engine's
	// (nil in a cluster: the FSM has it).
	eng   engine
	table *locktable.Table
	epoch time.Time // when the server was made: start of now()'s clock and of uptime

	expiry expirer
	hub    *Hub // lock events (pubsub.go)

	// mu guards sessions and listeners.
	mu        sync.Mutex
	sessions  map[uint64]*session
	listeners []net.Listener
	loops     []*evloop // the event loops, if they serve
	closing   bool
	// ending counts sessions being ended, and undelivered grants being
	// released, on goroutines of their own (goEnding).
	ending int
	// gone is signalled (with mu held) whenever a session is forgotten
	// or ending drops.
	gone *sync.Cond

	// gate is held shared by every command that changes lock state, from
	// its table change through its commit, and exclusively by Run to set
	// stopping before the store takes its final state. So no change is
	// half done (in the final state, yet refused to its client) at
	// shutdown.
	gate     sync.RWMutex
	stopping bool // guarded by gate

	nextID atomic.Uint64
	// shutdown is closed when the server stops; detached loops watch it.
	shutdown chan struct{}
	// wg counts the goroutines the server owns: serve loops, detached
	// connection loops, the expiry loop.
	wg sync.WaitGroup

	stats   stats
	users   users
	authLog authLog
	// checks holds a token for each password check running (maxChecks).
	checks  chan struct{}
	metrics *metrics
	debug   bool // the logger is enabled at debug level (checked once)

	ready chan struct{}
}

// stats are the counters INFO reports.
type stats struct {
	connections  atomic.Int64 // total accepted
	rejected     atomic.Int64 // refused by max-clients
	commands     atomic.Int64
	grants       atomic.Int64
	waitGrants   atomic.Int64 // grants after a wait
	waitTimeouts atomic.Int64
	releases     [7]atomic.Int64 // by locktable.Reason
	errors       atomic.Int64
	authFailures atomic.Int64
	authTimeouts atomic.Int64
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	now := time.Now()
	// Fences start at the current unix time in µs, so that they keep
	// increasing across restarts even without persisted state.
	fenceStart := uint64(now.UnixMicro())
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		epoch:    now,
		sessions: make(map[uint64]*session),
		shutdown: make(chan struct{}),
		checks:   make(chan struct{}, maxChecks),
		ready:    make(chan struct{}),
	}
	s.gone = sync.NewCond(&s.mu)
	if cfg.Cluster != nil {
		s.hub = cfg.Cluster.Hub
	}
	if s.hub == nil {
		s.hub = NewHub()
	}
	if cfg.PubsubLimit > 0 {
		s.hub.limit.Store(int64(cfg.PubsubLimit))
	}
	if cfg.Store != nil && cfg.Cluster != nil {
		return nil, errors.New("--data-dir and a Raft cluster do not go together: the Raft log is the durable state")
	}
	if c := cfg.Cluster; c != nil {
		s.eng = raftEngine{s: s, c: c}
		// Session ids name sessions in the replicated log: each node
		// numbers its own in a range of its own.
		h := fnv.New32a()
		h.Write([]byte(c.Node.ID))
		s.nextID.Store(uint64(h.Sum32()&0x7fffffff) << 32)
	} else {
		s.table = locktable.New(locktable.Config{
			Shards:             cfg.Shards,
			FenceStart:         fenceStart,
			MaxWaiters:         cfg.MaxWaiters,
			MaxHoldsPerSession: cfg.MaxHolds,
			Notify:             s.hub.Notify,
			Watched:            s.hub.Watched,
		})
		s.eng = localEngine{s.table}
	}
	s.metrics = newMetrics(s)
	s.debug = s.log.Enabled(context.Background(), slog.LevelDebug)
	if err := s.users.set(cfg.Users); err != nil {
		return nil, err
	}
	s.expiry.init()
	if st := cfg.Store; st != nil {
		// Attached (written) by Run once it listens.
		restored, dropped, err := st.Restore(s.table, s.now(), cfg.RestoreGrace)
		if err != nil {
			return nil, err
		}
		s.log.Info("restored", "holds", restored, "dropped_expired", dropped,
			"fsync", string(st.Mode()), "next_fence", s.table.LastFence()+1)
		if restored > 0 {
			s.expiry.schedule(s.now())
		}
	}
	return s, nil
}

// attachStore makes the restored table the store's state (orphans' grace
// deadlines included), from which every commit goes on: Run does it only
// once it listens, so that a start that cannot serve leaves the next one
// the same holds with a whole --restore-grace.
func (s *Server) attachStore() error {
	if st := s.cfg.Store; st != nil {
		if err := st.Attach(s.table); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

// now is the server's clock for the lock table: unix nanoseconds at start
// plus monotonic time elapsed, so wall-clock jumps never move deadlines.
func (s *Server) now() int64 {
	return s.epoch.UnixNano() + int64(time.Since(s.epoch))
}

// randKey returns 64 random bits for a key, from crypto/rand.
func randKey() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never returns an error on Linux
	}
	return binary.LittleEndian.Uint64(b[:])
}

// Ready is closed once the server listens on all its addresses.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the addresses the server listens on (after Ready).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	return out
}

// Run listens and serves until ctx is cancelled, then stops accepting,
// closes every connection (releasing their holds), waits for every goroutine
// it started and returns. It returns an error only if it could not listen.
func (s *Server) Run(ctx context.Context) error {
	var lns []net.Listener
	if s.cfg.Listen != "" {
		lc := net.ListenConfig{KeepAlive: s.cfg.TCPKeepAlive}
		ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
		}
		if s.cfg.TLS != nil {
			ln = tls.NewListener(ln, s.cfg.TLS)
		}
		lns = append(lns, ln)
	}
	if p := s.cfg.UnixSocket; p != "" {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			// A stale socket from an earlier run; a live server on it
			// would answer a dial.
			if c, err := net.Dial("unix", p); err == nil {
				c.Close()
				closeAll(lns)
				return fmt.Errorf("unix socket %s is in use by another server", p)
			}
			os.Remove(p)
		}
		ln, err := net.Listen("unix", p)
		if err != nil {
			closeAll(lns)
			return fmt.Errorf("listen unix %s: %w", p, err)
		}
		lns = append(lns, ln)
	}
	var mlns net.Listener
	if s.cfg.MetricsListen != "" {
		var err error
		if mlns, err = net.Listen("tcp", s.cfg.MetricsListen); err != nil {
			closeAll(lns)
			return fmt.Errorf("metrics listen: %w", err)
		}
	}
	if err := s.attachStore(); err != nil {
		closeAll(append(lns, mlns))
		return err
	}
	s.mu.Lock()
	s.listeners = lns
	s.mu.Unlock()

	if e, ok := s.eng.(raftEngine); ok {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			e.watchLeadership(s.shutdown, s.cfg.RestoreGrace)
		}()
	}
	expCtx, stopExpiry := context.WithCancel(context.Background())
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.expiry.run(expCtx, s)
	}()
	go func() {
		defer s.wg.Done()
		s.hub.dispatch(expCtx.Done()) // pattern subscriptions' matching
	}()

	looped, err := s.startLoops(lns)
	if err != nil {
		closeAll(append(lns, mlns))
		stopExpiry()
		s.wg.Wait()
		return fmt.Errorf("event loop: %w", err)
	}
	if !looped {
		for _, ln := range lns {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.acceptGoroutines(ln)
			}()
		}
	}
	for _, ln := range lns {
		s.log.Info("listening", "addr", ln.Addr().String(), "network", ln.Addr().Network(), "event_loops", len(s.loops))
	}
	stopMetrics := s.serveMetrics(mlns)
	bgCtx, stopBackground := context.WithCancel(ctx)
	for _, task := range append(s.cfg.Background, s.reloadUsers) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			task(bgCtx)
		}()
	}
	close(s.ready)

	<-ctx.Done()
	stopBackground()
	s.log.Info("shutting down")
	s.beginStop()
	// Take the durable state first: from here on nothing is journaled, so
	// the releases of closing connections are not recorded and bound holds
	// come back as orphans at the next start (stopping is not a disconnect).
	if st := s.cfg.Store; st != nil {
		if err := st.Close(); err != nil {
			s.log.Error("final commit", "err", err)
		} else {
			s.log.Info("state committed", "holds", s.eng.table().Stats().Holds, "last_fence", s.eng.table().LastFence())
		}
	}
	closeAll(lns) // ends every accept loop
	close(s.shutdown)
	// Detached connections are ours to close.
	s.mu.Lock()
	for _, sess := range s.sessions {
		sess.kill()
	}
	s.mu.Unlock()
	grace := 5 * time.Second
	if c := s.cfg.Cluster; c != nil {
		// Ending a session proposes its release, which may take up to a
		// proposal's timeout when leadership is being lost.
		grace += max(c.ProposeTimeout, 5*time.Second)
	}
	s.waitSessionsGone(grace)
	s.stopLoops()
	stopExpiry()
	stopMetrics()
	s.wg.Wait()
	// Whatever did not end by itself (not expected) ends here, so that no
	// hold outlives the server.
	s.mu.Lock()
	left := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		left = append(left, sess)
	}
	s.mu.Unlock()
	for _, sess := range left {
		s.endSession(sess)
	}
	if s.cfg.UnixSocket != "" {
		os.Remove(s.cfg.UnixSocket)
	}
	s.log.Info("stopped")
	return nil
}

// acceptFailed waits before the next accept after err (out of file
// descriptors, most likely: wait for some to close rather than spin),
// doubling *backoff up to a second. False: the server is shutting down.
func (s *Server) acceptFailed(err error, backoff *time.Duration) bool {
	s.log.Error("accept", "err", err, "retry_in", *backoff)
	select {
	case <-time.After(*backoff):
	case <-s.shutdown:
		return false
	}
	*backoff = min(2**backoff, time.Second)
	return true
}

// serveMetrics serves the metrics handler on ln (nil: none) until the
// returned stop is called.
func (s *Server) serveMetrics(ln net.Listener) (stop func()) {
	if ln == nil {
		return func() {}
	}
	handler := s.MetricsHandler()
	if s.cfg.Pprof {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		handler = mux
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(ln); err != nil && err != http.ErrServerClosed {
			s.log.Error("metrics server", "err", err)
		}
	}()
	s.log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}
}

// reloadUsers replaces the users each time Reload delivers, until ctx
// ends.
func (s *Server) reloadUsers(ctx context.Context) {
	if s.cfg.Reload == nil || s.cfg.ReloadUsers == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Reload:
			users, err := s.cfg.ReloadUsers()
			if err == nil {
				err = s.SetUsers(users)
			}
			if err != nil {
				s.log.Error("reloading users failed; keeping the users in force", "err", err)
				continue
			}
			s.log.Info("users reloaded", "users", len(users))
		}
	}
}

// beginStop admits no more state changes: from its return on, nothing
// changes the state that Run then takes as final (every change admitted
// before, through its commit, is done).
func (s *Server) beginStop() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.gate.Lock()
	s.stopping = true
	s.gate.Unlock()
}

// enter admits a state-changing command unless shutdown has begun; the
// caller must leave when its change is committed.
func (s *Server) enter() bool {
	s.gate.RLock()
	if s.stopping {
		s.gate.RUnlock()
		return false
	}
	return true
}

func (s *Server) leave() { s.gate.RUnlock() }

// waitSessionsGone waits until every session has ended (including those
// ending on goroutines of their own) or d has passed.
func (s *Server) waitSessionsGone(d time.Duration) {
	timer := time.AfterFunc(d, func() {
		s.mu.Lock()
		s.gone.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(d)
	s.mu.Lock()
	for (len(s.sessions) > 0 || s.ending > 0) && time.Now().Before(deadline) {
		s.gone.Wait()
	}
	s.mu.Unlock()
}

// commit makes the changes of an operation durable as the fsync policy
// says, then hands its grants to their waiters. With sync false only what
// others may see waits for the commit: grants to waiters (their replies
// acknowledge a grant) and, with --fsync always, any change not yet
// committed (Store.Pending), so that the caller's reply never reveals what
// a crash could undo — a release by disconnect, expiry or kill included.
// If the commit fails, the grants are undone instead of delivered (see
// undoGrants) and the error is returned: the caller must not acknowledge
// its change.
func (s *Server) commit(ev *locktable.Events, sync bool) error {
	var err error
	if st := s.cfg.Store; st != nil && (sync || len(ev.Grants) > 0 || st.Pending()) {
		if err = st.Sync(); err != nil && err != persist.ErrClosed {
			s.log.Error("commit failed", "err", err)
		}
	}
	s.accountReleases(ev.Releases)
	if err != nil {
		s.undoGrants(ev.Grants, s.commitQuietly)
		return err
	}
	s.deliverGrants(ev.Grants)
	return nil
}

// commitQuietly is commit for changes no reply of the caller depends on.
func (s *Server) commitQuietly(ev *locktable.Events) { s.commit(ev, false) }

// undoGrants takes back grants whose commit failed: a waiter must never
// receive a key that is not on disk. Each hold is released by its key
// (detached ones too), and its waiter's connection is closed unanswered,
// as a loop closes the connections a failed commit would have answered.
// The releases may grant the next waiters: commit takes those changes.
func (s *Server) undoGrants(gs []locktable.Grant, commit func(*locktable.Events)) {
	if len(gs) == 0 {
		return
	}
	var ev locktable.Events
	for _, g := range gs {
		if g.Lost {
			continue // granted nothing: its answer (-NOTHELD) reveals no change
		}
		s.log.Warn("grant not committed; releasing it and closing its connection", "lock", g.Name, "locks", g.Names, "client", g.Session.ID)
		s.eng.unlock(&ev, g.Name, g.Key, s.now())
		for i, name := range g.Names {
			s.eng.unlock(&ev, name, g.Keys[i], s.now())
		}
		if sess := s.sessionOf(g.Session); sess != nil {
			sess.kill()
		}
	}
	commit(&ev)
}

// commit is Server.commit for a command of sess. On an event loop with
// --fsync always it does not wait: the loop commits once for all the
// commands of its round before it writes any of their replies, and
// delivers their grants after that commit (netloop_linux.go).
func (sess *session) commit(ev *locktable.Events, sync bool) error {
	if sess.c != nil && sess.c.commitLater(ev, sync) {
		return nil
	}
	return sess.srv.commit(ev, sync)
}

// commitGrant is commit for an acquire that was granted at once (key, of
// lock name): if its commit is left to the loop's round, the hold is
// remembered so that a failed commit can undo it (a detached hold
// outlives the connection the loop then closes).
func (sess *session) commitGrant(ev *locktable.Events, name string, key locktable.Key) error {
	if sess.c != nil && sess.c.commitLater(ev, true) {
		sess.uncommitted = append(sess.uncommitted, heldRef{name: name, key: key})
		return nil
	}
	return sess.srv.commit(ev, true)
}

// commitGrants is commitGrant for the holds of a multi-lock granted at
// once.
func (sess *session) commitGrants(ev *locktable.Events, reqs []locktable.Request, keys []locktable.Key) error {
	if sess.c != nil && sess.c.commitLater(ev, true) {
		for i, k := range keys {
			sess.uncommitted = append(sess.uncommitted, heldRef{name: reqs[i].Name, key: k})
		}
		return nil
	}
	return sess.srv.commit(ev, true)
}

// heldRef names one hold.
type heldRef struct {
	name string
	key  locktable.Key
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		if ln != nil {
			ln.Close()
		}
	}
}

// deliver hands grants to their waiting sessions and accounts releases.
// It never blocks: a grant is a message posted to the connection's owner.
func (s *Server) deliver(ev *locktable.Events) {
	s.accountReleases(ev.Releases)
	s.deliverGrants(ev.Grants)
}

// accountReleases counts and logs releases.
func (s *Server) accountReleases(rs []locktable.Release) {
	for i := range rs {
		r := &rs[i]
		s.stats.releases[r.Reason].Add(1)
		if r.DelayedUntil != 0 {
			s.expiry.schedule(r.DelayedUntil) // the lock-delay's end grants the waiters
		}
		s.metrics.holdTime.Observe(seconds(r.Held))
		if r.Reason != locktable.ReasonUnlock {
			// Involuntary: an operator wants to know (never the key).
			s.log.Info("released", "lock", r.Name, "fence", r.Fence, "client", r.SessionID,
				"reason", r.Reason.String(), "held_ms", r.Held/int64(time.Millisecond))
		} else if s.debug {
			s.log.Debug("released", "lock", r.Name, "fence", r.Fence, "client", r.SessionID, "reason", "unlock")
		}
	}
}

// deliverGrants hands grants to their waiting sessions. It never blocks.
func (s *Server) deliverGrants(gs []locktable.Grant) {
	for _, g := range gs {
		if g.Deadline != 0 {
			s.expiry.schedule(g.Deadline)
		}
		sess := s.sessionOf(g.Session)
		if sess == nil || sess.c == nil {
			// No connection to give it to: in a cluster, grants come
			// back only to the leader that proposed them, whose sessions
			// are all its own, so this one's connection is gone (its
			// close is being retried); in tests, a session without one.
			// A grant never outlives its connection.
			s.releaseUndelivered(g, s.commitQuietly)
			continue
		}
		sess.c.grant(g)
	}
}

// sessionOf returns the connection of a table session, or nil if it is
// not connected to this node.
func (s *Server) sessionOf(ls *locktable.Session) *session {
	if sess, _ := ls.Conn.(*session); sess != nil {
		return sess
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[ls.ID] // a replicated session: find its connection here
}

// releaseUndelivered releases the hold of a grant that never reached its
// connection (it closed meanwhile). Ending the session released it if it
// was bound; a detached hold must not outlive its grant.
// commit takes the release (offOwner).
func (s *Server) releaseUndelivered(g locktable.Grant, commit func(*locktable.Events)) {
	if g.Lost {
		return // a lost upgrade granted nothing
	}
	s.offOwner(commit, func(commit func(*locktable.Events)) { s.release(g, commit) })
}

// offOwner runs f, which changes the table, with commit where a change is
// local, and where it is a proposal (a cluster), which may wait a whole
// Raft commit, off the caller (an owner serving other connections) on a
// goroutine of its own (goEnding) that commits on its own.
func (s *Server) offOwner(commit func(*locktable.Events), f func(commit func(*locktable.Events))) {
	if s.eng.blocking() {
		s.goEnding(func() { f(s.commitQuietly) })
		return
	}
	f(commit)
}

// goEnding runs f on a goroutine of its own, counted in s.ending: Run
// waits for it (waitSessionsGone) before it stops.
func (s *Server) goEnding(f func()) {
	s.mu.Lock()
	s.ending++
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			s.ending--
			s.gone.Broadcast()
			s.mu.Unlock()
		}()
		f()
	}()
}

// release releases grant g's holds, and commit takes the release.
func (s *Server) release(g locktable.Grant, commit func(*locktable.Events)) {
	var ev locktable.Events
	if g.Names != nil {
		for i, name := range g.Names {
			s.eng.unlock(&ev, name, g.Keys[i], s.now())
		}
		commit(&ev)
		return
	}
	if s.eng.unlock(&ev, g.Name, g.Key, s.now()) == nil {
		commit(&ev)
	}
}
