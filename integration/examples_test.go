package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The programs in examples/ (README, "Use it from your language"), each run
// against a server of its own with RELOCK_ADDR, their output checked line
// by line, and the server left without locks.

// exampleRun is how an example program ended.
type exampleRun struct {
	stdout, stderr string
	code           int
}

// runExample runs name args... in dir (relative to the repo root) with
// RELOCK_ADDR set and env added, killing it after 40 s.
func runExample(t *testing.T, srv *server, dir string, env []string, name string, args ...string) exampleRun {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = filepath.Join("..", dir)
	cmd.Env = append(append(os.Environ(), "RELOCK_ADDR="+srv.Addr), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := compatOutput(cmd, 40*time.Second)
	r := exampleRun{stdout: out, stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

// expectLines fails unless the output's lines match want, one regexp per
// line, in order.
func expectLines(t *testing.T, r exampleRun, want ...string) {
	t.Helper()
	got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = regexp.MustCompile(`^(?:` + want[i] + `)$`).MatchString(got[i])
	}
	if !ok {
		t.Errorf("output:\n%s\nwant lines matching:\n%s\nstderr:\n%s", r.stdout, strings.Join(want, "\n"), r.stderr)
	}
}

// expectNoLocks fails unless the server ends up without locks.
func expectNoLocks(t *testing.T, srv *server) {
	t.Helper()
	admin := srv.client(t)
	eventually(t, 5*time.Second, func() bool { return compatDBSize(t, admin) == 0 }, "the example left locks behind")
}

func TestExample_PythonContextManager(t *testing.T) {
	t.Parallel()
	py := needPythonRedis(t)
	srv := startServer(t)
	r := runExample(t, srv, "examples/python", nil, py, "lock.py")
	if r.code != 0 {
		t.Fatalf("lock.py exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r,
		`acquired reports:daily fence=\d+`,
		`second worker: busy`,
		// 2 s of work with a 1 s TTL: only the renew thread kept it.
		`still held after 2s with a 1s TTL: renewed=True ttl-left=True`,
		`released: True`,
		`waited 200ms: not granted`,
		`lost=True reason=NOTHELD the key does not hold the lock`,
	)
	expectNoLocks(t, srv)
}

func TestExample_NodeRedisWithLock(t *testing.T) {
	t.Parallel()
	node, _ := needNodeModule(t, "redis")
	srv := startServer(t)
	r := runExample(t, srv, "examples/node", nil, node, "lock.js")
	if r.code != 0 {
		t.Fatalf("lock.js exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r,
		`a: acquired jobs:nightly fence=\d+`,
		`b: waiting`,
		// b's LOCK blocks its duplicate() connection only.
		`shared client while b waits: PONG`,
		// a worked 2 s with a 1 s TTL: b got the lock only after a was
		// done, so the renewals kept it.
		`a: done`,
		`b: acquired jobs:nightly after a: true`,
		`try while held: not granted`,
		`lost: NOTHELD the key does not hold the lock`,
	)
	expectNoLocks(t, srv)
}

func TestExample_IORedisWithLock(t *testing.T) {
	t.Parallel()
	node, _ := needNodeModule(t, "ioredis")
	srv := startServer(t)
	r := runExample(t, srv, "examples/node", nil, node, "lock-ioredis.js")
	if r.code != 0 {
		t.Fatalf("lock-ioredis.js exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r,
		`acquired jobs:import fence=\d+`,
		`other worker: not granted within 900ms`,
		`still held: true`, // after 2 s with a 1 s TTL
		`released: true`,
		`lost: NOTHELD the key does not hold the lock`,
	)
	expectNoLocks(t, srv)
}

func TestExample_GoClientlibAndGoRedis(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	bin := filepath.Join(t.TempDir(), "example")
	build := exec.Command("go", "build", "-o", bin, "./examples/go")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/go: %v\n%s", err, out)
	}
	r := runExample(t, srv, "examples/go", nil, bin)
	if r.code != 0 {
		t.Fatalf("examples/go exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r,
		`acquired reports:daily fence=\d+`,
		`second worker: busy`,
		`still held after 2s with a 1s TTL: true`,
		`released`,
		`lost: true \(NOTHELD: true\)`,
		`go-redis: acquired deploy fence=\d+`,
		`go-redis: TRYLOCK while held: nil`,
		`go-redis: renewed for 30000ms`,
		`go-redis: UNLOCK again: NOTHELD`,
	)
	expectNoLocks(t, srv)
}

// TestExample_ShellCronJob: the cron script runs its job under the lock,
// and skips it (exit 0, "busy" on stderr) while another run holds it.
func TestExample_ShellCronJob(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	path := "PATH=" + filepath.Dir(relockBin) + string(os.PathListSeparator) + os.Getenv("PATH")

	r := runExample(t, srv, "examples/shell", []string{path}, "./cron-job.sh")
	if r.code != 0 {
		t.Fatalf("cron-job.sh exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r, `report: running as jobs:report with fence \d+`, `report: done`)
	expectNoLocks(t, srv)

	admin := srv.client(t)
	key := mustCompatLock(t, admin, "jobs:report") // a run on another machine
	r = runExample(t, srv, "examples/shell", []string{path}, "./cron-job.sh")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, `lock "jobs:report" is busy`) {
		t.Errorf("cron-job.sh while the lock is held: exit %d, stdout %q, stderr %q; want exit 0, no output, busy", r.code, r.stdout, r.stderr)
	}
	if err := admin.Do(ctxFor(t, 5*time.Second), "UNLOCK", "jobs:report", key).Err(); err != nil {
		t.Fatal(err)
	}
	expectNoLocks(t, srv)
}

// TestExample_ShellRedisCLI: the redis-cli script holds a detached lock
// across its redis-cli processes, renews it and releases it; while someone
// else holds it, it gives up after its WAIT.
func TestExample_ShellRedisCLI(t *testing.T) {
	t.Parallel()
	needTool(t, "redis-cli")
	srv := startServer(t)

	r := runExample(t, srv, "examples/shell", nil, "./redis-cli-lock.sh")
	if r.code != 0 {
		t.Fatalf("redis-cli-lock.sh exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r, `deploy: locked with fence \d+`, `deploy: build`, `deploy: push`, `deploy: migrate`, `deploy: done`)
	expectNoLocks(t, srv)

	admin := srv.client(t)
	key := mustCompatLock(t, admin, "deploy")
	r = runExample(t, srv, "examples/shell", []string{"DEPLOY_WAIT_MS=100"}, "./redis-cli-lock.sh")
	if r.code != 1 || r.stdout != "" || strings.TrimSpace(r.stderr) != "deploy: busy, giving up" {
		t.Errorf("redis-cli-lock.sh while the lock is held: exit %d, stdout %q, stderr %q; want exit 1 and busy", r.code, r.stdout, r.stderr)
	}
	if err := admin.Do(ctxFor(t, 5*time.Second), "UNLOCK", "deploy", key).Err(); err != nil {
		t.Fatal(err)
	}
	expectNoLocks(t, srv)
}

// The lock-event examples: wait until a lock is free (subscribe, then
// TRYLOCK on each free), and alert when a held lock is lost (subscribe to
// its own channel: forced and expired alert, the holder's own UNLOCK does
// not).

var (
	waitFreeLines = []string{
		`holder: acquired reports:daily fence=\d+`,
		`waiter: reports:daily is busy; waiting for its free event`,
		`holder: released reports:daily`,
		`waiter: acquired reports:daily fence=\d+ \(after the holder's: (True|true)\)`,
		`waiter: released reports:daily`,
	}
	lostAlertLines = []string{
		`acquired jobs:nightly fence=(\d+) ttl=60s`,
		`ALERT: lost jobs:nightly fence=\d+ \(forced\)`,
		`acquired jobs:nightly fence=\d+ ttl=300ms, not renewed`,
		`ALERT: lost jobs:nightly fence=\d+ \(expired\)`,
		`acquired jobs:nightly fence=\d+ ttl=60s`,
		`released jobs:nightly: alert=(False|false)`,
	}
)

// expectAlertFences fails unless each ALERT names the fence of the
// acquisition just before it.
func expectAlertFences(t *testing.T, r exampleRun) {
	t.Helper()
	acquired := regexp.MustCompile(`^acquired jobs:nightly fence=(\d+) `)
	alert := regexp.MustCompile(`^ALERT: lost jobs:nightly fence=(\d+) `)
	last := ""
	for _, line := range strings.Split(r.stdout, "\n") {
		if m := acquired.FindStringSubmatch(line); m != nil {
			last = m[1]
		}
		if m := alert.FindStringSubmatch(line); m != nil && m[1] != last {
			t.Errorf("%q alerts for fence %s; the hold acquired last has %s", line, m[1], last)
		}
	}
}

func TestExample_PythonWaitUntilFree(t *testing.T) {
	t.Parallel()
	py := needPythonRedis(t)
	srv := startServer(t)
	r := runExample(t, srv, "examples/python", nil, py, "wait_free.py")
	if r.code != 0 {
		t.Fatalf("wait_free.py exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r, waitFreeLines...)
	expectNoLocks(t, srv)
}

func TestExample_PythonLostAlert(t *testing.T) {
	t.Parallel()
	py := needPythonRedis(t)
	srv := startServer(t)
	r := runExample(t, srv, "examples/python", nil, py, "lost_alert.py")
	if r.code != 0 {
		t.Fatalf("lost_alert.py exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r, lostAlertLines...)
	expectAlertFences(t, r)
	expectNoLocks(t, srv)
}

func TestExample_NodeWaitUntilFree(t *testing.T) {
	t.Parallel()
	node, _ := needNodeModule(t, "redis")
	srv := startServer(t)
	r := runExample(t, srv, "examples/node", nil, node, "wait-free.js")
	if r.code != 0 {
		t.Fatalf("wait-free.js exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r, waitFreeLines...)
	expectNoLocks(t, srv)
}

func TestExample_NodeLostAlert(t *testing.T) {
	t.Parallel()
	node, _ := needNodeModule(t, "redis")
	srv := startServer(t)
	r := runExample(t, srv, "examples/node", nil, node, "lost-alert.js")
	if r.code != 0 {
		t.Fatalf("lost-alert.js exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r, lostAlertLines...)
	expectAlertFences(t, r)
	expectNoLocks(t, srv)
}

func TestExample_PythonReadWriteCache(t *testing.T) {
	t.Parallel()
	py := needPythonRedis(t)
	srv := startServer(t)
	r := runExample(t, srv, "examples/python", nil, py, "rw_cache.py")
	if r.code != 0 {
		t.Fatalf("rw_cache.py exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	expectLines(t, r,
		// The three readers met at a barrier: they held the lock at once.
		`readers sharing cache:users: 3`,
		`writer waiting behind 3 readers: True`,
		`late reader queued behind the writer: True`,
		`rebuilt to version 2 fence=\d+ holding the lock alone: True`,
		`late reader saw version 2`,
		`stale=True; upgraded: fence \d+ -> \d+ \(larger: True\)`,
		`old key: NOTHELD`,
		`rebuilt to version 3; downgraded: queued reader got in and saw version 3`,
	)
	expectNoLocks(t, srv)
}
