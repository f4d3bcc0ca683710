package integration

import (
	"bufio"
	"errors"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stock clients (docs/protocol.md, notes for stock clients): redis-cli, and go-redis with its default options
// (HELLO 3) and with Protocol 2.

var plainKey = regexp.MustCompile(`^\d+-[0-9a-f]{16}$`)

// cliSession is one redis-cli process fed commands on stdin, one line at a
// time, so that all of them share its one connection. Its stdout is a pipe,
// so redis-cli prints raw replies: one line per single-line reply, an empty
// line for nil.
type cliSession struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startCLI(t *testing.T, srv *server, args ...string) *cliSession {
	t.Helper()
	bin := needTool(t, "redis-cli")
	cmd := exec.Command(bin, append([]string{"-h", "127.0.0.1", "-p", srv.Port()}, args...)...)
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
	s := &cliSession{cmd: cmd, stdin: stdin, lines: make(chan string, 64)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return s
}

func (s *cliSession) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		t.Fatalf("redis-cli stdin: %v", err)
	}
}

// next returns redis-cli's next output line.
func (s *cliSession) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-s.lines:
		if !ok {
			t.Fatal("redis-cli exited")
		}
		return line
	case <-time.After(5 * time.Second):
		t.Fatal("redis-cli printed nothing within 5s")
		return ""
	}
}

func (s *cliSession) do(t *testing.T, line string) string {
	t.Helper()
	s.send(t, line)
	return s.next(t)
}

// close ends redis-cli's input and waits for it to exit 0.
func (s *cliSession) close(t *testing.T) {
	t.Helper()
	s.stdin.Close()
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("redis-cli: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("redis-cli did not exit within 5s of its input closing")
	}
}

func TestRedisCLI_LockUnlockOnOneConnection(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	admin := srv.client(t)
	cli := startCLI(t, srv)

	id := cli.do(t, "CLIENT ID")
	key := cli.do(t, "LOCK cli TTL 60000")
	if !plainKey.MatchString(key) {
		t.Fatalf("LOCK printed %q; want a key", key)
	}
	if l, _ := lockOf(t, admin, "cli"); len(l.Holders) != 1 || itoa(int(l.Holders[0].ClientID)) != id {
		t.Fatalf("LOCKS cli = %+v; want held by redis-cli's connection %s", l, id)
	}
	if got := cli.do(t, "TRYLOCK cli"); got != "" {
		t.Errorf("TRYLOCK of a held lock printed %q; want nil (an empty line)", got)
	}
	if got := cli.do(t, "CHECK cli "+key); !regexp.MustCompile(`^(59\d\d\d|60000)$`).MatchString(got) {
		t.Errorf("CHECK printed %q", got)
	}
	if got := cli.do(t, "UNLOCK cli "+key); got != "1" {
		t.Errorf("UNLOCK printed %q; want 1", got)
	}
	if got := cli.do(t, "UNLOCK cli "+key); !strings.HasPrefix(got, "NOTHELD ") {
		t.Errorf("second UNLOCK printed %q; want NOTHELD", got)
	}
	if got := cli.next(t); got != "" { // raw mode ends an error with an empty line
		t.Errorf("after the error redis-cli printed %q; want an empty line", got)
	}

	// A LOCK that blocks in redis-cli is granted when the holder releases.
	held := mustLock(t, admin, "LOCK", "blk")
	cli.send(t, "LOCK blk")
	waitForWaiters(t, admin, "blk", 1)
	if got := waiterIDs(t, admin, "blk"); itoa(int(got[0])) != id {
		t.Fatalf("waiter %v; want redis-cli's connection %s", got, id)
	}
	mustUnlock(t, admin, "blk", held)
	if got := cli.next(t); !plainKey.MatchString(got) {
		t.Fatalf("blocked LOCK printed %q; want a key", got)
	}
	if got := cli.do(t, "LOCKS MATCH blk"); got != "name" {
		t.Errorf("LOCKS printed %q first; want the field name", got)
	}

	// redis-cli exits when its input ends: its connection closes and its
	// holds go with it.
	cli.close(t)
	eventually(t, 2*time.Second, func() bool { return dbsize(t, admin) == 0 },
		"redis-cli's holds outlived its connection")
}

func TestRedisCLI_RESP3(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "redis-cli")
	srv := startServer(t)
	admin := srv.client(t)
	cmd := exec.Command(bin, "-3", "--no-raw", "-h", "127.0.0.1", "-p", srv.Port())
	cmd.Stdin = strings.NewReader("TRYLOCK r3 OWNER cli\nTRYLOCK r3 OWNER other\nLOCKS MATCH r3\nCLIENT INFO\nUNLOCK r3 1-0000000000000000\n")
	out, err := runBounded(cmd, 10*time.Second)
	if err != nil {
		t.Fatalf("redis-cli -3: %v\n%s", err, out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^"\d+-[0-9a-f]{16}"$`),        // the key
		regexp.MustCompile(`(?m)^\(nil\)$`),                   // TRYLOCK of a held lock
		regexp.MustCompile(`(?m)^1\) 1# "name" => "r3"$`),     // LOCKS entries are maps
		regexp.MustCompile(`(?m)^ +2# "owner" => "cli"$`),     // a holder is a map
		regexp.MustCompile(`resp=3`),                          // CLIENT INFO
		regexp.MustCompile(`(?m)^\(error\) NOTHELD the key `), // the code is kept
	} {
		if !want.MatchString(out) {
			t.Errorf("redis-cli -3 output lacks %v:\n%s", want, out)
		}
	}
	eventually(t, 2*time.Second, func() bool { return dbsize(t, admin) == 0 },
		"redis-cli's hold outlived its connection")
}

// TestRedisCLI_DetachedKeyAcrossProcesses: one redis-cli process takes a
// detached hold and exits; another releases it with the key.
func TestRedisCLI_DetachedKeyAcrossProcesses(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "redis-cli")
	srv := startServer(t)
	admin := srv.client(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"-h", "127.0.0.1", "-p", srv.Port()}, args...)...)
		out, err := runBounded(cmd, 10*time.Second)
		return strings.TrimSpace(out), err
	}
	key, err := run("LOCK", "handed", "TTL", "60000", "DETACH")
	if err != nil || !plainKey.MatchString(key) {
		t.Fatalf("redis-cli LOCK DETACH = %q, %v", key, err)
	}
	if bound, err := run("LOCK", "bound"); err != nil || !plainKey.MatchString(bound) {
		t.Fatalf("redis-cli LOCK = %q, %v", bound, err)
	}
	eventually(t, 2*time.Second, func() bool { _, ok := lockOf(t, admin, "bound"); return !ok },
		"a hold outlived the redis-cli process that took it")
	if _, ok := lockOf(t, admin, "handed"); !ok {
		t.Fatal("the detached hold did not survive its redis-cli process")
	}
	if got, err := run("UNLOCK", "handed", key); err != nil || got != "1" {
		t.Fatalf("redis-cli UNLOCK = %q, %v; want 1", got, err)
	}
	// With -e an error reply makes redis-cli exit non-zero.
	got, err := run("-e", "UNLOCK", "handed", key)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(got, "NOTHELD ") {
		t.Errorf("redis-cli -e UNLOCK of a released key = %q, %v; want NOTHELD and exit 1", got, err)
	}
}

// runBounded runs cmd and returns its combined output, killing it after d.
func runBounded(cmd *exec.Cmd, d time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(d, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.String(), err
}

func TestGoRedis_DefaultOptionsUseRESP3(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr}) // opens with HELLO 3
	t.Cleanup(func() { c.Close() })
	checkGoRedis(t, c, 3)
}

func TestGoRedis_Protocol2(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	t.Cleanup(func() { c.Close() })
	checkGoRedis(t, c, 2)
}

// checkGoRedis drives relock with go-redis's generic Do and typed commands
// on a pooled client: nil replies surface as redis.Nil and error codes are
// kept.
func checkGoRedis(t *testing.T, c *redis.Client, proto int) {
	ctx := ctxFor(t, 20*time.Second)
	info, err := c.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil || !strings.Contains(info, " resp="+itoa(proto)+" ") || !strings.Contains(info, " lib-name=go-redis") {
		t.Fatalf("CLIENT INFO = %q, %v; want resp=%d and go-redis's CLIENT SETINFO", info, err, proto)
	}

	key, err := c.Do(ctx, "LOCK", "g", "TTL", 60000).Text()
	if err != nil || !plainKey.MatchString(key) {
		t.Fatalf("LOCK = %q, %v", key, err)
	}
	if err := c.Do(ctx, "TRYLOCK", "g").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("TRYLOCK of a held lock: %v; want redis.Nil", err)
	}
	if err := c.Do(ctx, "LOCK", "g", "WAIT", 10).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("LOCK WAIT 10 of a held lock: %v; want redis.Nil", err)
	}
	if left, err := c.Do(ctx, "CHECK", "g", key).Int64(); err != nil || left <= 0 || left > 60000 {
		t.Errorf("CHECK = %v, %v", left, err)
	}
	if ttl, err := c.Do(ctx, "RENEW", "g", key, "TTL", 30000).Int64(); err != nil || ttl != 30000 {
		t.Errorf("RENEW = %v, %v; want 30000", ttl, err)
	}
	err = c.Do(ctx, "UNLOCK", "g", "1-0000000000000000").Err()
	var rerr redis.Error
	if !errors.As(err, &rerr) || !strings.HasPrefix(err.Error(), "NOTHELD ") {
		t.Errorf("UNLOCK with a wrong key: %v; want a redis.Error starting with NOTHELD", err)
	}
	err = c.Do(ctx, "LOCK", "g", "SIZE", 2).Err()
	if !errors.As(err, &rerr) || err.Error() != "SIZEMISMATCH lock 'g' has size 1, requested 2" {
		t.Errorf("LOCK with another size: %v; want SIZEMISMATCH", err)
	}
	if err := c.Do(ctx, "LOCK", "g", "TTL", "x").Err(); err == nil || err.Error() != "ERR value is not an integer or out of range" {
		t.Errorf("LOCK TTL x: %v", err)
	}

	raw, err := c.Do(ctx, "LOCKS").Slice()
	if err != nil || len(raw) != 1 {
		t.Fatalf("LOCKS = %v, %v", raw, err)
	}
	switch raw[0].(type) {
	case map[any]any:
		if proto != 3 {
			t.Errorf("LOCKS entry is a map under RESP%d", proto)
		}
	case []any:
		if proto != 2 {
			t.Errorf("LOCKS entry is a flat array under RESP%d", proto)
		}
	}
	ls, err := readLocks(ctx, c)
	if err != nil || len(ls) != 1 || ls[0].Name != "g" || len(ls[0].Holders) != 1 || ls[0].Holders[0].Fence != fenceOf(t, key) {
		t.Fatalf("LOCKS = %+v, %v", ls, err)
	}
	if ls[0].Holders[0].Owner != "" {
		t.Errorf("owner of a hold without OWNER = %q; want nil", ls[0].Holders[0].Owner)
	}
	if n, err := c.Do(ctx, "UNLOCK", "g", key).Int(); err != nil || n != 1 {
		t.Errorf("UNLOCK = %v, %v", n, err)
	}

	// Typed commands a client's housekeeping uses.
	if got, err := c.Info(ctx, "persistence").Result(); err != nil || !strings.Contains(got, "loading:0\r\n") {
		t.Errorf("INFO persistence = %q, %v", got, err)
	}
	if got, err := c.ConfigGet(ctx, "maxclients").Result(); err != nil || got["maxclients"] != "10000" {
		t.Errorf("CONFIG GET maxclients = %v, %v", got, err)
	}
	if got, err := c.DBSize(ctx).Result(); err != nil || got != 0 {
		t.Errorf("DBSIZE = %v, %v", got, err)
	}
	if got, err := c.Echo(ctx, "hi").Result(); err != nil || got != "hi" {
		t.Errorf("ECHO = %v, %v", got, err)
	}
	if got, err := c.Time(ctx).Result(); err != nil || time.Since(got).Abs() > time.Minute {
		t.Errorf("TIME = %v, %v", got, err)
	}
	if got, err := c.ClientGetName(ctx).Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("CLIENT GETNAME without a name = %q, %v; want redis.Nil", got, err)
	}
	if err := c.Do(ctx, "SELECT", 0).Err(); err != nil {
		t.Errorf("SELECT 0: %v", err)
	}
}
