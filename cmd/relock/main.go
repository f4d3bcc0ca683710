// Command relock is the relock lock server and its tools.
//
// It stays thin: kong parses flags, environment (RELOCK_*) and an optional
// YAML/JSON config file into a command, whose Run builds what it needs and
// returns an error; main maps that to an exit code.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/relock/relock/commands"
)

// cli is the root of relock's command line.
type cli struct {
	// env:"-": a RELOCK_VERSION in the environment (set for a container, a
	// unit, a script) must not turn every command into --version.
	Version kong.VersionFlag `env:"-" help:"Print the version and exit."`

	Server serverCmd `cmd:"" help:"Run the relock server."`
	Bench  benchCmd  `cmd:"" help:"Load generator: relock or Redis, side by side."`

	Run    runCmd    `cmd:"" help:"Run a command while holding a lock (like flock(1))."`
	Locks  locksCmd  `cmd:"" help:"List locks with their holders and waiters."`
	Watch  watchCmd  `cmd:"" help:"Print lock events as they happen (acquired, released, contended, free)."`
	Unlock unlockCmd `cmd:"" help:"Release a lock: every hold (--force), or the hold with a key."`

	Cluster clusterCmd `cmd:"" help:"Raft cluster membership: status, add, remove."`

	Completion completionCmd `cmd:"" help:"Print the shell completion script for bash, zsh or fish."`

	Man manCmd `cmd:"" hidden:"" help:"Print relock's man page (roff; make man writes docs/relock.1)."`

	RunGuard runGuardCmd `cmd:"" name:"run-guard" hidden:"" help:"relock run's guard: kills the command if relock run dies (started by relock run)."`
}

// exitUsage is the exit status of a command line relock cannot parse (as
// in most Unix tools, and Go's flag package).
const exitUsage = 2

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
	bv := readBuildVersion()
	commands.Version = bv.Protocol()
	commands.Commit = bv.Commit
	var root cli
	parser, err := newParser(&root, bv, os.Stdout, os.Stderr, os.Exit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relock:", err)
		os.Exit(exitUsage)
	}
	// A shell asking for completions (COMP_LINE set by the script of
	// `relock completion`) gets them here, and relock exits.
	completeCommandLine(parser)
	ctx, err := parser.Parse(hoistClientFlags(os.Args[1:]))
	if err != nil {
		os.Exit(reportUsageError(os.Stderr, err))
	}
	os.Exit(reportRunError(os.Stderr, ctx.Run()))
}

// newParser builds relock's command line: flags, then RELOCK_* environment
// variables (envars), then the --config file, then defaults. --help and
// --version write to stdout and call exit(0).
func newParser(root *cli, bv buildVersion, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(root,
		kong.Name("relock"),
		kong.Description("relock: a distributed lock server that speaks the Redis protocol."),
		kong.Vars{"version": bv.String()},
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		// toolEnvars names the tools' variables first; DefaultEnvars
		// gives every other flag RELOCK_<FLAG>.
		kong.PostBuild(toolEnvars),
		kong.DefaultEnvars("RELOCK"),
		kong.ValueFormatter(helpWithDefault),
		kong.Configuration(configLoader),
	)
}

// reportUsageError writes a command line error as one line and a pointer to
// the help of the command it was meant for, both to stderr, and returns
// the exit status. (kong's own handling prints the whole usage to stdout.)
func reportUsageError(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "relock:", err)
	helpFor := "relock"
	var perr *kong.ParseError
	if errors.As(err, &perr) && perr.Context != nil {
		if cmd := perr.Context.Selected(); cmd != nil {
			helpFor = cmd.FullPath()
		}
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", helpFor)
	return exitUsage
}

// reportRunError writes what a command's Run returned to stderr, prefixed
// "relock:" once, and returns the exit status.
func reportRunError(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "relock:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "relock:", err)
	return 1
}

// Client flags may stand before a tool's name: `relock --addr X
// locks` means `relock locks --addr X`. kong allows a flag on one command
// only, and the server has its own --tls-cert, so the tools' client flags
// live on each tool; this moves the ones written before the tool's name
// after it. Anything else before the name is left for kong to report.
var (
	clientValueFlags = map[string]bool{"--addr": true, "--user": true, "--password": true, "--tls-ca": true, "--tls-cert": true, "--tls-key": true}
	clientBoolFlags  = map[string]bool{"--tls": true}
	toolNames        = map[string]bool{"run": true, "locks": true, "watch": true, "unlock": true, "bench": true, "cluster": true}
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
