package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/alecthomas/kong"
)

// Reference documentation generated from kong's model of the command line,
// so that it cannot drift from the flags: the flag tables of README.md
// (between "<!-- BEGIN GENERATED … -->" markers; a test checks they are up
// to date, `make docs` rewrites them) and the man page docs/relock.1
// (`relock man`, `make man`).
//
// The man page is written here rather than with github.com/alecthomas/mango-kong:
// that works with this kong, but leaves out environment variables and the
// defaults of flags with a placeholder, and stamps each page with the day it
// was built, so a checked-in page would never be reproducible.

// manCmd is the hidden `relock man`: it prints relock's man page (roff).
type manCmd struct{}

// Run writes the man page to kong's stdout.
func (manCmd) Run(k *kong.Kong) error {
	_, err := io.WriteString(k.Stdout, manPage(k.Model))
	return err
}

// docFlags are a command's own flags as the docs list them: kong's --help
// and hidden flags left out.
func docFlags(n *kong.Node) []*kong.Flag {
	var out []*kong.Flag
	for _, f := range n.Flags {
		if f.Name == "help" || f.Hidden {
			continue
		}
		out = append(out, f)
	}
	return out
}

// docCommands are the visible commands that run something (leaves), in
// the order --help lists them.
func docCommands(app *kong.Application) []*kong.Node {
	var out []*kong.Node
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, c := range n.Children {
			if c.Hidden || c.Type != kong.CommandNode {
				continue
			}
			if len(c.Children) == 0 {
				out = append(out, c)
			}
			walk(c)
		}
	}
	walk(app.Node)
	return out
}

// isClientFlag reports whether f is one of the tools' shared connection
// flags (clientFlags), documented once for every tool.
func isClientFlag(f *kong.Flag) bool {
	return clientValueFlags["--"+f.Name] || clientBoolFlags["--"+f.Name]
}

// flagDefault is a flag's default as the docs show it.
func flagDefault(f *kong.Flag) string {
	switch {
	case f.Default != "":
		return f.Default
	case f.IsBool():
		return "false"
	}
	return ""
}

// markdownFlagTable is a README table of flags: name, default, variable,
// meaning.
func markdownFlagTable(flags []*kong.Flag) string {
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	code := func(s string) string {
		if s == "" {
			return ""
		}
		return "`" + s + "`"
	}
	var b strings.Builder
	b.WriteString("| flag | default | environment | meaning |\n| --- | --- | --- | --- |\n")
	for _, f := range flags {
		name := "--" + f.Name
		if f.Short != 0 {
			name = fmt.Sprintf("-%c`, `--%s", f.Short, f.Name)
		}
		if ph := f.Tag.PlaceHolder; ph != "" && !f.IsBool() {
			name += "=" + ph
		}
		env := ""
		if len(f.Envs) > 0 {
			env = "`" + strings.Join(f.Envs, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", cell(name), cell(code(flagDefault(f))), env, cell(f.Help))
	}
	return b.String()
}

// readmeTables are the generated blocks of README.md by name: the marker
// "<!-- BEGIN GENERATED: name -->" opens each, "<!-- END GENERATED -->"
// closes it.
func readmeTables(app *kong.Application) map[string]string {
	out := map[string]string{}
	for _, n := range docCommands(app) {
		var own []*kong.Flag
		for _, f := range docFlags(n) {
			if n.Name == "server" || !isClientFlag(f) {
				own = append(own, f)
			}
		}
		path := strings.TrimPrefix(n.FullPath(), "relock ")
		if len(own) == 0 {
			out[path+" flags"] = "`relock " + path + "` has no flags of its own.\n"
			continue
		}
		out[path+" flags"] = markdownFlagTable(own)
	}
	for _, n := range docCommands(app) {
		if n.Name == "server" {
			continue // its --tls-cert/--tls-key are the server's own
		}
		var client []*kong.Flag
		for _, f := range docFlags(n) {
			if isClientFlag(f) {
				client = append(client, f)
			}
		}
		if len(client) > 0 {
			out["client flags"] = markdownFlagTable(client)
			break
		}
	}
	return out
}

const (
	generatedBegin = "<!-- BEGIN GENERATED: "
	generatedEnd   = "<!-- END GENERATED -->"
)

// updateGenerated returns doc with every generated block replaced by its
// table, and the names of the blocks it has no table for.
func updateGenerated(doc string, tables map[string]string) (string, []string) {
	var b strings.Builder
	var unknown []string
	for {
		i := strings.Index(doc, generatedBegin)
		if i < 0 {
			b.WriteString(doc)
			return b.String(), unknown
		}
		nameEnd := strings.Index(doc[i:], " -->")
		end := strings.Index(doc[i:], generatedEnd)
		if nameEnd < 0 || end < 0 {
			b.WriteString(doc)
			return b.String(), append(unknown, "(unterminated block)")
		}
		name := doc[i+len(generatedBegin) : i+nameEnd]
		header := doc[i : i+nameEnd+len(" -->")]
		b.WriteString(doc[:i])
		b.WriteString(header + "\n\n")
		table, ok := tables[name]
		if !ok {
			unknown = append(unknown, name)
		}
		b.WriteString(table + "\n")
		b.WriteString(generatedEnd)
		doc = doc[i+end+len(generatedEnd):]
	}
}

// roffEscape makes s safe as roff text: backslashes escaped, a leading
// control character neutralised, hyphens as ASCII minus, anything
// beyond ASCII as a named glyph.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	// Non-ASCII as groff's \[uXXXX], which needs no preconv.
	var ascii strings.Builder
	for _, r := range s {
		if r > 127 {
			fmt.Fprintf(&ascii, `\[u%04X]`, r)
			continue
		}
		ascii.WriteRune(r)
	}
	s = ascii.String()
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

// placeholder names a flag's value in the man page: its own placeholder,
// its choices, or its type.
func placeholder(f *kong.Flag) string {
	switch {
	case f.Tag.PlaceHolder != "":
		return f.Tag.PlaceHolder
	case f.Enum != "":
		return strings.ReplaceAll(f.Enum, ",", "|")
	case f.Target.Type() == reflect.TypeOf(time.Duration(0)):
		return "DURATION"
	case f.Target.Kind() == reflect.Int:
		return "N"
	}
	return "STRING"
}

// roffFlag writes one flag as a tagged paragraph.
func roffFlag(b *strings.Builder, f *kong.Flag) {
	b.WriteString(".TP\n")
	name := `\fB\-\-` + roffEscape(f.Name) + `\fR`
	if f.Short != 0 {
		name = fmt.Sprintf(`\fB\-%c\fR, `, f.Short) + name
	}
	if !f.IsBool() {
		name += `=\fI` + roffEscape(placeholder(f)) + `\fR`
	}
	b.WriteString(name + "\n")
	b.WriteString(roffEscape(f.Help))
	var notes []string
	if d := f.Default; d != "" && !f.IsBool() {
		notes = append(notes, "Default: "+roffEscape(d)+".")
	}
	if len(f.Envs) > 0 {
		notes = append(notes, "Environment: "+roffEscape("$"+strings.Join(f.Envs, ", $"))+".")
	}
	if len(notes) > 0 {
		b.WriteString(" " + strings.Join(notes, " "))
	}
	b.WriteString("\n")
}

// manPage is relock's man page, section 1, from the command line model.
func manPage(app *kong.Application) string {
	var b strings.Builder
	b.WriteString(`.TH RELOCK 1 "" "relock" "User Commands"` + "\n")
	b.WriteString(".SH NAME\nrelock \\- a distributed lock server that speaks the Redis protocol, and its tools\n")
	b.WriteString(".SH SYNOPSIS\n")
	for _, n := range docCommands(app) {
		b.WriteString(".B " + roffEscape(n.FullPath()) + "\n")
		var syn []string
		if len(docFlags(n)) > 0 {
			syn = append(syn, `[\fIflags\fR]`)
		}
		for _, p := range n.Positional {
			arg := `\fI` + roffEscape(p.Name) + `\fR`
			if !p.Required {
				arg = "[" + arg + "]"
			}
			if p.IsCumulative() {
				arg += "..."
			}
			syn = append(syn, arg)
		}
		b.WriteString(strings.Join(syn, " ") + "\n.br\n")
	}
	b.WriteString(".B relock\n\\-\\-version | \\-\\-help\n")
	b.WriteString(`.SH DESCRIPTION
relock is a distributed lock server that speaks the Redis protocol: any Redis
client can take a named lock with one command (LOCK name), wait for it in
FIFO order, get a fencing token, and lose the lock when its connection
closes. The relock binary is the server (relock server) and its tools,
which connect to a server as clients.
.PP
The server reads flags, then RELOCK_* environment variables, then the
YAML or JSON file of \-\-config (keys are flag names), then defaults, in
that order of precedence. The tools read their shared connection flags
from RELOCK_ADDR, RELOCK_USER, RELOCK_PASSWORD and RELOCK_CLIENT_TLS*, and
their own flags from RELOCK_<TOOL>_<FLAG>; no variable means one thing to
the server and another to a tool. Connection flags may also be written
before a tool's name.
`)
	b.WriteString(".SH OPTIONS\n")
	for _, f := range app.Node.Flags {
		if !f.Hidden {
			roffFlag(&b, f)
		}
	}
	b.WriteString(".SH COMMANDS\n")
	for _, n := range docCommands(app) {
		b.WriteString(".SS " + roffEscape(n.FullPath()) + "\n")
		b.WriteString(roffEscape(n.Help) + "\n")
		if n.Detail != "" {
			b.WriteString(".PP\n" + roffEscape(n.Detail) + "\n")
		}
		for _, p := range n.Positional {
			b.WriteString(".TP\n\\fI" + roffEscape(p.Name) + "\\fR\n" + roffEscape(p.Help) + "\n")
		}
		for _, f := range docFlags(n) {
			roffFlag(&b, f)
		}
	}
	b.WriteString(`.SH EXIT STATUS
0 on success; 1 on an error (one line on standard error, "relock: ...");
2 for a command line relock cannot parse. relock run exits with its
command's status (128+N if a signal N killed it), \-\-conflict\-exit\-code
(1) when the lock is held elsewhere, 69 when the lock could not be taken
for another reason (the server cannot be reached, an error reply), 75
when the lock is lost while the command runs, 126 or 127 when the command
could not be started, 128+N when a signal N interrupts the wait, and 64
when its arguments are wrong (nothing after \-\-, a \-\-ttl that is
not positive, ...).
.SH FILES
With \-\-data\-dir DIR: DIR/relock.db (bbolt) and DIR/relock.wal (its
write\-ahead log). With \-\-raft\-dir DIR: the Raft log (DIR/wal), stable
store and snapshots (DIR/snapshots).
.SH SEE ALSO
.BR redis\-cli (1).
README.md and docs/protocol.md in relock's source tree.
`)
	return b.String()
}
