package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// protocolDoc is the protocol reference, relative to this package.
var protocolDoc = filepath.Join("..", "docs", "protocol.md")

// docHeading matches a heading that documents a command or a subcommand:
// nothing but the name in backticks, e.g. "### `LOCK`" or
// "#### `CLIENT KILL`".
var docHeading = regexp.MustCompile("^#{2,6}\\s+`([A-Z][A-Z0-9_-]*)(?: ([A-Z][A-Z0-9_-]*))?`\\s*$")

// TestProtocolDoc: docs/protocol.md documents exactly the commands a real
// server reports. Every command of COMMAND DOCS has a heading there and
// its DOCS syntax as a line of a code block; every subcommand (the
// subcommands of COMMAND INFO: CLIENT, COMMAND, CONFIG, CLUSTER) has a
// heading; and every command or subcommand heading in the doc names one
// the server has. A command added to the table without docs, or one
// removed from it with its docs left behind, fails here.
func TestProtocolDoc(t *testing.T) {
	t.Parallel()
	headings, codeLines := readProtocolDoc(t)

	srv := startServer(t)
	c := srv.client(t, func(o *redis.Options) { o.Protocol = 2 })
	ctx := ctxFor(t, 30*time.Second)
	commands := commandDocs(t, c.Do(ctx, "COMMAND", "DOCS"))
	subs := commandSubcommands(t, c.Do(ctx, "COMMAND", "INFO"))
	if len(commands) == 0 {
		t.Fatal("COMMAND DOCS listed no commands")
	}

	// COMMAND DOCS and COMMAND INFO agree on the commands.
	for parent := range subs {
		if _, ok := commands[parent]; !ok {
			t.Errorf("COMMAND INFO lists %s (with subcommands) but COMMAND DOCS does not", parent)
		}
	}

	// Server → doc.
	for _, name := range sortedKeys(commands) {
		if !headings[name] {
			t.Errorf("command %s (COMMAND DOCS) has no heading \"### `%s`\" in %s", name, name, protocolDoc)
		}
		if syntax := commands[name]; !codeLines[syntax] {
			t.Errorf("the syntax of %s, %q (COMMAND DOCS), is not a line of a code block in %s", name, syntax, protocolDoc)
		}
	}
	for _, parent := range sortedKeys(subs) {
		for _, sub := range subs[parent] {
			if h := parent + " " + sub; !headings[h] {
				t.Errorf("subcommand %s (COMMAND INFO) has no heading \"#### `%s`\" in %s", h, h, protocolDoc)
			}
		}
	}

	// Doc → server.
	known := map[string]bool{}
	for name := range commands {
		known[name] = true
	}
	for parent, list := range subs {
		for _, sub := range list {
			known[parent+" "+sub] = true
		}
	}
	for _, h := range sortedKeys(headings) {
		if !known[h] {
			t.Errorf("%s documents %s under a command heading, but the server has no such command or subcommand", protocolDoc, h)
		}
	}
}

// readProtocolDoc returns the command headings of the protocol doc ("LOCK",
// "CLIENT KILL") and the trimmed lines of its fenced code blocks. A heading
// that appears twice fails the test.
func readProtocolDoc(t *testing.T) (headings, codeLines map[string]bool) {
	t.Helper()
	text, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatalf("reading the protocol reference: %v", err)
	}
	headings, codeLines = map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	inCode := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inCode = !inCode
			continue
		}
		if inCode {
			codeLines[strings.TrimSpace(line)] = true
			continue
		}
		m := docHeading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		h := strings.TrimSpace(m[1] + " " + m[2])
		if headings[h] {
			t.Errorf("%s:%d: %s is documented twice", protocolDoc, n, h)
		}
		headings[h] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if inCode {
		t.Errorf("%s: a code block is not closed", protocolDoc)
	}
	return headings, codeLines
}

// commandDocs maps each command of a RESP2 COMMAND DOCS reply (name,
// record, name, record, …; a record is field, value, …) to its syntax.
func commandDocs(t *testing.T, cmd *redis.Cmd) map[string]string {
	t.Helper()
	reply, err := cmd.Slice()
	if err != nil {
		t.Fatalf("COMMAND DOCS: %v", err)
	}
	if len(reply)%2 != 0 {
		t.Fatalf("COMMAND DOCS: %d elements, want name/record pairs", len(reply))
	}
	out := map[string]string{}
	for i := 0; i < len(reply); i += 2 {
		name, ok := reply[i].(string)
		rec, ok2 := reply[i+1].([]any)
		if !ok || !ok2 {
			t.Fatalf("COMMAND DOCS: element %d is %#v, %#v; want a name and a record", i, reply[i], reply[i+1])
		}
		syntax := ""
		for j := 0; j+1 < len(rec); j += 2 {
			if rec[j] == "syntax" {
				syntax, _ = rec[j+1].(string)
			}
		}
		if syntax == "" {
			t.Errorf("COMMAND DOCS: %s has no syntax", name)
		}
		out[strings.ToUpper(name)] = syntax
	}
	return out
}

// commandSubcommands maps each command of a COMMAND INFO reply that has
// subcommands to their names, upper case: "CLIENT" → ["GETNAME", "ID", …].
// Entries are Redis 7's: the tenth element lists the subcommands, each an
// entry named "parent|sub".
func commandSubcommands(t *testing.T, cmd *redis.Cmd) map[string][]string {
	t.Helper()
	reply, err := cmd.Slice()
	if err != nil {
		t.Fatalf("COMMAND INFO: %v", err)
	}
	out := map[string][]string{}
	for _, e := range reply {
		entry, ok := e.([]any)
		if !ok || len(entry) < 10 {
			t.Fatalf("COMMAND INFO: entry %#v; want Redis 7's 10 elements", e)
		}
		subs, ok := entry[9].([]any)
		if !ok {
			t.Fatalf("COMMAND INFO: subcommands of %v are %#v", entry[0], entry[9])
		}
		for _, s := range subs {
			sub, ok := s.([]any)
			if !ok || len(sub) == 0 {
				t.Fatalf("COMMAND INFO: subcommand entry %#v of %v", s, entry[0])
			}
			full := fmt.Sprint(sub[0])
			parent, name, ok := strings.Cut(full, "|")
			if !ok || !strings.EqualFold(parent, fmt.Sprint(entry[0])) {
				t.Fatalf("COMMAND INFO: subcommand %q of %v is not named %v|name", full, entry[0], entry[0])
			}
			p := strings.ToUpper(parent)
			out[p] = append(out[p], strings.ToUpper(name))
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
