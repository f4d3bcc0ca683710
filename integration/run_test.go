package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
)

// The tests of `relock run` use this test binary as the command run under
// the lock: started with RELOCK_IT_CHILD set, it plays one of the roles of
// runChild instead of running tests.
func init() {
	if mode := os.Getenv("RELOCK_IT_CHILD"); mode != "" {
		os.Exit(runChild(mode))
	}
}

// runChild is the command run under `relock run` in these tests. Its file
// is $RELOCK_IT_FILE.
//
//   - interval: appends "<fence> start <ns>", works 100 ms, appends
//     "<fence> end <ns>".
//   - env: writes RELOCK_NAME, RELOCK_KEY and RELOCK_FENCE, one a line, and
//     exits with $RELOCK_IT_CODE.
//   - gate: appends "<fence> start <ns>", waits (at most 30 s, else exits
//     101) until the file has $RELOCK_IT_PEERS start lines and the file
//     $RELOCK_IT_GATE exists, then appends "<fence> end <ns>".
//   - names: writes RELOCK_NAME, RELOCK_KEY, RELOCK_FENCE, RELOCK_NAMES,
//     RELOCK_KEYS and RELOCK_FENCES, one a line, then waits (at most 30 s,
//     else exits 101) until the file $RELOCK_IT_GATE exists.
//   - hang: writes its pid and waits to be killed (at most a minute). With
//     RELOCK_IT_TERM=ignore it ignores SIGTERM; with RELOCK_IT_TERM=exit3 it
//     appends "term" on SIGTERM and exits 3.
func runChild(mode string) int {
	file := os.Getenv("RELOCK_IT_FILE")
	appendLine := func(line string) {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(100)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(100)
		}
	}
	switch mode {
	case "interval":
		fence := os.Getenv("RELOCK_FENCE")
		appendLine(fmt.Sprintf("%s start %d", fence, time.Now().UnixNano()))
		time.Sleep(100 * time.Millisecond) // the work done under the lock
		appendLine(fmt.Sprintf("%s end %d", fence, time.Now().UnixNano()))
		return 0
	case "gate":
		fence := os.Getenv("RELOCK_FENCE")
		appendLine(fmt.Sprintf("%s start %d", fence, time.Now().UnixNano()))
		peers, _ := strconv.Atoi(os.Getenv("RELOCK_IT_PEERS"))
		deadline := time.Now().Add(30 * time.Second)
		for {
			b, _ := os.ReadFile(file)
			_, gateErr := os.Stat(os.Getenv("RELOCK_IT_GATE"))
			if strings.Count(string(b), " start ") >= peers && gateErr == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, "gate: peers or gate not there within 30s")
				return 101
			}
			time.Sleep(5 * time.Millisecond)
		}
		appendLine(fmt.Sprintf("%s end %d", fence, time.Now().UnixNano()))
		return 0
	case "env":
		appendLine(os.Getenv("RELOCK_NAME") + "\n" + os.Getenv("RELOCK_KEY") + "\n" + os.Getenv("RELOCK_FENCE"))
		code, _ := strconv.Atoi(os.Getenv("RELOCK_IT_CODE"))
		return code
	case "names":
		var lines []string
		for _, v := range []string{"RELOCK_NAME", "RELOCK_KEY", "RELOCK_FENCE", "RELOCK_NAMES", "RELOCK_KEYS", "RELOCK_FENCES"} {
			lines = append(lines, os.Getenv(v))
		}
		appendLine(strings.Join(lines, "\n"))
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(os.Getenv("RELOCK_IT_GATE")); err == nil {
				return 0
			}
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, "names: gate not there within 30s")
				return 101
			}
			time.Sleep(5 * time.Millisecond)
		}
	case "hang":
		switch os.Getenv("RELOCK_IT_TERM") {
		case "ignore":
			signal.Ignore(syscall.SIGTERM)
		case "exit3":
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM)
			go func() {
				<-term
				appendLine("term")
				os.Exit(3)
			}()
		}
		appendLine(strconv.Itoa(os.Getpid()))
		time.Sleep(time.Minute)
		return 99
	}
	fmt.Fprintln(os.Stderr, "unknown RELOCK_IT_CHILD mode", mode)
	return 100
}

// relockRun is one `relock run` process started by a test.
type relockRun struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when it has exited
}

// startRun starts `relock run --addr <srv> args... -- <this test binary>`
// with the child mode and extra environment, and kills it if the test ends
// first.
func startRun(t *testing.T, srv *server, mode string, env []string, args ...string) *relockRun {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"run", "--addr", srv.Addr}, args...)
	full = append(full, "--", self)
	cmd := exec.Command(relockBin, full...)
	// GORACE: relock and this binary are built with -race, whose runtime
	// otherwise sleeps a second at exit, while the child holds the lock.
	cmd.Env = append(os.Environ(), "RELOCK_IT_CHILD="+mode, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	r := &relockRun{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// exitCode waits at most d for the run to exit and returns its status.
func (r *relockRun) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("relock run did not exit within %v; stderr:\n%s", d, r.stderr)
		return -1
	}
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine of exec.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readLines returns the lines of file ("" if it does not exist yet).
func readLines(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// processGone reports whether no process with pid exists (it may be a
// zombie of init for a moment: that counts as alive).
func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func TestRun_ConcurrentRunsNeverOverlap(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "intervals")
	const n = 4
	runs := make([]*relockRun, n)
	for i := range runs {
		runs[i] = startRun(t, srv, "interval", []string{"RELOCK_IT_FILE=" + file}, "overlap")
	}
	for i, r := range runs {
		if code := r.exitCode(t, 30*time.Second); code != 0 {
			t.Fatalf("run %d exited %d; stderr:\n%s", i, code, r.stderr)
		}
	}

	type interval struct {
		fence      uint64
		start, end int64
	}
	byFence := map[uint64]*interval{}
	for _, line := range readLines(t, file) {
		var fence uint64
		var what string
		var at int64
		if _, err := fmt.Sscanf(line, "%d %s %d", &fence, &what, &at); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		iv := byFence[fence]
		if iv == nil {
			iv = &interval{fence: fence}
			byFence[fence] = iv
		}
		switch what {
		case "start":
			iv.start = at
		case "end":
			iv.end = at
		}
	}
	if len(byFence) != n {
		t.Fatalf("%d distinct fences, want %d: %v", len(byFence), n, byFence)
	}
	var ivs []*interval
	for _, iv := range byFence {
		if iv.start == 0 || iv.end == 0 || iv.end < iv.start {
			t.Fatalf("incomplete interval %+v", *iv)
		}
		ivs = append(ivs, iv)
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].start < ivs[j].start })
	for i := 1; i < len(ivs); i++ {
		prev, cur := ivs[i-1], ivs[i]
		if cur.start < prev.end {
			t.Fatalf("runs overlap: fence %d ran [%d, %d], fence %d started at %d", prev.fence, prev.start, prev.end, cur.fence, cur.start)
		}
		if cur.fence <= prev.fence {
			t.Fatalf("fence %d ran after fence %d", cur.fence, prev.fence)
		}
	}
}

// runIntervals reads the "<fence> start|end <ns>" lines of file.
func runIntervals(t *testing.T, file string) map[uint64][2]int64 {
	t.Helper()
	out := map[uint64][2]int64{}
	for _, line := range readLines(t, file) {
		var fence uint64
		var what string
		var at int64
		if _, err := fmt.Sscanf(line, "%d %s %d", &fence, &what, &at); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		iv := out[fence]
		if what == "start" {
			iv[0] = at
		} else {
			iv[1] = at
		}
		out[fence] = iv
	}
	return out
}

func TestRun_SharedRunsOverlapAndAnExclusiveRunWaitsForThem(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	readers, writer, gate := filepath.Join(dir, "readers"), filepath.Join(dir, "writer"), filepath.Join(dir, "gate")
	env := []string{"RELOCK_IT_FILE=" + readers, "RELOCK_IT_GATE=" + gate, "RELOCK_IT_PEERS=2"}
	// Each shared command waits until both have started: they end only if
	// they ran at once.
	a := startRun(t, srv, "gate", env, "--shared", "rw")
	b := startRun(t, srv, "gate", env, "--shared", "rw")
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, readers)) >= 2 },
		"the two shared runs did not both start; stderr:\n%s\n%s", a.stderr, b.stderr)
	// The writer queues behind the readers; until the gate opens they
	// cannot end, so it must wait.
	w := startRun(t, srv, "interval", []string{"RELOCK_IT_FILE=" + writer}, "rw")
	c, err := clientlib.New(clientlib.Options{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, 20*time.Second, func() bool {
		info, err := c.Inspect(ctxFor(t, 5*time.Second), "rw")
		return err == nil && info != nil && len(info.Waiters) == 1 && info.Waiters[0].Mode == "exclusive"
	}, "the exclusive run is not waiting; stderr:\n%s", w.stderr)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, r := range []*relockRun{a, b, w} {
		if code := r.exitCode(t, 30*time.Second); code != 0 {
			t.Fatalf("run %d exited %d; stderr:\n%s", i, code, r.stderr)
		}
	}
	shared, excl := runIntervals(t, readers), runIntervals(t, writer)
	if len(shared) != 2 || len(excl) != 1 {
		t.Fatalf("intervals: shared %v, exclusive %v", shared, excl)
	}
	var ivs [][2]int64
	for _, iv := range shared {
		ivs = append(ivs, iv)
	}
	if !(ivs[0][0] < ivs[1][1] && ivs[1][0] < ivs[0][1]) {
		t.Fatalf("shared runs did not overlap: %v", ivs)
	}
	for _, iv := range excl {
		for _, s := range ivs {
			if iv[0] < s[1] {
				t.Fatalf("exclusive run started at %d before a shared run ended at %d", iv[0], s[1])
			}
		}
	}
}

func TestRun_SharedTakesNoSize(t *testing.T) {
	srv := startServer(t)
	r := startRun(t, srv, "env", nil, "--shared", "--size", "2", "x")
	if code := r.exitCode(t, 30*time.Second); code != 64 {
		t.Fatalf("exit %d, want 64; stderr:\n%s", code, r.stderr)
	}
}

func TestRun_ChildExitCodeAndEnvironmentPassThrough(t *testing.T) {
	srv := startServer(t)
	for _, code := range []int{0, 7} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "env")
			r := startRun(t, srv, "env", []string{"RELOCK_IT_FILE=" + file, "RELOCK_IT_CODE=" + strconv.Itoa(code)}, "job:env")
			if got := r.exitCode(t, 30*time.Second); got != code {
				t.Fatalf("relock run exited %d, want the child's %d; stderr:\n%s", got, code, r.stderr)
			}
			lines := readLines(t, file)
			if len(lines) != 3 || lines[0] != "job:env" || !strings.HasPrefix(lines[1], lines[2]+"-") {
				t.Fatalf("child saw RELOCK_NAME, RELOCK_KEY, RELOCK_FENCE = %q", lines)
			}
		})
	}
	// The lock was released on exit: it is free now.
	c := srv.client(t)
	ctx := ctxFor(t, 10*time.Second)
	if key, err := c.Do(ctx, "TRYLOCK", "job:env").Text(); err != nil || key == "" {
		t.Fatalf("TRYLOCK after the runs = %q, %v; want a key", key, err)
	}
}

func TestRun_ChildKilledWithinOneSecondAfterForceUnlock(t *testing.T) {
	for _, tc := range []struct {
		name     string
		term     string
		wantTERM bool // the child logs the SIGTERM it got
	}{
		{name: "SIGTERM", term: "exit3", wantTERM: true},
		{name: "SIGKILL after grace", term: "ignore"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t)
			file := filepath.Join(t.TempDir(), "hang")
			r := startRun(t, srv, "hang", []string{"RELOCK_IT_FILE=" + file, "RELOCK_IT_TERM=" + tc.term},
				"--ttl", "600ms", "--kill-grace", "200ms", "job:hang")
			eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "child started")
			pid, err := strconv.Atoi(readLines(t, file)[0])
			if err != nil {
				t.Fatal(err)
			}

			c := srv.client(t)
			forced := time.Now()
			if n, err := c.Do(ctxFor(t, 5*time.Second), "FORCEUNLOCK", "job:hang").Int(); err != nil || n != 1 {
				t.Fatalf("FORCEUNLOCK = %d, %v", n, err)
			}
			code := r.exitCode(t, 10*time.Second)
			took := time.Since(forced)
			t.Logf("relock run exited %d, %v after FORCEUNLOCK; stderr:\n%s", code, took, r.stderr)
			if code != 75 {
				t.Fatalf("exit status %d, want 75 (lock lost)", code)
			}
			if took > time.Second {
				t.Fatalf("child stopped %v after FORCEUNLOCK, want within 1s", took)
			}
			if !processGone(pid) {
				t.Fatalf("child %d still exists after relock run exited", pid)
			}
			if got := readLines(t, file); tc.wantTERM != (len(got) == 2 && got[1] == "term") {
				t.Fatalf("child log %q; want SIGTERM logged: %v", got, tc.wantTERM)
			}
			if !strings.Contains(r.stderr.String(), "lost") {
				t.Fatalf("no message about the loss; stderr:\n%s", r.stderr)
			}
		})
	}
}

func TestRun_ChildKilledWhenServerDies(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "hang")
	r := startRun(t, srv, "hang", []string{"RELOCK_IT_FILE=" + file}, "job:server-dies")
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "child started")
	killed := time.Now()
	srv.Kill()
	// The default 15 s TTL is not what notices: the closed connection is.
	if code := r.exitCode(t, 10*time.Second); code != 75 {
		t.Fatalf("exit status %d, want 75; stderr:\n%s", code, r.stderr)
	}
	if took := time.Since(killed); took > time.Second {
		t.Fatalf("child stopped %v after the server died, want within 1s", took)
	}
}

func TestRun_SIGTERMIsForwardedToChild(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "hang")
	r := startRun(t, srv, "hang", []string{"RELOCK_IT_FILE=" + file, "RELOCK_IT_TERM=exit3"}, "job:term")
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "child started")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.exitCode(t, 10*time.Second); code != 3 {
		t.Fatalf("exit status %d, want the child's 3; stderr:\n%s", code, r.stderr)
	}
	if got := readLines(t, file); len(got) != 2 || got[1] != "term" {
		t.Fatalf("child log %q, want its SIGTERM logged", got)
	}
}

func TestRun_NonblockAndWaitReturnConflictCode(t *testing.T) {
	srv := startServer(t)
	holder := srv.client(t)
	ctx := ctxFor(t, 30*time.Second)
	if _, err := holder.Do(ctx, "LOCK", "job:busy").Text(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "env")
	env := []string{"RELOCK_IT_FILE=" + file}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"nonblock", []string{"--nonblock"}, 1},
		{"nonblock with code", []string{"-n", "--conflict-exit-code", "42"}, 42},
		{"wait", []string{"--wait", "200ms", "--conflict-exit-code", "9"}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := startRun(t, srv, "env", env, append(tc.args, "job:busy")...)
			if got := r.exitCode(t, 10*time.Second); got != tc.want {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", got, tc.want, r.stderr)
			}
			if tc.name == "wait" && time.Since(start) < 200*time.Millisecond {
				t.Fatalf("gave up after %v, before --wait 200ms", time.Since(start))
			}
			if lines := readLines(t, file); len(lines) != 0 {
				t.Fatalf("the command ran without the lock: %q", lines)
			}
		})
	}
}

// relockTool runs a relock tool (locks, unlock) to completion and returns
// its stdout, stderr and exit status.
func relockTool(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(relockBin, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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

func TestTools_LocksTableAndForceUnlock(t *testing.T) {
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	holder := srv.client(t)
	if _, err := holder.Do(ctx, "LOCK", "jobs:a", "TTL", 60000, "OWNER", "worker-1").Text(); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Do(ctx, "LOCK", "other").Text(); err != nil {
		t.Fatal(err)
	}
	waiter := srv.client(t)
	go waiter.Do(ctx, "LOCK", "jobs:a") // waits until the test ends
	eventually(t, 10*time.Second, func() bool {
		out, _, _ := relockTool(t, "locks", "--addr", srv.Addr, "jobs:*")
		return strings.Contains(out, "worker-1")
	}, "LOCKS shows the holder")

	// The client flags may also follow the tool's arguments.
	out, errOut, code := relockTool(t, "locks", "jobs:*", "--addr", srv.Addr)
	if code != 0 {
		t.Fatalf("relock locks exited %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("relock locks jobs:* printed %d lines, want a header and one lock:\n%s", len(lines), out)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	want := []string{"NAME", "SIZE", "FENCE", "OWNER", "CLIENT", "TTL", "AGE", "COUNT", "WAITERS"}
	if strings.Join(header, " ") != strings.Join(want, " ") {
		t.Fatalf("header %q, want %q", header, want)
	}
	if len(row) != len(want) || row[0] != "jobs:a" || row[1] != "1" || row[3] != "worker-1" || row[7] != "1" || row[8] != "1" {
		t.Fatalf("row %q, want jobs:a, size 1, owner worker-1, count 1, 1 waiter", row)
	}
	if strings.Index(lines[1], "jobs:a") != 0 || strings.Index(lines[0], "SIZE") != strings.Index(lines[1], "1 ") {
		t.Fatalf("columns not aligned:\n%s", out)
	}

	out, errOut, code = relockTool(t, "unlock", "--addr", srv.Addr, "--force", "--yes", "jobs:a")
	if code != 0 || !strings.Contains(out, "released 1 hold") {
		t.Fatalf("relock unlock --force = %d, %q, %q", code, out, errOut)
	}
	if _, errOut, code = relockTool(t, "unlock", "--addr", srv.Addr, "jobs:a"); code == 0 || !strings.Contains(errOut, "--force") {
		t.Fatalf("relock unlock without --force or key = %d, %q; want an error naming --force", code, errOut)
	}
	// The waiter got the lock: FORCEUNLOCK grants the next in line.
	eventually(t, 10*time.Second, func() bool {
		out, _, _ := relockTool(t, "locks", "--addr", srv.Addr, "jobs:*")
		return strings.Contains(out, "jobs:a") && !strings.Contains(out, "worker-1")
	}, "the waiter holds jobs:a")
}

// A run with several names holds them all while its command runs, and
// passes every name's key and fence; a second run sharing one name waits
// without holding its other name, and runs once the first is done.
func TestRun_SeveralNamesAllOrNoneAndASecondRunSharingOneWaits(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	envFile, gate, second := filepath.Join(dir, "env"), filepath.Join(dir, "gate"), filepath.Join(dir, "second")
	first := startRun(t, srv, "names", []string{"RELOCK_IT_FILE=" + envFile, "RELOCK_IT_GATE=" + gate},
		"--lock", "many:b", "--lock", "many:c", "many:a")
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, envFile)) >= 6 },
		"the first run's command did not start; stderr:\n%s", first.stderr)
	env := readLines(t, envFile)
	if env[0] != "many:a" || env[3] != "many:a many:b many:c" {
		t.Fatalf("RELOCK_NAME %q, RELOCK_NAMES %q; want many:a and \"many:a many:b many:c\"", env[0], env[3])
	}
	keys, fences := strings.Fields(env[4]), strings.Fields(env[5])
	if len(keys) != 3 || len(fences) != 3 || keys[0] != env[1] || fences[0] != env[2] {
		t.Fatalf("RELOCK_KEYS %q, RELOCK_FENCES %q do not match RELOCK_KEY %q, RELOCK_FENCE %q", env[4], env[5], env[1], env[2])
	}
	c, err := clientlib.New(clientlib.Options{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inspect := func(name string) *clientlib.LockInfo {
		t.Helper()
		info, err := c.Inspect(ctxFor(t, 5*time.Second), name)
		if err != nil {
			t.Fatalf("inspect %s: %v", name, err)
		}
		if info == nil {
			return &clientlib.LockInfo{Name: name}
		}
		return info
	}
	for i, name := range []string{"many:a", "many:b", "many:c"} {
		info := inspect(name)
		if len(info.Holders) != 1 || strconv.FormatUint(info.Holders[0].Fence, 10) != fences[i] {
			t.Fatalf("%s: holders %+v, want the fence %s the command got", name, info.Holders, fences[i])
		}
		if !strings.HasPrefix(keys[i], fences[i]+"-") {
			t.Fatalf("%s: key %q is not of fence %s", name, keys[i], fences[i])
		}
	}

	// The second run shares many:c: it waits, on both of its names at
	// once, holding neither.
	w := startRun(t, srv, "interval", []string{"RELOCK_IT_FILE=" + second}, "--lock", "many:c", "many:d")
	eventually(t, 20*time.Second, func() bool {
		d, cc := inspect("many:d"), inspect("many:c")
		return len(d.Waiters) == 1 && d.Waiters[0].Multi == 2 && len(cc.Waiters) == 1
	}, "the second run is not waiting on many:c and many:d; stderr:\n%s", w.stderr)
	if d := inspect("many:d"); len(d.Holders) != 0 {
		t.Fatalf("many:d is held while the second run waits: %+v", d.Holders)
	}
	if got := readLines(t, second); len(got) != 0 {
		t.Fatalf("the second run's command ran while the first held many:c: %q", got)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := first.exitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("first run exited %d; stderr:\n%s", code, first.stderr)
	}
	if code := w.exitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("second run exited %d; stderr:\n%s", code, w.stderr)
	}
	if got := runIntervals(t, second); len(got) != 1 {
		t.Fatalf("second run's intervals %v, want one", got)
	}
	for _, name := range []string{"many:a", "many:b", "many:c", "many:d"} {
		if info := inspect(name); len(info.Holders) != 0 || len(info.Waiters) != 0 {
			t.Fatalf("%s after both runs: %+v", name, info)
		}
	}
}

// Losing any one of a run's names stops its command (exit 75), and the
// other names are released.
func TestRun_SeveralNamesLossOfOneStopsTheCommand(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "hang")
	r := startRun(t, srv, "hang", []string{"RELOCK_IT_FILE=" + file, "RELOCK_IT_TERM=exit3"},
		"--kill-grace", "200ms", "--lock", "lose:b", "lose:a")
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "child started; stderr:\n%s", r.stderr)
	c := srv.client(t)
	forced := time.Now()
	if n, err := c.Do(ctxFor(t, 5*time.Second), "FORCEUNLOCK", "lose:b").Int(); err != nil || n != 1 {
		t.Fatalf("FORCEUNLOCK = %d, %v", n, err)
	}
	code := r.exitCode(t, 10*time.Second)
	t.Logf("relock run exited %d, %v after FORCEUNLOCK; stderr:\n%s", code, time.Since(forced), r.stderr)
	if code != 75 {
		t.Fatalf("exit status %d, want 75 (lock lost)", code)
	}
	if got := readLines(t, file); len(got) != 2 || got[1] != "term" {
		t.Fatalf("child log %q; want SIGTERM logged", got)
	}
	if key, err := c.Do(ctxFor(t, 5*time.Second), "TRYLOCK", "lose:a").Text(); err != nil || key == "" {
		t.Fatalf("TRYLOCK lose:a after the run = %q, %v; want a key (released)", key, err)
	}
}

func TestRun_SeveralNamesRefusesSizeAndRepeatedNames(t *testing.T) {
	srv := startServer(t)
	for _, args := range [][]string{
		{"--size", "2", "--lock", "ref:b", "ref:a"},
		{"--lock", "ref:a", "ref:a"},
	} {
		r := startRun(t, srv, "env", nil, args...)
		if code := r.exitCode(t, 30*time.Second); code != 64 {
			t.Fatalf("%q: exit %d, want 64; stderr:\n%s", args, code, r.stderr)
		}
	}
}
