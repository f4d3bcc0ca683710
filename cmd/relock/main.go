// Command relock is the relock lock server and its tools.
//
// It stays thin: kong parses flags, environment (RELOCK_*) and an optional
// YAML/JSON config file into a command, whose Run builds what it needs and
// returns an error; main maps that to an exit code.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/relock/relock/commands"
)

// cli is the root of relock's command line.
type cli struct {
	Version kong.VersionFlag `help:"Print the version and exit."`

	Server serverCmd `cmd:"" help:"Run the relock server."`
	Bench  benchCmd  `cmd:"" help:"Load generator: relock or Redis, side by side."`

	Run    runCmd    `cmd:"" help:"Run a command while holding a lock (like flock(1))."`
	Locks  locksCmd  `cmd:"" help:"List locks with their holders and waiters."`
	Unlock unlockCmd `cmd:"" help:"Release a lock: every hold (--force), or the hold with a key."`

	Cluster clusterCmd `cmd:"" help:"Raft cluster membership: status, add, remove."`
}

// exitError carries a specific exit code out of a command's Run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func main() {
	var root cli
	parser, err := kong.New(&root,
		kong.Name("relock"),
		kong.Description("relock: a distributed lock server that speaks the Redis protocol."),
		kong.Vars{"version": "relock " + commands.Version},
		kong.DefaultEnvars("RELOCK"),
		kong.Configuration(configLoader),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relock:", err)
		os.Exit(2)
	}
	ctx, err := parser.Parse(hoistClientFlags(os.Args[1:]))
	parser.FatalIfErrorf(err)
	if err := ctx.Run(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintln(os.Stderr, "relock:", ee.err)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "relock:", err)
		os.Exit(1)
	}
}

// Client flags may stand before a tool's name (SPEC §4): `relock --addr X
// locks` means `relock locks --addr X`. kong allows a flag on one command
// only, and the server has its own --tls-cert, so the tools' client flags
// live on each tool; this moves the ones written before the tool's name
// after it. Anything else before the name is left for kong to report.
var (
	clientValueFlags = map[string]bool{"--addr": true, "--user": true, "--password": true, "--tls-ca": true, "--tls-cert": true, "--tls-key": true}
	clientBoolFlags  = map[string]bool{"--tls": true}
	toolNames        = map[string]bool{"run": true, "locks": true, "unlock": true, "bench": true, "cluster": true}
)

func hoistClientFlags(args []string) []string {
	var pre []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(a, "=")
		switch {
		case clientValueFlags[name] && !hasValue && i+1 < len(args):
			pre = append(pre, a, args[i+1])
			i++
		case clientValueFlags[name] || clientBoolFlags[name]:
			pre = append(pre, a)
		case toolNames[a] && len(pre) > 0:
			head := []string{a}
			if a == "cluster" && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // the flags belong to its subcommand (status, add, remove)
				head = append(head, args[i])
			}
			out := append(head, pre...)
			return append(out, args[i+1:]...)
		default:
			return args
		}
	}
	return args
}
