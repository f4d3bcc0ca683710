package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The relock command line as a user meets it: what it prints, where, and
// its exit status.

// relockCLI runs the relock binary to completion with extra environment
// variables ("KEY=value") and returns its stdout, stderr and exit status.
// RELOCK_* variables of the test's own environment are not passed on.
func relockCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(relockBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RELOCK_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("relock %v did not exit within 20s", args)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// Under systemd or in a container RELOCK_VERSION may well be set (a
// deployment's own bookkeeping): the server must start, not print its
// version and exit 0.
func TestCLI_VersionVariableDoesNotStopTheServer(t *testing.T) {
	srv := startServerEnv(t, []string{"RELOCK_VERSION=1.2.3"})
	stdout, stderr, code := relockCLI(t, []string{"RELOCK_VERSION=1"}, "locks", "--addr", srv.Addr, "-o", "json")
	if code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Fatalf("RELOCK_VERSION=1 relock locks: exit %d, stdout %q, stderr %q; want []", code, stdout, stderr)
	}
}

func TestCLI_VersionFlagNamesBuild(t *testing.T) {
	stdout, stderr, code := relockCLI(t, nil, "--version")
	if code != 0 || stderr != "" {
		t.Fatalf("relock --version: exit %d, stderr %q", code, stderr)
	}
	// Built by the same toolchain as this test.
	if !strings.HasPrefix(stdout, "relock ") || !strings.Contains(stdout, runtime.Version()) || strings.Count(stdout, "\n") != 1 {
		t.Errorf("relock --version printed %q; want one line: relock VERSION (…, %s, …)", stdout, runtime.Version())
	}
	// INFO and HELLO report the same version (without its "v"; a
	// development build is 0.0.0-devel).
	v := strings.Fields(stdout)[1]
	want := strings.TrimPrefix(v, "v")
	if v == "devel" {
		want = "0.0.0-devel"
	}
	srv := startServer(t)
	info, err := srv.client(t).Info(ctxFor(t, 5*time.Second), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "relock_version:"+want+"\r\n") {
		t.Errorf("INFO server does not say relock_version:%s (relock --version: %q):\n%s", want, stdout, info)
	}
}

func TestCLI_BadFlagIsOneLineAndAHintOnStderr(t *testing.T) {
	tests := []struct {
		args     []string
		wantErr  string
		wantHint string
	}{
		{[]string{"server", "--bogus"}, "relock: unknown flag --bogus", "Run 'relock server --help' for usage."},
		{[]string{"locks", "--watch", "often"}, "relock: --watch: ", "Run 'relock locks --help' for usage."},
		{[]string{"--nope"}, "relock: unknown flag --nope", "Run 'relock --help' for usage."},
	}
	for _, tt := range tests {
		stdout, stderr, code := relockCLI(t, nil, tt.args...)
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if code != 2 || stdout != "" || len(lines) != 2 {
			t.Errorf("relock %v: exit %d, %d bytes on stdout, stderr %q; want exit 2, nothing on stdout, 2 lines on stderr", tt.args, code, len(stdout), stderr)
			continue
		}
		if !strings.HasPrefix(lines[0], tt.wantErr) || lines[1] != tt.wantHint {
			t.Errorf("relock %v: stderr %q, want %q… then %q", tt.args, stderr, tt.wantErr, tt.wantHint)
		}
	}
}

func TestCLI_ErrorsArePrefixedOnce(t *testing.T) {
	srv := startServer(t)
	_, stderr, code := relockCLI(t, nil, "unlock", "--addr", srv.Addr, "victim", "no-such-key")
	if code != 1 || !strings.HasPrefix(stderr, "relock: UNLOCK 'victim': NOTHELD") || strings.Count(stderr, "relock:") != 1 {
		t.Errorf("relock unlock victim no-such-key: exit %d, stderr %q; want exit 1 and relock: UNLOCK 'victim': NOTHELD …, prefixed once", code, stderr)
	}
}

// The server's variables (a unit's Environment=, a container's env) do
// not configure the tools run beside it, and the tools' own do.
func TestCLI_ServerVariablesDoNotReachTools(t *testing.T) {
	srv := startServer(t)
	serverEnv := []string{"RELOCK_TLS_CERT=/nonexistent/server.pem", "RELOCK_TLS_KEY=/nonexistent/server.key", "RELOCK_TTL=1ns", "RELOCK_LISTEN=127.0.0.1:1"}
	stdout, stderr, code := relockCLI(t, serverEnv, "locks", "--addr", srv.Addr, "-o", "json")
	if code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Errorf("relock locks with the server's TLS variables set: exit %d, stderr %q; want a plain connection", code, stderr)
	}
	stdout, stderr, code = relockCLI(t, serverEnv, "run", "--addr", srv.Addr, "-n", "env-test", "--", "true")
	if code != 0 {
		t.Errorf("relock run with RELOCK_TTL=1ns set for the server: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// The tools' own names.
	_, stderr, code = relockCLI(t, []string{"RELOCK_ADDR=" + srv.Addr, "RELOCK_CLIENT_TLS_CERT=/nonexistent/client.pem", "RELOCK_CLIENT_TLS_KEY=/nonexistent/client.key"}, "locks")
	if code == 0 || !strings.Contains(stderr, "/nonexistent/client.pem") {
		t.Errorf("relock locks with RELOCK_CLIENT_TLS_CERT: exit %d, stderr %q; want the client certificate read (and missing)", code, stderr)
	}
	_, stderr, code = relockCLI(t, []string{"RELOCK_ADDR=" + srv.Addr, "RELOCK_RUN_TTL=-1s"}, "run", "x", "--", "true")
	if code != 64 || !strings.Contains(stderr, "--ttl must be positive") {
		t.Errorf("relock run with RELOCK_RUN_TTL=-1s: exit %d, stderr %q; want 64 and --ttl refused", code, stderr)
	}
}

func TestCLI_LocksJSON(t *testing.T) {
	srv := startServer(t)
	holder := srv.client(t)
	ctx := ctxFor(t, 10*time.Second)
	if err := holder.Do(ctx, "LOCK", "jobs:build", "TTL", 60000, "OWNER", "ci-7").Err(); err != nil {
		t.Fatal(err)
	}
	waiter := srv.client(t)
	go waiter.Do(ctx, "LOCK", "jobs:build", "OWNER", "deployer", "WAIT", 10000)
	eventually(t, 5*time.Second, func() bool {
		out, _, _ := relockCLI(t, nil, "locks", "--addr", srv.Addr, "-o", "json")
		return strings.Contains(out, "deployer")
	}, "the waiter is not listed")

	stdout, stderr, code := relockCLI(t, nil, "locks", "--addr", srv.Addr, "-o", "json", "jobs:*")
	if code != 0 {
		t.Fatalf("relock locks -o json: exit %d, stderr %q", code, stderr)
	}
	var locks []struct {
		Name    string `json:"name"`
		Size    int    `json:"size"`
		Holders []struct {
			Fence    uint64 `json:"fence"`
			Owner    string `json:"owner"`
			ClientID int64  `json:"client_id"`
			TTLms    int64  `json:"ttl_ms"`
			Count    int    `json:"count"`
		} `json:"holders"`
		Waiters []struct {
			Owner    string `json:"owner"`
			WaitedMs int64  `json:"waited_ms"`
		} `json:"waiters"`
	}
	if err := json.Unmarshal([]byte(stdout), &locks); err != nil {
		t.Fatalf("relock locks -o json printed %q: %v", stdout, err)
	}
	if len(locks) != 1 || locks[0].Name != "jobs:build" || locks[0].Size != 1 || len(locks[0].Holders) != 1 || len(locks[0].Waiters) != 1 {
		t.Fatalf("got %+v, want jobs:build with one holder and one waiter", locks)
	}
	h := locks[0].Holders[0]
	if h.Owner != "ci-7" || h.Fence == 0 || h.ClientID <= 0 || h.TTLms <= 0 || h.TTLms > 60000 || h.Count != 1 {
		t.Errorf("holder %+v, want owner ci-7 with a fence, a client and a TTL ≤ 60 s", h)
	}
	if w := locks[0].Waiters[0]; w.Owner != "deployer" || w.WaitedMs < 0 {
		t.Errorf("waiter %+v, want deployer", w)
	}
	if !strings.Contains(stdout, "\n  ") {
		t.Errorf("one run of -o json is indented for reading: %q", stdout)
	}
	if strings.Contains(stdout, "key") {
		t.Errorf("-o json shows a key: %q", stdout)
	}
}

func TestCLI_Completion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		stdout, stderr, code := relockCLI(t, nil, "completion", shell)
		if code != 0 || !strings.Contains(stdout, relockBin) || !strings.Contains(stdout, "relock") {
			t.Errorf("relock completion %s: exit %d, stdout %q, stderr %q; want a script calling %s", shell, code, stdout, stderr, relockBin)
		}
	}
	if bash := findShell("bash"); bash != "" {
		// The script is valid bash and registers the completion.
		script, _, _ := relockCLI(t, nil, "completion", "bash")
		out, err := exec.Command(bash, "--norc", "-c", script+"\ncomplete -p relock").CombinedOutput()
		if err != nil || !strings.Contains(string(out), relockBin) {
			t.Errorf("bash: %v\n%s", err, out)
		}
	}

	// What the shell gets back for a command line (COMP_LINE).
	tests := []struct {
		line string
		want []string
	}{
		{"relock ru", []string{"run"}},
		{"relock lo", []string{"locks"}},
		{"relock run --kill", []string{"--kill-grace"}},
		{"relock server --io ", []string{"auto", "goroutine"}},
		{"relock locks -o ", []string{"json", "table"}},
		{"relock completion ", []string{"bash", "fish", "zsh"}},
		{"relock cluster ", []string{"add", "remove", "status"}},
	}
	for _, tt := range tests {
		stdout, stderr, code := relockCLI(t, []string{"COMP_LINE=" + tt.line}, nil...)
		got := strings.Fields(stdout)
		if code != 0 || !sameSet(got, tt.want) {
			t.Errorf("COMP_LINE=%q: exit %d, completions %q, stderr %q; want %q", tt.line, code, got, stderr, tt.want)
		}
	}
}

func TestCLI_UsersFileTypoNamesFieldAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	users := "users:\n  - name: alice\n    pasword_hash: \"$2y$10$abcdefghijklmnopqrstuu\"\n    locks: [\"jobs:*\"]\n"
	if err := os.WriteFile(path, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := relockCLI(t, nil, "server", "--listen", "127.0.0.1:0", "--users-file", path, "--log-format", "json")
	var last string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		last = l
	}
	want := "relock: users file " + path + `: line 3: unknown field "pasword_hash" in a user (known: name, password_hash, locks, admin)`
	if code != 1 || last != want {
		t.Errorf("relock server with a misspelled field: exit %d, last line %q; want exit 1 and %q", code, last, want)
	}
}

// findShell returns the path of a shell, or "" when it is not installed.
func findShell(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestCLI_WatchJSON: `relock watch -o json` prints one JSON object per
// event of a lock another client takes and releases — acquired, released
// (unlock), free — and exits 0 on SIGINT.
func TestCLI_WatchJSON(t *testing.T) {
	srv := startServer(t)
	admin := srv.client(t)
	cmd := exec.Command(relockBin, "watch", "--addr", srv.Addr, "-o", "json", "jobs:*")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	p := startEventLines(t, cmd)
	// Subscribed once CLIENT LIST shows a connection with psub=1.
	eventually(t, 10*time.Second, func() bool {
		list, err := admin.ClientList(ctxFor(t, 5*time.Second)).Result()
		return err == nil && strings.Contains(list, " psub=1 ")
	}, "relock watch did not subscribe")
	fence := lockAndUnlock(t, srv, "jobs:cli")
	for _, want := range []string{"acquired " + fence, "released " + fence + " unlock", "free"} {
		line := p.next(t, 10*time.Second)
		var ev struct {
			Time   string      `json:"time"`
			Lock   string      `json:"lock"`
			Event  string      `json:"event"`
			Fence  json.Number `json:"fence"`
			Reason string      `json:"reason"`
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("relock watch printed %q: %v", line, err)
		}
		got := strings.Join(strings.Fields(ev.Event+" "+ev.Fence.String()+" "+ev.Reason), " ")
		if _, err := time.Parse(time.RFC3339Nano, ev.Time); err != nil || ev.Lock != "jobs:cli" || got != want {
			t.Fatalf("relock watch printed %s; want lock jobs:cli, %q and an RFC 3339 time", line, want)
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	p.exit(t)
}

// TestCLI_RunLockDelay: `relock run --lock-delay` asks for LOCKDELAY:
// when relock dies holding the lock (here its own command kills it), the
// lock stays taken for the delay; with --lock-delay 0 it does not, even
// on a server whose --lock-delay is a minute.
func TestCLI_RunLockDelay(t *testing.T) {
	srv := startServer(t, "--lock-delay", "1m")
	admin := srv.client(t)
	for _, tt := range []struct {
		delay   string
		delayed int64
	}{{"30s", 1}, {"0", 0}} {
		name := "run-delay-" + tt.delay
		// The command kills relock (its parent) with SIGKILL: the hold's
		// connection drops, an involuntary release.
		_, stderr, code := relockCLI(t, nil, "run", "--addr", srv.Addr, "--lock-delay", tt.delay, name, "--", "sh", "-c", "kill -9 $PPID")
		if code != 128+9 && code != -1 {
			t.Fatalf("relock run --lock-delay %s: exit %d, stderr %q; want killed", tt.delay, code, stderr)
		}
		eventually(t, 5*time.Second, func() bool {
			l, ok := lockOf(t, admin, name)
			if tt.delayed == 0 {
				return !ok
			}
			return ok && len(l.Holders) == 0 && l.Delayed == tt.delayed
		}, "--lock-delay %s: want %d slots in lock-delay", tt.delay, tt.delayed)
	}
	_, stderr, code := relockCLI(t, nil, "run", "--addr", srv.Addr, "--lock-delay", "61s", "x", "--", "true")
	if code != 64 || !strings.Contains(stderr, "--lock-delay must be between 0 and 60s") {
		t.Errorf("relock run --lock-delay 61s: exit %d, stderr %q; want 64", code, stderr)
	}
	_, stderr, code = relockCLI(t, nil, "server", "--listen", "127.0.0.1:0", "--lock-delay", "61s")
	if code != 1 || !strings.Contains(stderr, "--lock-delay must be between 0 and 60s") {
		t.Errorf("relock server --lock-delay 61s: exit %d, stderr %q; want 1", code, stderr)
	}
}

// relock locks lists every lock when the server cuts a page short at its
// 1 MiB reply bound (1,500 locks of ~1 KB names: the first page of 1,000
// passes it): it pages on until an empty page.
func TestCLI_LocksPagesOnPastAShortPage(t *testing.T) {
	srv := startServer(t)
	c := srv.client(t)
	ctx := ctxFor(t, 30*time.Second)
	long := strings.Repeat("n", 1000)
	const n = 1500
	pipe := c.Pipeline()
	for i := range n {
		pipe.Do(ctx, "LOCK", fmt.Sprintf("short:%04d:%s", i, long), "TTL", 60000, "DETACH")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := relockCLI(t, nil, "locks", "--addr", srv.Addr, "-o", "json", "short:*")
	if code != 0 {
		t.Fatalf("relock locks: exit %d, stderr %q", code, stderr)
	}
	var locks []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(stdout), &locks); err != nil {
		t.Fatalf("relock locks -o json: %v", err)
	}
	if len(locks) != n {
		t.Fatalf("relock locks listed %d locks; want %d", len(locks), n)
	}
}
