package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// -update rewrites README.md's generated flag tables and docs/relock.1
// (make docs, make man).
var update = flag.Bool("update", false, "rewrite README.md's flag tables and docs/relock.1")

func docModel(t *testing.T) *kong.Application {
	t.Helper()
	parser, err := newParser(&cli{}, buildVersion{}, &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	return parser.Model
}

func findCommand(t *testing.T, app *kong.Application, path string) *kong.Node {
	t.Helper()
	for _, n := range docCommands(app) {
		if n.FullPath() == path {
			return n
		}
	}
	t.Fatalf("no command %q", path)
	return nil
}

// TestREADME_FlagTablesUpToDate: README's flag tables are what the
// command line model generates (make docs rewrites them).
func TestREADME_FlagTablesUpToDate(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tables := readmeTables(docModel(t))
	got, unknown := updateGenerated(string(raw), tables)
	if len(unknown) > 0 {
		t.Errorf("README.md has generated blocks nothing generates: %v", unknown)
	}
	for _, name := range []string{"server flags", "client flags"} {
		if !strings.Contains(string(raw), generatedBegin+name+" -->") {
			t.Errorf("README.md lacks the generated block %q", name)
		}
	}
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got != string(raw) {
		t.Errorf("README.md's flag tables are out of date with the command line: run make docs")
	}
}

// TestREADME_ServerTableIsEveryFlag checks the server table itself, row
// by row: every flag of `relock server` has a row with its default and
// variable, and every row names a real flag.
func TestREADME_ServerTableIsEveryFlag(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i := strings.Index(doc, generatedBegin+"server flags -->")
	if i < 0 {
		t.Fatal("README.md has no server flag table")
	}
	block := doc[i:]
	block = block[:strings.Index(block, generatedEnd)]
	rows := map[string]string{}
	rowRE := regexp.MustCompile("^\\| `--([a-z0-9-]+)[=`]")
	for _, line := range strings.Split(block, "\n") {
		if m := rowRE.FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	server := findCommand(t, docModel(t), "relock server")
	flags := map[string]bool{}
	for _, f := range docFlags(server) {
		flags[f.Name] = true
		row, ok := rows[f.Name]
		if !ok {
			t.Errorf("README's server table has no row for --%s", f.Name)
			continue
		}
		if d := flagDefault(f); d != "" && !strings.Contains(row, "| `"+d+"` |") {
			t.Errorf("README's row for --%s does not show its default %q: %s", f.Name, d, row)
		}
		for _, env := range f.Envs {
			if !strings.Contains(row, "`"+env+"`") {
				t.Errorf("README's row for --%s does not name %s", f.Name, env)
			}
		}
	}
	for name := range rows {
		if !flags[name] {
			t.Errorf("README's server table has a row for --%s, which relock server does not have", name)
		}
	}
	if len(flags) < 40 {
		t.Errorf("relock server has only %d flags: is the model walked right?", len(flags))
	}
}

// TestManPage: `relock man` prints the page docs/relock.1 holds (make man
// writes it), and it lists every flag of every command with its variable.
func TestManPage(t *testing.T) {
	p := parseArgs(t, "man")
	if p.err != nil {
		t.Fatal(p.err)
	}
	if err := p.ctx.Run(); err != nil {
		t.Fatal(err)
	}
	// parseArgs's stdout was read before Run; render again from the model.
	page := manPage(docModel(t))
	if !strings.HasPrefix(page, ".TH RELOCK 1") {
		t.Fatalf("not a man page:\n%s", page[:min(len(page), 200)])
	}
	for _, n := range docCommands(docModel(t)) {
		if !strings.Contains(page, ".SS "+roffEscape(n.FullPath())+"\n") {
			t.Errorf("the man page has no section for %s", n.FullPath())
		}
		for _, f := range docFlags(n) {
			if !strings.Contains(page, `\fB\-\-`+roffEscape(f.Name)+`\fR`) {
				t.Errorf("the man page lacks --%s of %s", f.Name, n.FullPath())
			}
			for _, env := range f.Envs {
				if !strings.Contains(page, roffEscape("$"+env)) {
					t.Errorf("the man page lacks $%s", env)
				}
			}
		}
	}
	if strings.Contains(page, ".SS relock man") {
		t.Error("the man page lists the hidden man command")
	}
	path := filepath.Join("..", "..", "docs", "relock.1")
	if *update {
		if err := os.WriteFile(path, []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != page {
		t.Error("docs/relock.1 is out of date with the command line: run make man")
	}
}
