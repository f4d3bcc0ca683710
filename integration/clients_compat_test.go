package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Compatibility with the Redis clients people already use (README, "Use it
// from your language"). Each client below is driven end to end against its
// own server: handshake options (defaults, username+password, client name,
// db 0), the lock commands, how nil and error codes surface, a blocking
// LOCK, and the caveats of pooled or multiplexed connections. The README's
// compatibility table is then checked against what this run tested: every
// row must name a client and version that passed here.
//
// Python and Node clients run scripts from testdata/compat that print one
// line per check, "<check> <observation>"; the expectations are the tables
// below, so what each client shows a user is readable in one place.

// compatClient is one row of README's compatibility table.
type compatClient struct {
	name string // the table's client column
	sub  string // the subtest's name
	// run drives the client against srv, and authSrv (started with
	// --requirepass compatPass), and returns the version it tested.
	run func(t *testing.T, srv, authSrv *server) (version string)
}

// compatPass is the password of the servers started with --requirepass.
const compatPass = "s3cret"

var compatClients = []compatClient{
	{"redis-cli", "redis-cli", compatRedisCLI},
	{"redis-benchmark", "redis-benchmark", compatRedisBenchmark},
	{"redis-py", "redis-py", compatRedisPy},
	// npm packages "redis" (the current major) and "redis4" (npm:redis@4).
	{"node-redis", "node-redis", func(t *testing.T, srv, authSrv *server) string {
		return compatNodeRedis(t, srv, authSrv, "redis", nodeRedisWant(3))
	}},
	{"node-redis", "node-redis-v4", func(t *testing.T, srv, authSrv *server) string {
		return compatNodeRedis(t, srv, authSrv, "redis4", nodeRedisWant(2))
	}},
	// npm packages "ioredis" (the current major) and "ioredis5".
	{"ioredis", "ioredis", func(t *testing.T, srv, authSrv *server) string {
		return compatIORedis(t, srv, authSrv, "ioredis", ioredisWant(3))
	}},
	{"ioredis", "ioredis-v5", func(t *testing.T, srv, authSrv *server) string {
		return compatIORedis(t, srv, authSrv, "ioredis5", ioredisWant(2))
	}},
	{"go-redis", "go-redis", compatGoRedis},
}

// compatResult is how one client's test ended.
type compatResult struct {
	client, version string
	state           string // "passed", "failed" or "skipped"
}

// TestCompat_Clients runs every client of the compatibility table, then
// checks README's table against the results.
func TestCompat_Clients(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		results []compatResult
	)
	t.Run("client", func(t *testing.T) {
		for _, c := range compatClients {
			t.Run(c.sub, func(t *testing.T) {
				t.Parallel()
				r := compatResult{client: c.name, state: "failed"}
				// Registered first, so it runs last: after the server's
				// own cleanup, which may still fail the test.
				t.Cleanup(func() {
					switch {
					case t.Skipped():
						r.state = "skipped"
					case !t.Failed():
						r.state = "passed"
					}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				})
				srv := startServer(t)
				authSrv := startServer(t, "--requirepass", compatPass)
				r.version = c.run(t, srv, authSrv)
				t.Logf("%s %s", c.name, r.version)
			})
		}
	})
	t.Run("README-table", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		checkCompatTable(t, readCompatTable(t), results, os.Getenv("CI") == "true")
	})
}

// compatRow is one row of README's compatibility table.
type compatRow struct {
	client, version, status, notes string
}

var compatMDLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// readCompatTable parses the table headed "| client | version tested |
// status | notes |" in README's "Use it from your language" section.
func readCompatTable(t *testing.T) []compatRow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Use it from your language\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Use it from your language" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var rows []compatRow
	inTable := false
	for _, line := range strings.Split(section, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case !inTable:
			if slices.Equal(cells, []string{"client", "version tested", "status", "notes"}) {
				inTable = true
			}
		case strings.HasPrefix(cells[0], "---"):
		case len(cells) != 4:
			t.Errorf("README compatibility table: row %q has %d cells; want 4 (no '|' in notes)", line, len(cells))
		default:
			clean := func(s string) string { return strings.Trim(compatMDLink.ReplaceAllString(s, "$1"), "`* ") }
			rows = append(rows, compatRow{clean(cells[0]), clean(cells[1]), clean(cells[2]), cells[3]})
		}
	}
	if len(rows) == 0 {
		t.Fatal("README.md: no compatibility table (| client | version tested | status | notes |) in \"Use it from your language\"")
	}
	return rows
}

// compatReporter is the part of testing.TB that checkCompatTable uses.
type compatReporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// checkCompatTable fails unless every row of the table names a client and
// version whose test passed in this run with status "works", and every
// client tested has a row. Rows of clients that were skipped (a tool
// missing) fail under CI and are only logged elsewhere.
func checkCompatTable(t compatReporter, rows []compatRow, results []compatResult, ci bool) {
	t.Helper()
	// The result of the row's client and version; a test that failed
	// before it learnt its version counts for every row of its client.
	tested := func(r compatRow) *compatResult {
		for i, res := range results {
			if res.client == r.client && (res.version == r.version || res.version == "" && res.state == "failed") {
				return &results[i]
			}
		}
		return nil
	}
	ran := map[string]bool{}
	for _, res := range results {
		if res.state != "skipped" {
			ran[res.client] = true
		}
	}
	for _, row := range rows {
		if row.status != "works" {
			t.Errorf("README row %s %s: status %q; every row must be \"works\" and backed by a passing test", row.client, row.version, row.status)
		}
		res := tested(row)
		switch {
		case res != nil && res.state == "passed":
		case res != nil:
			t.Errorf("README row %s %s says %q, but its test %s in this run", row.client, row.version, row.status, res.state)
		case ran[row.client]:
			var got []string
			for _, r := range results {
				if r.client == row.client {
					got = append(got, r.version)
				}
			}
			t.Errorf("README row %s %s: this run tested %s %v; update the row", row.client, row.version, row.client, got)
		default:
			msg := "README row %s %s: no test of this client ran (tool missing?)"
			if ci {
				t.Errorf(msg, row.client, row.version)
			} else {
				t.Logf(msg, row.client, row.version)
			}
		}
	}
	for _, res := range results {
		if res.state != "passed" {
			continue
		}
		if !slices.ContainsFunc(rows, func(r compatRow) bool { return r.client == res.client && r.version == res.version }) {
			t.Errorf("README compatibility table has no row for %s %s, which passed in this run", res.client, res.version)
		}
	}
}

// compatRecorder records what checkCompatTable reports.
type compatRecorder struct{ errors []string }

func (r *compatRecorder) Helper() {}
func (r *compatRecorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *compatRecorder) Logf(string, ...any) {}

// TestCompat_TableCheckCatchesDrift: the README check refuses rows that no
// passing test backs, and tested clients without a row.
func TestCompat_TableCheckCatchesDrift(t *testing.T) {
	t.Parallel()
	results := []compatResult{
		{"redis-py", "4.3.4", "passed"},
		{"node-redis", "6.3.1", "passed"},
		{"node-redis", "4.7.1", "failed"},
		{"ioredis", "6.0.0", "passed"},
		{"go-redis", "", "failed"}, // failed before it learnt its version
	}
	rows := []compatRow{
		{client: "redis-py", version: "4.3.4", status: "works"},
		{client: "node-redis", version: "6.3.1", status: "works"},
		{client: "node-redis", version: "4.7.1", status: "works"},  // its test failed
		{client: "ioredis", version: "5.10.1", status: "works"},    // not the version tested
		{client: "Jedis", version: "5.0.0", status: "works"},       // no test at all
		{client: "redis-py", version: "4.3.4", status: "untested"}, // not "works"
		{client: "go-redis", version: "v9.23.0", status: "works"},
	}
	var rec compatRecorder
	checkCompatTable(&rec, rows, results, true)
	want := []string{
		`README row node-redis 4.7.1 says "works", but its test failed in this run`,
		`README row ioredis 5.10.1: this run tested ioredis [6.0.0]; update the row`,
		`README row Jedis 5.0.0: no test of this client ran (tool missing?)`,
		`README row redis-py 4.3.4: status "untested"; every row must be "works" and backed by a passing test`,
		`README row go-redis v9.23.0 says "works", but its test failed in this run`,
		`README compatibility table has no row for ioredis 6.0.0, which passed in this run`,
	}
	if !slices.Equal(rec.errors, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(rec.errors, "\n"), strings.Join(want, "\n"))
	}
	rec = compatRecorder{}
	checkCompatTable(&rec, rows[:2], results[:2], true)
	if len(rec.errors) != 0 {
		t.Errorf("a matching table: %q", rec.errors)
	}
}

// compatWrongPass is the WRONGPASS reply's text, as a regexp.
const compatWrongPass = `WRONGPASS invalid username-password pair or user is disabled\.`

// compatKey matches a key as a client prints it.
var compatKey = regexp.MustCompile(`^\d+-[0-9a-f]{16}$`)

// compatCheck is an expected line of a driver script: the check's name and
// a regexp its observation must match in full.
type compatCheck struct {
	check, want string
}

// runCompatDriver runs a driver script with RELOCK_ADDR (srv),
// RELOCK_AUTH_ADDR and RELOCK_AUTH_PASS (authSrv) and env, checks every line
// it printed against want, in any order, and returns the version it
// reported.
func runCompatDriver(t *testing.T, srv, authSrv *server, env []string, want []compatCheck, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "RELOCK_ADDR="+srv.Addr, "RELOCK_AUTH_ADDR="+authSrv.Addr, "RELOCK_AUTH_PASS="+compatPass)
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := compatOutput(cmd, 30*time.Second)
	if err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, out, stderr.String())
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		check, obs, _ := strings.Cut(line, " ")
		if _, dup := got[check]; dup {
			t.Errorf("check %q reported twice", check)
		}
		got[check] = obs
	}
	version := got["version"]
	if version == "" {
		t.Errorf("the driver reported no version:\n%s", out)
	}
	delete(got, "version")
	for _, w := range want {
		obs, ok := got[w.check]
		switch {
		case !ok:
			t.Errorf("check %s: not reported", w.check)
		case !regexp.MustCompile(`^(?:` + w.want + `)$`).MatchString(obs):
			t.Errorf("check %s: got %q; want %s", w.check, obs, w.want)
		}
		delete(got, w.check)
	}
	for check, obs := range got {
		t.Errorf("unexpected check %s %q (add it to the expectations)", check, obs)
	}
	if t.Failed() {
		t.Logf("driver output:\n%s\nstderr:\n%s", out, stderr.String())
	}
	return version
}

// compatOutput runs cmd with stdout captured, killing it after d.
func compatOutput(cmd *exec.Cmd, d time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout = &out
	if cmd.Stderr == nil {
		cmd.Stderr = &out
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(d, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.String(), err
}

// needPythonRedis returns Debian's python3, which has redis-py
// (python3-redis); a python3 earlier on PATH (pyenv) may not.
func needPythonRedis(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import redis").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s with redis-py is required under CI (scripts/deps.sh installs python3-redis): %v", py, err)
		}
		t.Skipf("%s has no redis-py (apt-get install python3-redis): %v", py, err)
	}
	return py
}

// needNodeModule returns the node binary and the node_modules directory of
// examples/node, where module is installed (scripts/deps.sh runs npm ci).
func needNodeModule(t *testing.T, module string) (node, nodeModules string) {
	t.Helper()
	node = needTool(t, "node")
	dir, err := filepath.Abs(filepath.Join("..", "examples", "node", "node_modules"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, module, "package.json")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed in examples/node (scripts/deps.sh runs npm ci): %v", module, err)
		}
		t.Skipf("%s is not installed in examples/node (run scripts/deps.sh or npm ci there)", module)
	}
	return node, dir
}

// compatCLIVersion returns the version a redis tool prints with --version
// ("redis-cli 7.0.15" → "7.0.15").
func compatCLIVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 2 {
		t.Fatalf("%s --version: %q, %v", bin, out, err)
	}
	return f[1]
}

// compatCLI is one redis-cli process fed commands on stdin, as a person
// types them: all share its one connection. --no-raw keeps the formatting
// redis-cli uses on a terminal ("(nil)", "(integer) 1", "(error) ...").
type compatCLI struct {
	stdin io.WriteCloser
	lines chan string
}

func startCompatCLI(t *testing.T, srv *server, args ...string) *compatCLI {
	t.Helper()
	bin := needTool(t, "redis-cli")
	cmd := exec.Command(bin, append([]string{"--no-raw", "-h", "127.0.0.1", "-p", srv.Port()}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &compatCLI{stdin: stdin, lines: make(chan string, 256)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return c
}

// do sends one command line and returns the lines redis-cli printed for
// it (an ECHO after it marks the end of the reply).
func (c *compatCLI) do(t *testing.T, line string) []string {
	t.Helper()
	const end = "--end-of-reply--"
	if _, err := io.WriteString(c.stdin, line+"\nECHO "+end+"\n"); err != nil {
		t.Fatalf("redis-cli stdin: %v", err)
	}
	var got []string
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("redis-cli exited after %q; printed %q", line, got)
			}
			if l == `"`+end+`"` {
				return got
			}
			got = append(got, l)
		case <-timeout:
			t.Fatalf("redis-cli: no reply to %q within 15s; printed %q", line, got)
		}
	}
}

// do1 is do for a one-line reply.
func (c *compatCLI) do1(t *testing.T, line string) string {
	t.Helper()
	got := c.do(t, line)
	if len(got) != 1 {
		t.Fatalf("redis-cli %q printed %q; want one line", line, got)
	}
	return got[0]
}

func compatRedisCLI(t *testing.T, srv, authSrv *server) string {
	bin := needTool(t, "redis-cli")
	version := compatCLIVersion(t, bin)
	admin := srv.client(t)

	// Interactive style: one process, one connection. AUTH with a user and
	// any password, a client name, db 0 (-n 0 sends no SELECT; SELECT 0 is
	// accepted too).
	cli := startCompatCLI(t, srv, "--no-auth-warning", "--user", "default", "--pass", "anything", "-n", "0")
	for _, ex := range []struct{ cmd, want string }{
		{"CLIENT SETNAME cli-app", "OK"},
		{"SELECT 0", "OK"},
		{"CLIENT GETNAME", `"cli-app"`},
	} {
		if got := cli.do1(t, ex.cmd); got != ex.want {
			t.Errorf("%s printed %q; want %q", ex.cmd, got, ex.want)
		}
	}
	quoted := cli.do1(t, "LOCK cli TTL 60000")
	key, err := strconv.Unquote(quoted)
	if err != nil || !compatKey.MatchString(key) {
		t.Fatalf("LOCK printed %q; want a quoted key", quoted)
	}
	for _, ex := range []struct{ cmd, want string }{
		{"TRYLOCK cli", `\(nil\)`},
		{"LOCK cli WAIT 20", `\(nil\)`},
		{"CHECK cli " + key, `\(integer\) (59\d\d\d|60000)`},
		{"RENEW cli " + key + " TTL 30000", `\(integer\) 30000`},
		{"UNLOCK cli 1-0000000000000000", `\(error\) NOTHELD the key does not hold the lock`},
		{"LOCK cli TTL x", `\(error\) ERR value is not an integer or out of range`},
	} {
		if got := cli.do1(t, ex.cmd); !regexp.MustCompile(`^` + ex.want + `$`).MatchString(got) {
			t.Errorf("%s printed %q; want %s", ex.cmd, got, ex.want)
		}
	}
	locks := strings.Join(cli.do(t, "LOCKS"), "\n")
	// (With 10 fields per lock, redis-cli pads the inner numbers: "1)  1)".)
	for _, want := range []string{`1)  1) "name"`, `2) "cli"`, `"holders"`, `(integer) ` + strings.Split(key, "-")[0], `"client-id"`} {
		if !strings.Contains(locks, want) {
			t.Errorf("LOCKS output lacks %q:\n%s", want, locks)
		}
	}
	if got := cli.do1(t, "UNLOCK cli "+key); got != "(integer) 1" {
		t.Errorf("UNLOCK printed %q", got)
	}
	// A blocking LOCK: redis-cli has no read timeout; it prints the key
	// when the holder's TTL runs out.
	mustCompatLock(t, admin, "cli-block", "TTL", 300)
	if got := cli.do1(t, "LOCK cli-block WAIT 10000"); !regexp.MustCompile(`^"\d+-[0-9a-f]{16}"$`).MatchString(got) {
		t.Errorf("blocking LOCK printed %q; want a key", got)
	}

	// Scripting (-e): one process per command, so a lock that must outlive
	// it is DETACHed with a TTL; -e turns an error reply into exit status 1.
	// Without a tty redis-cli prints raw replies: nil is an empty line.
	runAt := func(s *server, args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"-h", "127.0.0.1", "-p", s.Port()}, args...)...)
		out, err := compatOutput(cmd, 10*time.Second)
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			return strings.TrimSpace(out), ee.ExitCode()
		case err != nil:
			t.Fatalf("redis-cli %v: %v", args, err)
		}
		return strings.TrimSpace(out), 0
	}
	run := func(args ...string) (string, int) { return runAt(srv, args...) }
	dkey, code := run("-e", "LOCK", "deploy", "TTL", "60000", "DETACH")
	if code != 0 || !compatKey.MatchString(dkey) {
		t.Fatalf("redis-cli -e LOCK DETACH = %q, exit %d", dkey, code)
	}
	for _, ex := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"-e", "TRYLOCK", "deploy"}, "", 0},
		{[]string{"-e", "RENEW", "deploy", dkey}, "60000", 0},
		{[]string{"-e", "CHECK", "deploy", dkey}, `(59\d\d\d|60000)`, 0},
		{[]string{"-e", "UNLOCK", "deploy", dkey}, "1", 0},
		{[]string{"-e", "UNLOCK", "deploy", dkey}, "NOTHELD the key does not hold the lock", 1},
		{[]string{"UNLOCK", "deploy", dkey}, "NOTHELD the key does not hold the lock", 0}, // without -e: exit 0
		{[]string{"--no-auth-warning", "--user", "default", "--pass", "anything", "-e", "PING"}, "PONG", 0},
		// Password only: AUTH <password> is refused without --requirepass
		// (as by Redis); redis-cli warns and goes on unauthenticated.
		{[]string{"--no-auth-warning", "-a", "secret", "-e", "PING"}, regexp.QuoteMeta("AUTH failed: ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?") + "\nPONG", 0},
		{[]string{"-3", "-e", "TRYLOCK", "resp3"}, `\d+-[0-9a-f]{16}`, 0},
	} {
		got, code := run(ex.args...)
		if !regexp.MustCompile(`^(?:`+ex.want+`)$`).MatchString(got) || code != ex.code {
			t.Errorf("redis-cli %v = %q, exit %d; want %q, exit %d", ex.args, got, code, ex.want, ex.code)
		}
	}
	eventually(t, 5*time.Second, func() bool { return compatDBSize(t, admin) == 1 }, // cli-block, held by the session
		"the scripted redis-cli holds were not released")

	// With --requirepass: -a PASS (AUTH <password>) or --user default
	// --pass PASS. A wrong password: "AUTH failed", then NOAUTH, exit 1.
	for _, ex := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"--no-auth-warning", "-a", compatPass, "-e", "TRYLOCK", "cli-pass"}, `\d+-[0-9a-f]{16}`, 0},
		{[]string{"--no-auth-warning", "--user", "default", "--pass", compatPass, "-e", "PING"}, "PONG", 0},
		{[]string{"--no-auth-warning", "-a", "wrong", "-e", "TRYLOCK", "cli-pass"}, "AUTH failed: " + compatWrongPass + "\n" + `NOAUTH Authentication required\.`, 1},
	} {
		got, code := runAt(authSrv, ex.args...)
		if !regexp.MustCompile(`^(?:`+ex.want+`)$`).MatchString(got) || code != ex.code {
			t.Errorf("redis-cli %v (--requirepass) = %q, exit %d; want %q, exit %d", ex.args, got, code, ex.want, ex.code)
		}
	}
	return version
}

func compatRedisBenchmark(t *testing.T, srv, authSrv *server) string {
	bin := needTool(t, "redis-benchmark")
	version := compatCLIVersion(t, bin)
	admin := srv.client(t)
	for _, args := range [][]string{
		// Four connections race for one lock: one holds it, every other
		// TRYLOCK gets nil.
		{"-n", "2000", "-c", "4", "TRYLOCK", "bench:x"},
		// With --requirepass: -a sends AUTH <password> on every connection.
		{"-p", authSrv.Port(), "-a", compatPass, "-n", "200", "-c", "2", "TRYLOCK", "bench:auth"},
		// 1000 random names with a TTL: many holds at once.
		{"-n", "2000", "-c", "4", "-r", "1000", "TRYLOCK", "bench:__rand_int__", "TTL", "60000"},
		// Blocking LOCKs with a 1 ms WAIT on one lock.
		{"-n", "400", "-c", "4", "LOCK", "bench:w", "WAIT", "1"},
	} {
		i := slices.IndexFunc(args, func(a string) bool { return a == "TRYLOCK" || a == "LOCK" })
		cmd := exec.Command(bin, append([]string{"-h", "127.0.0.1", "-p", srv.Port(), "-q"}, args...)...)
		out, err := compatOutput(cmd, 30*time.Second)
		want := regexp.MustCompile(regexp.QuoteMeta(strings.Join(args[i:], " ")) + `: [\d.]+ requests per second`)
		if err != nil || !want.MatchString(out) || strings.Contains(out, "rror") {
			t.Errorf("redis-benchmark %v: %v\n%s", args, err, out)
		}
	}
	// Its connections are gone, and with them every hold.
	eventually(t, 5*time.Second, func() bool { return compatDBSize(t, admin) == 0 },
		"redis-benchmark's holds outlived its connections")
	return version
}

func compatRedisPy(t *testing.T, srv, authSrv *server) string {
	py := needPythonRedis(t)
	return runCompatDriver(t, srv, authSrv, nil, []compatCheck{
		{"ping", `True`},
		{"hello", `resp=2 lib-name=`}, // RESP2, no CLIENT SETINFO
		{"lock", `\d+-[0-9a-f]{16}`},
		{"trylock-busy", `None`},
		{"wait-timeout", `None`},
		{"check", `59\d\d\d|60000`},
		{"renew", `30000`},
		{"locks", `size=1 holders=1 fence-matches-key=True owner=None`},
		{"unlock", `1`},
		// The code stays in the message: str(e).split()[0] == "NOTHELD".
		{"notheld", `ResponseError: NOTHELD the key does not hold the lock`},
		// ... except ERR, which redis-py strips.
		{"err-prefix", `ResponseError: value is not an integer or out of range`},
		{"code", `ResponseError: SIZEMISMATCH lock 'py-size' has size 2, requested 3`},
		{"auth-user", `name=py-app lock=True unlock=1`},
		{"select-0", `True`},
		{"password-only", `rejected ResponseError: AUTH <password> called without any password configured for the default user\. .*`},
		// NOAUTH becomes AuthenticationError, without its code.
		{"requirepass", `password-only=True user-default=True wrong=\[ResponseError: ` + compatWrongPass + `\] none=\[AuthenticationError: Authentication required\.\]`},
		{"blocked", `granted=True holder-expired=True`},
		{"socket-timeout", `TimeoutError: Timeout reading from socket earlier-hold-released=True waiter-left=True`},
		{"pool", `held-by-a-pool-connection=True released-by-pool-disconnect=True`},
		{"handoff", `granted=True`},
		{"disconnect", `close-keeps-hold=(True|False) pool-disconnect-releases=True`},
	}, py, filepath.Join("testdata", "compat", "redis_py.py"))
}

// nodeRedisWant is what node-redis shows: v5 and later open with HELLO 3
// (AUTH inside it, as "default" when only a password is given) and raise
// SimpleError; v4 speaks RESP2, sends AUTH <password> and raises
// ErrorReply.
func nodeRedisWant(proto int) []compatCheck {
	errClass, shape, pwOnly := "SimpleError", "map", `accepted`
	if proto == 2 {
		errClass, shape, pwOnly = "ErrorReply", "flat", `rejected ErrorReply: ERR AUTH <password> called without any password configured .*`
	}
	return []compatCheck{
		{"ping", `PONG`},
		{"hello", `resp=` + strconv.Itoa(proto) + ` lib-name=node-redis`},
		{"lock", `\d+-[0-9a-f]{16}`},
		{"trylock-busy", `null`},
		{"wait-timeout", `null`},
		{"check", `59\d\d\d|60000`},
		{"renew", `30000`},
		{"locks", `shape=` + shape + ` size=1 holders=1 fence-matches-key=true owner=null`},
		{"unlock", `1`},
		{"notheld", errClass + `: NOTHELD the key does not hold the lock`},
		{"err-prefix", errClass + `: ERR value is not an integer or out of range`},
		{"auth-user", `name=nr-app lock=true unlock=1`},
		{"select-0", `OK`},
		{"password-only", pwOnly},
		{"requirepass", `password-only=PONG user-default=PONG wrong=\[` + errClass + `: ` + compatWrongPass + `\] none=\[` + errClass + `: NOAUTH Authentication required\.\]`},
		{"queued-behind", `order=lock,ping ping-waited=true duplicate-ping=PONG granted=true`},
		{"disconnect", `released=true`},
	}
}

func compatNodeRedis(t *testing.T, srv, authSrv *server, module string, want []compatCheck) string {
	node, modules := needNodeModule(t, module)
	return runCompatDriver(t, srv, authSrv, []string{"NODE_PATH=" + modules}, want,
		node, filepath.Join("testdata", "compat", "node_redis.cjs"), module)
}

// ioredisWant is what ioredis shows: v6 opens with HELLO 3 (AUTH inside
// it); v5 speaks RESP2 and, when AUTH <password> is refused because no
// password is configured, warns and goes on.
func ioredisWant(proto int) []compatCheck {
	errClass := "SimpleError"
	if proto == 2 {
		errClass = "ReplyError"
	}
	return []compatCheck{
		{"ping", `PONG`},
		{"hello", `resp=` + strconv.Itoa(proto) + ` lib-name=ioredis`},
		{"lock", `\d+-[0-9a-f]{16}`},
		{"trylock-busy", `null`},
		{"wait-timeout", `null`},
		{"check", `59\d\d\d|60000`},
		{"renew", `30000`},
		{"locks", `size=1 holders=1 fence-matches-key=true owner=null`},
		{"unlock", `1`},
		{"notheld", errClass + `: NOTHELD the key does not hold the lock`},
		{"err-prefix", errClass + `: ERR value is not an integer or out of range`},
		{"auth-user", `name=io-app lock=true unlock=1`},
		{"select-0", `OK`},
		{"password-only", `accepted`},
		{"requirepass", `password-only=PONG user-default=PONG wrong=\[` + errClass + `: ` + compatWrongPass + `\] none=\[` + errClass + `: NOAUTH Authentication required\.\]`},
		{"queued-behind", `order=lock,ping ping-waited=true duplicate-ping=PONG granted=true`},
		{"command-timeout", `Error: Command timed out late-grant-held-by-timed-out-connection=true ttl=true wait-below-timeout=null`},
		{"disconnect", `released=true`},
	}
}

func compatIORedis(t *testing.T, srv, authSrv *server, module string, want []compatCheck) string {
	node, modules := needNodeModule(t, module)
	return runCompatDriver(t, srv, authSrv, []string{"NODE_PATH=" + modules}, want,
		node, filepath.Join("testdata", "compat", "ioredis.cjs"), module)
}

// goRedisVersion is the go-redis version the module requires (go.mod),
// which is the one this test binary is built with.
func goRedisVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/redis/go-redis/v9 (v\S+)`).FindSubmatch(b)
	if m == nil || strings.Contains(string(b), "replace github.com/redis/go-redis") {
		t.Fatal("go.mod: no plain require of github.com/redis/go-redis/v9")
	}
	return string(m[1])
}

func compatGoRedis(t *testing.T, srv, authSrv *server) string {
	version := goRedisVersion(t)
	ctx := ctxFor(t, 30*time.Second)
	admin := srv.client(t)

	// Default options: HELLO 3 and CLIENT SETINFO; a pooled client whose
	// ReadTimeout is 5 s (3 s before v9.2x) and that retries a timed-out
	// command.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	if o := rdb.Options(); o.ReadTimeout != 5*time.Second || o.MaxRetries != 3 {
		t.Errorf("go-redis defaults ReadTimeout %v, MaxRetries %d; README says 5s and 3", o.ReadTimeout, o.MaxRetries)
	}
	info, err := rdb.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil || !strings.Contains(info, " resp=3 ") || !strings.Contains(info, " lib-name=go-redis") {
		t.Errorf("CLIENT INFO = %q, %v; want resp=3 and lib-name=go-redis", info, err)
	}
	// The typed CLIENT INFO and CLIENT LIST parse relock's lines.
	if ci, err := rdb.ClientInfo(ctx).Result(); err != nil || ci.ID <= 0 || !strings.HasPrefix(ci.LibName, "go-redis") || ci.Resp != 3 {
		t.Errorf("ClientInfo = %+v, %v", ci, err)
	}
	if cl, err := rdb.ClientList(ctx).Result(); err != nil || !strings.Contains(cl, "lib-name=go-redis") {
		t.Errorf("ClientList = %q, %v", cl, err)
	}

	// Round trips with Do: a nil reply is the error redis.Nil; an error
	// reply is a redis.Error whose message starts with its code.
	key, err := rdb.Do(ctx, "LOCK", "go", "TTL", 60000).Text()
	if err != nil || !compatKey.MatchString(key) {
		t.Fatalf("LOCK = %q, %v", key, err)
	}
	if err := rdb.Do(ctx, "TRYLOCK", "go").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("TRYLOCK of a held lock: %v; want redis.Nil", err)
	}
	if err := rdb.Do(ctx, "LOCK", "go", "WAIT", 20).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("LOCK WAIT 20 of a held lock: %v; want redis.Nil", err)
	}
	if ms, err := rdb.Do(ctx, "CHECK", "go", key).Int64(); err != nil || ms <= 59000 || ms > 60000 {
		t.Errorf("CHECK = %d, %v", ms, err)
	}
	if ms, err := rdb.Do(ctx, "RENEW", "go", key, "TTL", 30000).Int64(); err != nil || ms != 30000 {
		t.Errorf("RENEW = %d, %v", ms, err)
	}
	if raw, err := rdb.Do(ctx, "LOCKS").Slice(); err != nil || len(raw) != 1 {
		t.Errorf("LOCKS = %v, %v", raw, err)
	} else if m, ok := raw[0].(map[any]any); !ok || m["name"] != "go" || len(m["holders"].([]any)) != 1 {
		t.Errorf("LOCKS entry under RESP3 = %#v; want a map", raw[0])
	}
	if n, err := rdb.Do(ctx, "UNLOCK", "go", key).Int(); err != nil || n != 1 {
		t.Errorf("UNLOCK = %d, %v", n, err)
	}
	err = rdb.Do(ctx, "UNLOCK", "go", key).Err()
	var rerr redis.Error
	if !errors.As(err, &rerr) || err.Error() != "NOTHELD the key does not hold the lock" {
		t.Errorf("UNLOCK of a released key: %v; want redis.Error NOTHELD", err)
	}
	if err := rdb.Do(ctx, "LOCK", "go", "TTL", "x").Err(); err == nil || err.Error() != "ERR value is not an integer or out of range" {
		t.Errorf("LOCK TTL x: %v; want the ERR prefix kept", err)
	}

	// Username + password, client name, db 0; and a password alone, which
	// go-redis sends as HELLO 3 (or 2) AUTH default <password>: accepted.
	// With --requirepass the same options work with the right password;
	// a wrong one fails with WRONGPASS.
	for _, s := range []*server{srv, authSrv} {
		pass := "anything"
		if s == authSrv {
			pass = compatPass
		}
		for _, o := range []*redis.Options{
			{Username: "default", Password: pass, ClientName: "go-app", DB: 0},
			{Password: pass, ClientName: "go-app"},
			{Password: pass, ClientName: "go-app", Protocol: 2},
		} {
			o.Addr = s.Addr
			c := redis.NewClient(o)
			if got, err := c.ClientGetName(ctx).Result(); err != nil || got != "go-app" {
				t.Errorf("options %+v: CLIENT GETNAME = %q, %v", o, got, err)
			}
			c.Close()
		}
	}
	wrong := redis.NewClient(&redis.Options{Addr: authSrv.Addr, Password: "wrong", MaxRetries: -1})
	if err := wrong.Ping(ctx).Err(); err == nil || !regexp.MustCompile(compatWrongPass+`$`).MatchString(err.Error()) {
		t.Errorf("--requirepass, wrong password: %v; want WRONGPASS", err)
	}
	wrong.Close()

	// A dedicated connection (rdb.Conn()) holds the lock: the hold is bound
	// to it, whatever the pool does with its other connections.
	cn := rdb.Conn()
	id, err := cn.ClientID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	ckey, err := cn.Do(ctx, "LOCK", "go-conn", "TTL", 60000).Text()
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := admin.Do(ctx, "LOCKS", "MATCH", "go-conn").Slice(); err != nil || compatHolderID(raw) != id {
		t.Errorf("LOCKS go-conn = %v, %v; want held by the Conn's connection %d", raw, err, id)
	}
	if err := cn.Close(); err != nil { // back to the pool: the socket, and the hold, stay
		t.Fatal(err)
	}
	if ms, err := rdb.Do(ctx, "CHECK", "go-conn", ckey).Int64(); err != nil || ms <= 0 {
		t.Errorf("CHECK after Conn.Close = %d, %v; want still held (Conn.Close returns the connection to the pool)", ms, err)
	}
	rdb.Close() // closes the pool's sockets: the hold goes
	eventually(t, 5*time.Second, func() bool { return compatDBSize(t, admin) == 0 }, "go-conn outlived rdb.Close")

	// A wait longer than the default ReadTimeout (5 s) needs ReadTimeout -1
	// (or above the wait) and a dedicated connection.
	mustCompatLock(t, admin, "go-block", "TTL", 6000)
	long := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { long.Close() })
	lc := long.Conn()
	t.Cleanup(func() { lc.Close() })
	start := time.Now()
	if got, err := lc.Do(ctx, "LOCK", "go-block", "WAIT", 20000).Text(); err != nil || !compatKey.MatchString(got) {
		t.Errorf("LOCK waiting for a TTL of 6 s with ReadTimeout -1 = %q, %v", got, err)
	}
	if took := time.Since(start); took < 5*time.Second {
		t.Errorf("LOCK returned after %v; want more than go-redis's default ReadTimeout", took)
	}

	// What the default does instead, in small: a LOCK that outlasts
	// ReadTimeout fails with a timeout, and go-redis retries it on a new
	// connection (MaxRetries times); each timed-out connection is closed,
	// so the server drops its waiter.
	before := compatInfoInt(t, admin, "total_connections_received")
	short := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 150 * time.Millisecond, MaxRetries: 2, MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond})
	t.Cleanup(func() { short.Close() })
	err = short.Do(ctx, "LOCK", "go-block").Err()
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("LOCK past ReadTimeout: %v; want a timeout", err)
	}
	if got := compatInfoInt(t, admin, "total_connections_received") - before; got != 3 {
		t.Errorf("the timed-out LOCK used %d connections; want 3 (the first and MaxRetries=2 retries)", got)
	}
	eventually(t, 5*time.Second, func() bool { return compatWaiters(t, admin, "go-block") == 0 },
		"the timed-out LOCKs stayed in the queue")
	return version
}

// mustCompatLock takes a lock with c (LOCK name args...) and returns its key.
func mustCompatLock(t *testing.T, c *redis.Client, name string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key, err := c.Do(ctx, append([]any{"LOCK", name}, args...)...).Text()
	if err != nil {
		t.Fatalf("LOCK %s: %v", name, err)
	}
	return key
}

func compatDBSize(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.DBSize(ctx).Result()
	if err != nil {
		t.Fatalf("DBSIZE: %v", err)
	}
	return n
}

// compatInfoInt reads an integer field of INFO.
func compatInfoInt(t *testing.T, c *redis.Client, field string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx).Result()
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO %s: %q", field, v)
			}
			return n
		}
	}
	t.Fatalf("INFO has no %s", field)
	return 0
}

// compatEntry returns the fields of a LOCKS entry (a RESP3 map or a RESP2
// flat array).
func compatEntry(v any) map[string]any {
	m := map[string]any{}
	switch e := v.(type) {
	case map[any]any:
		for k, v := range e {
			m[k.(string)] = v
		}
	case []any:
		for i := 0; i+1 < len(e); i += 2 {
			m[e[i].(string)] = e[i+1]
		}
	}
	return m
}

// compatHolderID returns the client-id of the first holder of the first
// entry of a LOCKS reply, or 0.
func compatHolderID(raw []any) int64 {
	if len(raw) == 0 {
		return 0
	}
	holders, _ := compatEntry(raw[0])["holders"].([]any)
	if len(holders) == 0 {
		return 0
	}
	id, _ := compatEntry(holders[0])["client-id"].(int64)
	return id
}

// compatWaiters returns the number of waiters of the lock name.
func compatWaiters(t *testing.T, c *redis.Client, name string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := c.Do(ctx, "LOCKS", "MATCH", name).Slice()
	if err != nil {
		t.Fatalf("LOCKS: %v", err)
	}
	if len(raw) == 0 {
		return 0
	}
	w, _ := compatEntry(raw[0])["waiters"].([]any)
	return len(w)
}

// TestCompat_RedisPyClientInfo: redis-py's client_info() parses CLIENT
// INFO's fields as Redis writes them and needs every one it converts to an
// int (id, age, idle, db, sub, psub, multi, qbuf, qbuf-free, obl, argv-mem,
// oll, omem, tot-mem).
func TestCompat_RedisPyClientInfo(t *testing.T) {
	t.Parallel()
	py := needPythonRedis(t)
	srv := startServer(t)
	host, port, _ := net.SplitHostPort(srv.Addr)
	cmd := exec.Command(py, "-c", `
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), client_name="py-info")
info = r.client_info()
print(info["name"], info["db"], len(r.client_list()))
`, host, port)
	out, err := compatOutput(cmd, 20*time.Second)
	if err != nil || strings.TrimSpace(out) != "py-info 0 1" {
		t.Errorf("redis-py client_info(): %v\n%s", err, out)
	}
}
