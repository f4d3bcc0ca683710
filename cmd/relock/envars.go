package main

import (
	"strings"

	"github.com/alecthomas/kong"
)

// Environment variables. The server and the tools often run on the same
// machine, in the same unit or container, so no variable means one thing to
// the server and another to a tool:
//
//   - `relock server`: RELOCK_<FLAG> (RELOCK_LISTEN, RELOCK_TLS_CERT, …),
//     kong's DefaultEnvars.
//   - Every tool's connection (clientFlags): RELOCK_ADDR, RELOCK_USER,
//     RELOCK_PASSWORD, which no server flag uses, and RELOCK_CLIENT_TLS,
//     RELOCK_CLIENT_TLS_CA, RELOCK_CLIENT_TLS_CERT, RELOCK_CLIENT_TLS_KEY,
//     kept apart from the server's RELOCK_TLS_*. Declared on clientFlags.
//   - A tool's own flags: RELOCK_<TOOL>_<FLAG> (RELOCK_RUN_TTL,
//     RELOCK_BENCH_TTL, RELOCK_LOCKS_OUTPUT, …), set by toolEnvars.
//
// A flag tagged env:"-" reads no variable.

// toolEnvars gives each tool's own flags RELOCK_<TOOL>_<FLAG>. It runs
// before DefaultEnvars, which leaves a flag that has a variable alone.
func toolEnvars(k *kong.Kong) error {
	for _, tool := range k.Model.Children {
		if !toolNames[tool.Name] {
			continue
		}
		prefix := "RELOCK_" + envName(tool.Name) + "_"
		var walk func(n *kong.Node)
		walk = func(n *kong.Node) {
			for _, f := range n.Flags {
				if f.Name == "help" || len(f.Envs) > 0 {
					continue // kong's own, declared (clientFlags), or env:"-"
				}
				name := prefix + envName(f.Name)
				f.Envs = []string{name}
				f.Value.Tag.Envs = []string{name}
			}
			for _, c := range n.Children {
				walk(c)
			}
		}
		walk(tool)
	}
	return nil
}

// envName is a flag or command name as it appears in a variable:
// conflict-exit-code → CONFLICT_EXIT_CODE.
func envName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}
