package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/relock/relock/commands"
	"github.com/relock/relock/persist"
)

// serverCmd is `relock server`.
type serverCmd struct {
	Config kong.ConfigFlag `help:"YAML or JSON config file; keys are flag names." placeholder:"FILE"`

	Listen            string        `help:"TCP address to listen on (empty: none)." default:"127.0.0.1:6380"`
	UnixSocket        string        `help:"Unix socket path to listen on." placeholder:"PATH"`
	DefaultTTL        time.Duration `name:"default-ttl" help:"TTL of holds requested without one (0: none)." default:"0s"`
	MaxTTL            time.Duration `name:"max-ttl" help:"Largest TTL a request may ask for (0: no limit)." default:"0s"`
	DefaultWait       time.Duration `help:"How long LOCK waits when it names no WAIT (0: no limit)." default:"0s"`
	MaxClients        int           `help:"Most connections at once (0: no limit)." default:"10000"`
	MaxNameLen        int           `help:"Longest lock name in bytes." default:"1024"`
	MaxWaiters        int           `help:"Most waiters per lock (0: no limit)." default:"0"`
	MaxHoldsPerClient int           `help:"Most bound holds plus waits per connection (0: no limit)." default:"0"`
	MaxMulti          int           `help:"Most names one MLOCK or MTRYLOCK may take at once (more: -LIMIT)." default:"64"`
	MaxPatterns       int           `help:"Most lock-event patterns (PSUBSCRIBE) one connection may subscribe to (more: -LIMIT); channels are not bounded." default:"1024"`
	LockDelay         time.Duration `name:"lock-delay" help:"Lock-delay of holds whose LOCK names no LOCKDELAY: when such a hold ends involuntarily (its connection closes, its TTL runs out, CLIENT KILL) its slot stays taken this long more (0: none; at most 60s)." default:"0s"`
	TCPKeepalive      time.Duration `name:"tcp-keepalive" help:"TCP keepalive period (0: OS default)." default:"15s"`
	Shards            int           `help:"Lock table shards, a power of two (0: GOMAXPROCS×4, rounded up to a power of two)." default:"0"`
	IO                string        `name:"io" help:"How connections are served: auto (event loops on Linux where they can: not with TLS) or goroutine (one per connection)." enum:"auto,goroutine" default:"auto"`
	EventLoops        int           `help:"Event loops with --io auto (0: one per core)." default:"0"`

	MetricsListen string `help:"Address for Prometheus /metrics, /healthz and /readyz (empty: off)." placeholder:"HOST:PORT"`
	Pprof         bool   `help:"Also serve Go's /debug/pprof/ on --metrics-listen (for profiling; keep that address private)."`

	DataDir      string        `help:"Directory for durable state (bbolt); empty: in memory only." placeholder:"DIR"`
	Fsync        string        `help:"Commit policy with --data-dir: always (before each reply, grouped), everysec, no (snapshot at clean shutdown)." default:"always" enum:"always,everysec,no"`
	RestoreGrace time.Duration `help:"Deadline for restored connection-bound holds to be adopted by RENEW." default:"30s"`

	securityFlags
	clusterFlags
	logFlags
}

// maxLockDelay is the longest --lock-delay (and LOCKDELAY) the server
// takes.
const maxLockDelay = 60 * time.Second

// Run starts the server and serves until SIGINT or SIGTERM.
func (c *serverCmd) Run() error {
	if c.LockDelay < 0 || c.LockDelay > maxLockDelay {
		return fmt.Errorf("--lock-delay must be between 0 and 60s (got %v)", c.LockDelay)
	}
	if c.MaxMulti < 1 {
		return fmt.Errorf("--max-multi must be at least 1 (got %d)", c.MaxMulti)
	}
	if c.MaxPatterns < 1 {
		return fmt.Errorf("--max-patterns must be at least 1 (got %d)", c.MaxPatterns)
	}
	log, err := c.newLogger(os.Stderr)
	if err != nil {
		return err
	}
	bv := readBuildVersion()
	log.Info("starting relock", "version", bv.Version, "commit", bv.Commit, "go", bv.Go, "pid", os.Getpid())
	var store *persist.Store
	if c.DataDir != "" {
		mode, err := persist.ParseMode(c.Fsync)
		if err != nil {
			return err
		}
		store, err = persist.Open(persist.Options{Dir: c.DataDir, Mode: mode, Fault: failpoint(log)})
		if err != nil {
			return err
		}
		defer store.Close()
	}
	users, err := c.loadUsers()
	if err != nil {
		return err
	}
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return err
	}
	authTimeout, err := time.ParseDuration(c.AuthTimeout)
	if err != nil {
		return fmt.Errorf("--auth-timeout: %w", err)
	}
	shards := c.Shards
	if c.clusterFlags.enabled() && shards == 0 {
		shards = 16 // every member must use the same
	}
	// A cluster member that meets a log entry it cannot apply stops (see
	// replica.FSM.Apply), with that error as the exit status's reason.
	ctx, halt := context.WithCancelCause(context.Background())
	defer halt(nil)
	cluster, stopNode, err := c.startNode(c.Listen, shards, log, func(err error) {
		log.Error("stopping: this member cannot apply the cluster's log", "err", err)
		halt(err)
	})
	if err != nil {
		return err
	}
	defer stopNode()
	if cluster != nil && c.DataDir != "" {
		return errors.New("--data-dir and clustering do not go together: the Raft log in --raft-dir is the durable state")
	}
	// SIGHUP reloads the users file without dropping connections or holds.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv, err := commands.New(commands.Config{
		Listen:         c.Listen,
		UnixSocket:     c.UnixSocket,
		DefaultTTL:     c.DefaultTTL,
		MaxTTL:         c.MaxTTL,
		DefaultWait:    c.DefaultWait,
		MaxClients:     c.MaxClients,
		MaxNameLen:     c.MaxNameLen,
		MaxWaiters:     c.MaxWaiters,
		MaxHolds:       c.MaxHoldsPerClient,
		MaxMulti:       c.MaxMulti,
		MaxPatterns:    c.MaxPatterns,
		LockDelay:      c.LockDelay,
		TCPKeepAlive:   c.TCPKeepalive,
		Shards:         shards,
		IO:             c.IO,
		Loops:          c.eventLoops(),
		Logger:         log,
		Store:          store,
		RestoreGrace:   c.RestoreGrace,
		Users:          users,
		TLS:            tlsCfg,
		TLSAuthCN:      c.TLSAuthCN,
		InsecureNoAuth: c.InsecureNoAuth,
		AuthTimeout:    authTimeout,
		MaxArgs:        c.MaxArgs,
		MaxBulk:        c.MaxArgBytes,
		Cluster:        cluster,
		MetricsListen:  c.MetricsListen,
		Pprof:          c.Pprof,
		Reload:         hup,
		ReloadUsers:    c.loadUsers,
		Background:     c.background(cluster, log),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err // halted
	}
	return nil
}

// eventLoops returns how many event loops to run: one per core by
// default. Go then gets one more P than there are loops, so that work off
// the loops (password checks, expiry batches, Raft) runs on a thread of
// its own that the kernel preempts within a millisecond when a loop wakes,
// instead of holding a loop's P until Go's 10 ms preemption tick.
func (c *serverCmd) eventLoops() int {
	if c.EventLoops > 0 {
		return c.EventLoops
	}
	n := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n + 1)
	return n
}

// background returns the tasks the server runs while it serves: joining
// a cluster with --join.
func (c *serverCmd) background(cluster *commands.Cluster, log *slog.Logger) []func(context.Context) {
	if cluster == nil || c.Join == "" {
		return nil
	}
	// The join credentials are those of the tools' flags' environment
	// (RELOCK_USER/RELOCK_PASSWORD) or the server's own --requirepass.
	cf := &clientFlags{User: os.Getenv("RELOCK_USER"), Password: os.Getenv("RELOCK_PASSWORD")}
	if cf.Password == "" && c.Requirepass != "" {
		cf.Password = c.Requirepass
	}
	return []func(context.Context){func(ctx context.Context) { c.join(ctx, cf, log) }}
}

// failpoint returns the persistence fault hook for crash tests, or nil.
// RELOCK_FAILPOINT=point:n kills the process with SIGKILL the n-th time a
// commit reaches point (before-fsync, after-fsync);
// RELOCK_FAILPOINT=before-fsync:n:error fails that commit instead.
func failpoint(log *slog.Logger) func(string) error {
	spec := os.Getenv("RELOCK_FAILPOINT")
	if spec == "" {
		return nil
	}
	point, nstr, _ := strings.Cut(spec, ":")
	nstr, action, _ := strings.Cut(nstr, ":")
	n, err := strconv.Atoi(nstr)
	if err != nil || n < 1 {
		n = 1
	}
	log.Warn("failpoint armed", "point", point, "at", n, "action", action)
	var hits atomic.Int64
	return func(p string) error {
		if p != point || hits.Add(1) != int64(n) {
			return nil
		}
		if action == "error" {
			return errors.New("failpoint: injected commit failure")
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never reached
	}
}
