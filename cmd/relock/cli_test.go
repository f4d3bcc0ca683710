package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/relock/relock/clientlib"
)

// exited is what the test parser's exit function panics with, so that
// --help and --version stop parsing as os.Exit would.
type exited int

// parsed is the outcome of parsing one command line as main does.
type parsed struct {
	root   *cli
	ctx    *kong.Context
	err    error
	exit   int // -1 when nothing called exit
	stdout string
	stderr string
}

// parseArgs parses args with relock's parser, writing to buffers and
// catching calls to exit.
func parseArgs(t *testing.T, args ...string) parsed {
	t.Helper()
	var stdout, stderr bytes.Buffer
	p := parsed{root: &cli{}, exit: -1}
	parser, err := newParser(p.root, readBuildVersion(), &stdout, &stderr, func(code int) { panic(exited(code)) })
	if err != nil {
		t.Fatalf("newParser: %v", err)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				code, ok := r.(exited)
				if !ok {
					panic(r)
				}
				p.exit = int(code)
			}
		}()
		p.ctx, p.err = parser.Parse(hoistClientFlags(args))
	}()
	p.stdout, p.stderr = stdout.String(), stderr.String()
	return p
}

func TestParse_VersionVariableDoesNotTriggerVersion(t *testing.T) {
	t.Setenv("RELOCK_VERSION", "1")
	for _, args := range [][]string{{"server"}, {"locks"}, {"unlock", "--yes", "x", "k"}} {
		p := parseArgs(t, args...)
		if p.exit != -1 || p.err != nil || p.stdout != "" {
			t.Errorf("RELOCK_VERSION=1 relock %v: exit %d, err %v, stdout %q; want the command parsed", args, p.exit, p.err, p.stdout)
			continue
		}
		if got := p.ctx.Selected().Name; got != args[0] {
			t.Errorf("RELOCK_VERSION=1 relock %v selected %q", args, got)
		}
	}
}

func TestParse_VersionFlagPrintsBuildVersion(t *testing.T) {
	p := parseArgs(t, "--version")
	if p.exit != 0 {
		t.Fatalf("relock --version: exit %d, err %v", p.exit, p.err)
	}
	if !strings.HasPrefix(p.stdout, "relock ") || !strings.Contains(p.stdout, runtime.Version()) {
		t.Errorf("relock --version printed %q, want relock VERSION (… %s …)", p.stdout, runtime.Version())
	}
}

func TestBuildVersion(t *testing.T) {
	tests := []struct {
		v            buildVersion
		wantString   string
		wantProtocol string
	}{
		{buildVersion{Version: "v0.1.0", Commit: "0123456789abcdef0123", Go: "go1.26.8"},
			"relock v0.1.0 (commit 0123456789ab, go1.26.8, " + runtime.GOOS + "/" + runtime.GOARCH + ")", "0.1.0"},
		{buildVersion{Version: "devel", Commit: "0123456789abcdef0123", Modified: true, Go: "go1.26.8"},
			"relock devel (commit 0123456789ab, modified, go1.26.8, " + runtime.GOOS + "/" + runtime.GOARCH + ")", "0.0.0-devel"},
		{buildVersion{Version: "v0.2.0-rc.1", Go: "go1.26.8"},
			"relock v0.2.0-rc.1 (go1.26.8, " + runtime.GOOS + "/" + runtime.GOARCH + ")", "0.2.0-rc.1"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.wantString {
			t.Errorf("String() = %q, want %q", got, tt.wantString)
		}
		if got := tt.v.Protocol(); got != tt.wantProtocol {
			t.Errorf("Protocol() = %q, want %q", got, tt.wantProtocol)
		}
	}
}

func TestReadBuildVersion_LinkerOverride(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = ""
	if got := readBuildVersion(); got.Version == "" || got.Go != runtime.Version() {
		t.Errorf("without -X: %+v, want a version and Go %s", got, runtime.Version())
	}
	version = "v1.2.3"
	if got := readBuildVersion().Version; got != "v1.2.3" {
		t.Errorf("with -X main.version=v1.2.3: version %q", got)
	}
}

func TestReportUsageError_OneLineAndHintOnStderr(t *testing.T) {
	tests := []struct {
		args     []string
		wantErr  string
		wantHelp string
	}{
		{[]string{"server", "--bogus"}, "relock: unknown flag --bogus", "relock server"},
		{[]string{"server", "--io", "threads"}, "relock: --io must be one of", "relock server"},
		{[]string{"run", "--ttl", "soon", "x", "--", "true"}, "relock: --ttl: ", "relock run"},
		{[]string{"cluster"}, "relock: expected one of", "relock cluster"},
		{[]string{"frobnicate"}, "relock: unexpected argument frobnicate", "relock"},
		{[]string{"completion", "tcsh"}, "relock: <shell> must be one of", "relock completion"},
	}
	for _, tt := range tests {
		p := parseArgs(t, tt.args...)
		if p.err == nil {
			t.Errorf("relock %v: no error", tt.args)
			continue
		}
		var stderr bytes.Buffer
		code := reportUsageError(&stderr, p.err)
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != 2 || len(lines) != 2 || p.stdout != "" {
			t.Errorf("relock %v: exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout, two lines on stderr", tt.args, code, p.stdout, stderr.String())
			continue
		}
		if !strings.HasPrefix(lines[0], tt.wantErr) {
			t.Errorf("relock %v: error line %q, want it to start with %q", tt.args, lines[0], tt.wantErr)
		}
		if want := "Run '" + tt.wantHelp + " --help' for usage."; lines[1] != want {
			t.Errorf("relock %v: hint %q, want %q", tt.args, lines[1], want)
		}
	}
}

func TestReportRunError_PrefixedOnce(t *testing.T) {
	notHeld := &clientlib.ServerError{Op: "UNLOCK", Name: "victim", Reply: "NOTHELD the key does not hold the lock"}
	tests := []struct {
		err      error
		want     string
		wantCode int
	}{
		{notHeld, "relock: UNLOCK 'victim': NOTHELD the key does not hold the lock\n", 1},
		{&clientlib.LostError{Name: "jobs", Cause: clientlib.ErrConnClosed}, "relock: lock 'jobs' lost: lock connection closed\n", 1},
		{&exitError{69, fmt.Errorf("run: cannot take lock %q: %w", "jobs", clientlib.ErrLimit)}, "relock: run: cannot take lock \"jobs\": server limit reached\n", 69},
		{&exitError{code: 3}, "", 3},
		{nil, "", 0},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		code := reportRunError(&stderr, tt.err)
		if stderr.String() != tt.want || code != tt.wantCode {
			t.Errorf("reportRunError(%v) wrote %q, exit %d; want %q, exit %d", tt.err, stderr.String(), code, tt.want, tt.wantCode)
		}
		if strings.Count(stderr.String(), "relock:") > 1 {
			t.Errorf("prefixed twice: %q", stderr.String())
		}
	}
}

// TestEnvars_ServerAndToolsShareNoVariable: no variable means one thing to
// the server and another to a tool, or one thing to two tools.
func TestEnvars_ServerAndToolsShareNoVariable(t *testing.T) {
	parser, err := newParser(&cli{}, readBuildVersion(), &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	// The connection flags are the same in every tool; anything else is
	// read by one command only.
	shared := map[string]bool{"RELOCK_ADDR": true, "RELOCK_USER": true, "RELOCK_PASSWORD": true,
		"RELOCK_CLIENT_TLS": true, "RELOCK_CLIENT_TLS_CA": true, "RELOCK_CLIENT_TLS_CERT": true, "RELOCK_CLIENT_TLS_KEY": true}
	owner := map[string]string{} // variable → command
	var walk func(n *kong.Node, cmd string)
	walk = func(n *kong.Node, cmd string) {
		for _, f := range n.Flags {
			for _, env := range f.Envs {
				if prev, ok := owner[env]; ok && prev != cmd && !(shared[env] && prev != "server" && cmd != "server") {
					t.Errorf("$%s is read by %s and by %s (--%s)", env, prev, cmd, f.Name)
				}
				owner[env] = cmd
			}
		}
		for _, c := range n.Children {
			walk(c, cmd)
		}
	}
	for _, f := range parser.Model.Flags {
		if len(f.Envs) > 0 {
			t.Errorf("root flag --%s reads $%v", f.Name, f.Envs)
		}
	}
	for _, c := range parser.Model.Children {
		walk(c, c.Name)
	}
	for env := range shared {
		if owner[env] == "" || owner[env] == "server" {
			t.Errorf("$%s: owner %q, want the tools", env, owner[env])
		}
	}
}

func TestEnvars_ServerTLSAndTTLDoNotReachTools(t *testing.T) {
	t.Setenv("RELOCK_TLS_CERT", "/etc/relock/server.pem")
	t.Setenv("RELOCK_TLS_KEY", "/etc/relock/server.key")
	t.Setenv("RELOCK_TTL", "1ms")
	t.Setenv("RELOCK_RUN_TTL", "7s")
	t.Setenv("RELOCK_BENCH_TTL", "3s")
	t.Setenv("RELOCK_CLIENT_TLS_CA", "/etc/relock/ca.pem")

	p := parseArgs(t, "server")
	if p.err != nil {
		t.Fatal(p.err)
	}
	if got := p.root.Server.TLSCert; got != "/etc/relock/server.pem" {
		t.Errorf("server --tls-cert = %q, want $RELOCK_TLS_CERT", got)
	}
	for _, args := range [][]string{{"locks"}, {"run", "x", "--", "true"}, {"bench"}, {"cluster", "status"}, {"unlock", "--yes", "x", "k"}} {
		p := parseArgs(t, args...)
		if p.err != nil {
			t.Fatalf("relock %v: %v", args, p.err)
		}
		var cf clientFlags
		switch args[0] {
		case "locks":
			cf = p.root.Locks.clientFlags
		case "run":
			cf = p.root.Run.clientFlags
		case "bench":
			cf = p.root.Bench.clientFlags
		case "cluster":
			cf = p.root.Cluster.Status.clientFlags
		case "unlock":
			cf = p.root.Unlock.clientFlags
		}
		if cf.TLSCert != "" || cf.TLSKey != "" {
			t.Errorf("relock %v took the server's $RELOCK_TLS_CERT/KEY as its client certificate: %q %q", args, cf.TLSCert, cf.TLSKey)
		}
		if cf.TLSCA != "/etc/relock/ca.pem" {
			t.Errorf("relock %v --tls-ca = %q, want $RELOCK_CLIENT_TLS_CA", args, cf.TLSCA)
		}
	}
	p = parseArgs(t, "run", "x", "--", "true")
	if p.root.Run.TTL != 7*time.Second {
		t.Errorf("run --ttl = %v, want $RELOCK_RUN_TTL 7s", p.root.Run.TTL)
	}
	p = parseArgs(t, "bench")
	if p.root.Bench.TTL != 3*time.Second {
		t.Errorf("bench --ttl = %v, want $RELOCK_BENCH_TTL 3s", p.root.Bench.TTL)
	}
}

// TestHelp_ShowsEveryDefault: every flag with a default shows it in
// --help, as its placeholder (--listen="127.0.0.1:6380") or as
// "(default: …)" when it has a placeholder of its own (--addr=ADDR).
func TestHelp_ShowsEveryDefault(t *testing.T) {
	parser, err := newParser(&cli{}, readBuildVersion(), &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		if n.Type == kong.CommandNode && len(n.Children) == 0 {
			path := strings.Fields(n.Path())
			p := parseArgs(t, append(path, "--help")...)
			if p.exit != 0 {
				t.Fatalf("relock %v --help: exit %d, err %v", path, p.exit, p.err)
			}
			help := strings.Join(strings.Fields(p.stdout), " ")
			for _, f := range n.Flags {
				if f.Default == "" || f.IsBool() {
					continue
				}
				shown := []string{"(default: " + f.Default + ")", "--" + f.Name + "=" + f.Default + " ", fmt.Sprintf("--%s=%q", f.Name, f.Default)}
				if !strings.Contains(help, shown[0]) && !strings.Contains(help, shown[1]) && !strings.Contains(help, shown[2]) {
					t.Errorf("relock %v --help does not show the default %q of --%s", path, f.Default, f.Name)
				}
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(parser.Model.Node)

	p := parseArgs(t, "run", "--help")
	help := strings.Join(strings.Fields(p.stdout), " ")
	for _, want := range []string{"(default: 127.0.0.1:6380) ($RELOCK_ADDR)", "(default: 1) ($RELOCK_RUN_CONFLICT_EXIT_CODE)", "(default: 5s) ($RELOCK_RUN_KILL_GRACE)"} {
		if !strings.Contains(help, want) {
			t.Errorf("relock run --help lacks %q", want)
		}
	}
}

func TestParseUsersFile(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // "": parses
	}{
		{"valid", "users:\n  - name: alice\n    password_hash: $2y$10$x\n    locks: [\"jobs:*\"]\n    admin: false\n", ""},
		{"empty", "", ""},
		{"misspelled user field", "users:\n  - name: alice\n    passwrd_hash: $2y$10$x\n    locks: [\"x\"]\n",
			`line 3: unknown field "passwrd_hash" in a user (known: name, password_hash, locks, admin)`},
		{"misspelled top level", "user:\n  - name: alice\n", `line 1: unknown field "user" at the top level (known: users)`},
		{"wrong type", "users:\n  - name: alice\n    admin: maybe\n", "line 3: cannot unmarshal !!str `maybe` into bool"},
		{"user not a mapping", "users:\n  - alice\n", "line 2: a user is a mapping (name:, password_hash:, locks:, admin:)"},
		{"users not a list", "users: alice\n", "line 1: users: want a list of users"},
	}
	for _, tt := range tests {
		_, err := parseUsersFile([]byte(tt.yaml))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "struct") {
			t.Errorf("%s: error names a Go type: %v", tt.name, err)
		}
	}
}

func TestLoadUsers_BadHashNamesEveryBcryptPrefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, []byte("users:\n  - name: alice\n    password_hash: hunter2\n    admin: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := (&securityFlags{UsersFile: path}).loadUsers()
	if err == nil || !strings.Contains(err.Error(), "$2y$") || !strings.Contains(err.Error(), "$2a$") {
		t.Errorf("loadUsers: %v, want an error naming every bcrypt prefix accepted ($2a$, $2b$, $2y$)", err)
	}
}

func TestWriteLocksJSON(t *testing.T) {
	locks := []clientlib.LockInfo{
		{Name: "jobs:build", Size: 1,
			Holders: []clientlib.HolderInfo{{Fence: 17, Owner: "ci", ClientID: 3, ClientName: "runner", ClientAddr: "127.0.0.1:5000", TTL: 59400 * time.Millisecond, Age: 600 * time.Millisecond, Count: 2}},
			Waiters: []clientlib.WaiterInfo{{ClientID: 4, Owner: "deployer", Waited: 1500 * time.Millisecond}}},
		{Name: "jobs:token", Size: 2, Delayed: 1,
			Holders: []clientlib.HolderInfo{{Fence: 18, ClientID: -1, TTL: -1, Detached: true, Count: 1}}},
	}
	var b bytes.Buffer
	if err := writeLocksJSON(&b, locks, true); err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"jobs:build","size":1,"delayed":0,"holders":[{"fence":17,"owner":"ci","client_id":3,"client_name":"runner","client_addr":"127.0.0.1:5000","detached":false,"ttl_ms":59400,"age_ms":600,"count":2}],"waiters":[{"client_id":4,"owner":"deployer","client_name":"","client_addr":"","waited_ms":1500}]},` +
		`{"name":"jobs:token","size":2,"delayed":1,"holders":[{"fence":18,"owner":"","client_id":-1,"client_name":"","client_addr":"","detached":true,"ttl_ms":-1,"age_ms":0,"count":1}],"waiters":[]}]` + "\n"
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	b.Reset()
	if err := writeLocksJSON(&b, nil, false); err != nil || b.String() != "[]\n" {
		t.Errorf("no locks: %q, %v; want []", b.String(), err)
	}
}

func TestCompletionScript(t *testing.T) {
	bin := "/opt/it's here/relock"
	quoted := `'/opt/it'\''s here/relock'`
	for _, shell := range []string{"bash", "zsh", "fish"} {
		got := completionScript(shell, bin)
		if !strings.Contains(got, quoted) || !strings.Contains(got, "relock") {
			t.Errorf("%s script does not call %s: %q", shell, quoted, got)
		}
	}
	if got := completionScript("bash", "/usr/bin/relock"); got != "complete -o default -C '/usr/bin/relock' relock\n" {
		t.Errorf("bash: %q", got)
	}
}

// TestCompletion_ModelBuilds: kongplete can turn the whole command line
// into completions (a flag's predictor tag names a predictor it has).
func TestCompletion_ModelBuilds(t *testing.T) {
	parser, err := newParser(&cli{}, readBuildVersion(), &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := completionModel(parser); err != nil {
		t.Fatal(err)
	}
}

func TestParse_LockDelayFromFlagVariableAndConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relock.yaml")
	if err := os.WriteFile(path, []byte("lock-delay: 4s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  string
		args []string
		want time.Duration
	}{
		{"", []string{"server"}, 0},
		{"", []string{"server", "--lock-delay", "2s"}, 2 * time.Second},
		{"3s", []string{"server"}, 3 * time.Second},
		{"", []string{"server", "--config", path}, 4 * time.Second},
		{"3s", []string{"server", "--config", path}, 3 * time.Second}, // the environment wins over the file
	}
	t.Setenv("RELOCK_LOCK_DELAY", "") // restored when the test ends
	for _, tt := range tests {
		if tt.env != "" {
			os.Setenv("RELOCK_LOCK_DELAY", tt.env)
		} else {
			os.Unsetenv("RELOCK_LOCK_DELAY")
		}
		p := parseArgs(t, tt.args...)
		if p.err != nil || p.root.Server.LockDelay != tt.want {
			t.Errorf("RELOCK_LOCK_DELAY=%q relock %v: --lock-delay %v, err %v; want %v", tt.env, tt.args, p.root.Server.LockDelay, p.err, tt.want)
		}
	}
}

func TestServer_LockDelayOverTheMaximumRefused(t *testing.T) {
	for _, d := range []time.Duration{61 * time.Second, -time.Second} {
		err := (&serverCmd{LockDelay: d}).Run()
		if err == nil || !strings.Contains(err.Error(), "--lock-delay must be between 0 and 60s") {
			t.Errorf("--lock-delay %v: %v; want refused", d, err)
		}
	}
}

func TestParse_RunLockDelayOnlyWhenGiven(t *testing.T) {
	p := parseArgs(t, "run", "x", "--", "true")
	if p.err != nil || p.root.Run.LockDelay != nil {
		t.Fatalf("relock run without --lock-delay: %v, %v; want none (the server's default)", p.root.Run.LockDelay, p.err)
	}
	p = parseArgs(t, "run", "--lock-delay", "0", "x", "--", "true")
	if p.err != nil || p.root.Run.LockDelay == nil || *p.root.Run.LockDelay != 0 {
		t.Fatalf("relock run --lock-delay 0: %v, %v; want 0 (none, whatever the server's default)", p.root.Run.LockDelay, p.err)
	}
}

func TestParse_WatchTakesClientFlagsBeforeItsName(t *testing.T) {
	p := parseArgs(t, "--addr", "127.0.0.1:7000", "watch", "-o", "json", "jobs:*")
	if p.err != nil || p.ctx.Selected().Name != "watch" {
		t.Fatalf("relock --addr X watch: %v", p.err)
	}
	if w := p.root.Watch; w.Addr != "127.0.0.1:7000" || w.Output != "json" || w.Pattern != "jobs:*" {
		t.Errorf("parsed %+v", w)
	}
	if p := parseArgs(t, "watch"); p.err != nil || p.root.Watch.Pattern != "*" || p.root.Watch.Output != "text" {
		t.Errorf("relock watch: pattern %q, output %q, %v; want * and text", p.root.Watch.Pattern, p.root.Watch.Output, p.err)
	}
}
