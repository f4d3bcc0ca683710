package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// relockBin is the relock binary built once by TestMain.
var relockBin string

// binEnv names an already built relock binary for a child test process.
const binEnv = "RELOCK_IT_BIN"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// A child process re-executed by a test (disconnect_test.go): it
		// needs no server binary.
		os.Exit(m.Run())
	}
	if bin := os.Getenv(binEnv); bin != "" {
		// A child test process (io_test.go) reuses its parent's binary.
		relockBin = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "relock-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relockBin = filepath.Join(dir, "relock")
	build := exec.Command("go", "build", "-race", "-o", relockBin, "github.com/relock/relock/cmd/relock")
	if os.Getenv("RELOCK_IT_NORACE") != "" {
		build = exec.Command("go", "build", "-o", relockBin, "github.com/relock/relock/cmd/relock")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building relock:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// engineEnv, set to "raft" in a child test process, makes every server it
// starts a one-node Raft cluster (see TestEngine_RaftPassesTheEngineTests).
const engineEnv = "RELOCK_IT_ENGINE"

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// server is a relock process started by a test.
type server struct {
	t    testing.TB
	cmd  *exec.Cmd
	Addr string // host:port of the TCP listener

	mu   sync.Mutex
	logs []map[string]any // parsed JSON log lines
	done chan struct{}    // closed when the process has exited
	err  error            // its exit error
}

// startServer starts `relock server` on a free loopback port with JSON logs
// and the extra args, waits until it listens, and stops it (SIGTERM, then
// checks a clean exit) when the test ends.
func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	return startServerEnv(t, nil, args...)
}

// startServerEnv is startServer with extra environment variables
// ("KEY=value", e.g. RELOCK_FAILPOINT) for the server process.
func startServerEnv(t testing.TB, env []string, args ...string) *server {
	t.Helper()
	s, err := launchServer(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// launchServer is startServerEnv returning an error instead of failing the
// test when the server exits before listening or does not listen within
// 20 s (a test that picked a port that was taken meanwhile retries).
func launchServer(t testing.TB, env []string, args ...string) (*server, error) {
	t.Helper()
	return launchServerIn(t, nil, env, args...)
}

// launchServerIn is launchServer with the server run under a command
// (wrap, e.g. nsenter into a network namespace; none if empty).
func launchServerIn(t testing.TB, wrap, env []string, args ...string) (*server, error) {
	t.Helper()
	full := append([]string{"server", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"}, args...)
	raftEngine := os.Getenv(engineEnv) == "raft"
	if raftEngine {
		// A one-node Raft cluster: the same commands through the Raft
		// engine (every change a log entry).
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		raft := "127.0.0.1:" + strconv.Itoa(port)
		full = append(full, "--node-id", "n1", "--raft-listen", raft, "--raft-dir", t.TempDir(),
			"--raft-peers", "n1="+raft, "--bootstrap")
	}
	cmd := exec.Command(relockBin, full...)
	if len(wrap) > 0 {
		cmd = exec.Command(wrap[0], append(append(wrap[1:len(wrap):len(wrap)], relockBin), full...)...)
	}
	// A -race binary sleeps 1 s at exit by default; a race it found still
	// fails the test through its exit status (66).
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, done: make(chan struct{})}
	listening := make(chan string, 1)
	leading := make(chan struct{}) // closed once a one-node cluster leads
	if !raftEngine {
		close(leading)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": "raw", "line": sc.Text()}
			}
			s.mu.Lock()
			s.logs = append(s.logs, m)
			s.mu.Unlock()
			if raftEngine && m["msg"] == "became leader" {
				select {
				case <-leading:
				default:
					close(leading)
				}
			}
			if m["msg"] == "listening" && m["network"] == "tcp" {
				if os.Getenv(ioEnv) == "goroutine" && m["event_loops"] != float64(0) {
					m = map[string]any{"msg": "listening", "addr": "not served by goroutines despite " + ioEnv}
				}
				select {
				case listening <- m["addr"].(string):
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.Addr = <-listening:
	case <-s.done:
		return nil, fmt.Errorf("relock exited before listening: %v\n%s", s.err, s.logText())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-s.done
		return nil, fmt.Errorf("relock did not listen within 20s\n%s", s.logText())
	}
	select {
	case <-leading:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-s.done
		return nil, fmt.Errorf("relock (one-node cluster) did not lead within 20s\n%s", s.logText())
	}
	t.Cleanup(func() { s.Stop() })
	return s, nil
}

// Stop sends SIGTERM and fails the test unless the server exits 0 within
// 10 s. It is idempotent.
func (s *server) Stop() {
	s.t.Helper()
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if s.err != nil {
			s.t.Errorf("relock exited with %v\n%s", s.err, s.logText())
		}
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("relock did not stop within 10s of SIGTERM\n%s", s.logText())
	}
}

// Kill stops the server with SIGKILL and waits for it.
func (s *server) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// Logs returns the JSON log lines so far.
func (s *server) Logs() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.logs...)
}

func (s *server) logText() string {
	var b strings.Builder
	for _, m := range s.Logs() {
		line, _ := json.Marshal(m)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// Port returns the TCP port as a string (for redis-cli -p).
func (s *server) Port() string {
	_, port, _ := net.SplitHostPort(s.Addr)
	return port
}

// client returns a go-redis client on a single dedicated connection (a hold
// belongs to the connection that took it), closed when the test ends.
// ReadTimeout -1 lets blocking LOCKs wait as long as the test allows.
func (s *server) client(t testing.TB, opts ...func(*redis.Options)) *redis.Client {
	t.Helper()
	o := &redis.Options{Addr: s.Addr, PoolSize: 1, MaxRetries: -1, ReadTimeout: -1, ContextTimeoutEnabled: true}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	return c
}

// eventually polls cond every 5 ms until it is true or the deadline passes,
// then fails the test with msg.
func eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: "+msg, append([]any{within}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// needTool returns the path of an external tool, skipping the test when it
// is missing outside CI and failing it under CI=true.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI (install it in .ci/run)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// ctx returns a context that ends with the test or after d.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
