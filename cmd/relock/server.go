package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/relock/relock/commands"
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
	TCPKeepalive      time.Duration `name:"tcp-keepalive" help:"TCP keepalive period (0: OS default)." default:"15s"`
	Shards            int           `help:"Lock table shards, a power of two (0: GOMAXPROCS×4)." default:"0"`

	logFlags
}

// Run starts the server and serves until SIGINT or SIGTERM.
func (c *serverCmd) Run() error {
	log, err := c.newLogger(os.Stderr)
	if err != nil {
		return err
	}
	srv, err := commands.New(commands.Config{
		Listen:       c.Listen,
		UnixSocket:   c.UnixSocket,
		DefaultTTL:   c.DefaultTTL,
		MaxTTL:       c.MaxTTL,
		DefaultWait:  c.DefaultWait,
		MaxClients:   c.MaxClients,
		MaxNameLen:   c.MaxNameLen,
		MaxWaiters:   c.MaxWaiters,
		MaxHolds:     c.MaxHoldsPerClient,
		TCPKeepAlive: c.TCPKeepalive,
		Shards:       c.Shards,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("starting relock", "version", commands.Version, "pid", os.Getpid())
	return srv.Run(ctx)
}
