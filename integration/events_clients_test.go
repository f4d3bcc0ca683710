package integration

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lock events (SPEC §8.1) through the stock clients: each subscribes to a
// lock's channel (SUBSCRIBE __lock__:<name>) and to a pattern matching it
// (PSUBSCRIBE __lock__:<name>*), another connection takes and releases
// the lock, and each subscription must show exactly
//
//	acquired <fence>
//	released <fence> unlock
//	free
//
// redis-cli, redis-py, node-redis and ioredis run as processes (the
// drivers in testdata/events print one line per message); go-redis runs
// in the test.

// eventLines is a subscriber process whose stdout the test reads line by
// line.
type eventLines struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error // the process's exit
	out   *strings.Builder
}

// startEventLines starts cmd with its stdout read into lines; the process
// is killed when the test ends.
func startEventLines(t *testing.T, cmd *exec.Cmd) *eventLines {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &eventLines{cmd: cmd, lines: make(chan string, 64), done: make(chan error, 1), out: &strings.Builder{}}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	go func() {
		<-readDone
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		for range p.lines {
		}
	})
	return p
}

// next returns the next line, failing the test if none comes within d.
func (p *eventLines) next(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatalf("%s exited; stderr:\n%s", p.cmd.Path, p.out)
		}
		return line
	case <-time.After(d):
		t.Fatalf("%s printed nothing within %v; stderr:\n%s", p.cmd.Path, d, p.out)
	}
	return ""
}

// exit waits for the process to exit 0.
func (p *eventLines) exit(t *testing.T) {
	t.Helper()
	for range p.lines {
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s: %v; stderr:\n%s", p.cmd.Path, err, p.out)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit within 10s", p.cmd.Path)
	}
}

// lockAndUnlock takes name and releases it on a connection of its own
// and returns the hold's fence as a string.
func lockAndUnlock(t *testing.T, srv *server, name string) string {
	t.Helper()
	c := srv.client(t)
	ctx := ctxFor(t, 10*time.Second)
	key, err := c.Do(ctx, "LOCK", name).Text()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "UNLOCK", name, key).Err(); err != nil {
		t.Fatal(err)
	}
	fence, _, _ := strings.Cut(key, "-")
	return fence
}

// wantPayloads are the payloads a subscriber of name must see for one
// LOCK and UNLOCK with fence.
func wantPayloads(fence string) []string {
	return []string{"acquired " + fence, "released " + fence + " unlock", "free"}
}

// checkDriverLines reads a driver's lines after "ready": per subscription
// (message, pmessage) the payloads must be want, in order.
func checkDriverLines(t *testing.T, p *eventLines, name string, want []string) {
	t.Helper()
	channel := "__lock__:" + name
	var got []string
	for len(got) < 2*len(want) {
		got = append(got, p.next(t, 10*time.Second))
	}
	var msgs, pmsgs []string
	for _, line := range got {
		switch {
		case strings.HasPrefix(line, "message "+channel+" "):
			msgs = append(msgs, strings.TrimPrefix(line, "message "+channel+" "))
		case strings.HasPrefix(line, "pmessage "+channel+"* "+channel+" "):
			pmsgs = append(pmsgs, strings.TrimPrefix(line, "pmessage "+channel+"* "+channel+" "))
		default:
			t.Fatalf("unexpected line %q; got:\n%s", line, strings.Join(got, "\n"))
		}
	}
	if strings.Join(msgs, "|") != strings.Join(want, "|") || strings.Join(pmsgs, "|") != strings.Join(want, "|") {
		t.Fatalf("SUBSCRIBE got %q, PSUBSCRIBE got %q; want %q each", msgs, pmsgs, want)
	}
	p.exit(t)
}

// runEventDriver runs a driver script, waits for its "ready resp=N",
// takes and releases a lock, and checks what the driver printed.
func runEventDriver(t *testing.T, resp string, env []string, name string, args ...string) {
	t.Helper()
	srv := startServer(t)
	lock := "ev:" + strings.ReplaceAll(t.Name(), "/", ":")
	cmd := exec.Command(name, append(args, lock)...)
	cmd.Env = append(append(os.Environ(), "RELOCK_ADDR="+srv.Addr), env...)
	p := startEventLines(t, cmd)
	if got := p.next(t, 15*time.Second); got != "ready resp="+resp {
		t.Fatalf("driver printed %q; want ready resp=%s", got, resp)
	}
	fence := lockAndUnlock(t, srv, lock)
	checkDriverLines(t, p, lock, wantPayloads(fence))
}

func TestEvents_RedisPy(t *testing.T) {
	t.Parallel()
	py := needPythonRedis(t)
	runEventDriver(t, "2", nil, py, filepath.Join("testdata", "events", "redis_py.py"))
}

func TestEvents_NodeRedis(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ module, resp string }{{"redis", "3"}, {"redis4", "2"}} {
		t.Run(tt.module, func(t *testing.T) {
			node, modules := needNodeModule(t, tt.module)
			runEventDriver(t, tt.resp, []string{"NODE_PATH=" + modules}, node, filepath.Join("testdata", "events", "node_redis.cjs"), tt.module)
		})
	}
}

func TestEvents_IORedis(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ module, resp string }{{"ioredis", "3"}, {"ioredis5", "2"}} {
		t.Run(tt.module, func(t *testing.T) {
			node, modules := needNodeModule(t, tt.module)
			runEventDriver(t, tt.resp, []string{"NODE_PATH=" + modules}, node, filepath.Join("testdata", "events", "ioredis.cjs"), tt.module)
		})
	}
}

// TestEvents_RedisCLI: `redis-cli SUBSCRIBE` and `redis-cli PSUBSCRIBE`,
// RESP2 and RESP3 (-3), print the events; on a pipe redis-cli prints each
// element of a message on a line of its own.
func TestEvents_RedisCLI(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "redis-cli")
	srv := startServer(t)
	for _, proto := range []string{"-2", "-3"} {
		name := "cli" + proto
		channel := "__lock__:" + name
		sub := startEventLines(t, exec.Command(bin, proto, "-h", "127.0.0.1", "-p", srv.Port(), "SUBSCRIBE", channel))
		psub := startEventLines(t, exec.Command(bin, proto, "-h", "127.0.0.1", "-p", srv.Port(), "PSUBSCRIBE", channel+"*"))
		expectCLILines(t, sub, "subscribe", channel, "1")
		expectCLILines(t, psub, "psubscribe", channel+"*", "1")
		fence := lockAndUnlock(t, srv, name)
		for _, payload := range wantPayloads(fence) {
			expectCLILines(t, sub, "message", channel, payload)
			expectCLILines(t, psub, "pmessage", channel+"*", channel, payload)
		}
	}
}

// expectCLILines reads len(want) lines of redis-cli and compares them.
func expectCLILines(t *testing.T, p *eventLines, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := p.next(t, 10*time.Second); got != w {
			t.Fatalf("redis-cli printed %q; want %q (of %q)", got, w, want)
		}
	}
}

// TestEvents_GoRedis: go-redis's Subscribe and PSubscribe, with its
// default options (RESP3: pushes) and with Protocol 2 (subscribed mode).
func TestEvents_GoRedis(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for _, proto := range []int{3, 2} {
		name := "gr" + itoa(proto)
		channel := "__lock__:" + name
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: proto})
		t.Cleanup(func() { rdb.Close() })
		ctx := ctxFor(t, 20*time.Second)
		ps := rdb.Subscribe(ctx, channel)
		t.Cleanup(func() { ps.Close() })
		if err := ps.PSubscribe(ctx, channel+"*"); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"subscribe: " + channel, "psubscribe: " + channel + "*"} {
			msg, err := ps.Receive(ctx)
			if err != nil {
				t.Fatalf("RESP%d: %v", proto, err)
			}
			if s, ok := msg.(*redis.Subscription); !ok || s.String() != want {
				t.Fatalf("RESP%d: %#v; want %s", proto, msg, want)
			}
		}
		fence := lockAndUnlock(t, srv, name)
		var msgs, pmsgs []string
		for len(msgs)+len(pmsgs) < 6 {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			m, err := ps.ReceiveMessage(rctx)
			cancel()
			if err != nil {
				t.Fatalf("RESP%d: %v after %q and %q", proto, err, msgs, pmsgs)
			}
			if m.Channel != channel {
				t.Fatalf("RESP%d: a message on %q", proto, m.Channel)
			}
			switch m.Pattern {
			case "":
				msgs = append(msgs, m.Payload)
			case channel + "*":
				pmsgs = append(pmsgs, m.Payload)
			default:
				t.Fatalf("RESP%d: a message for pattern %q", proto, m.Pattern)
			}
		}
		want := strings.Join(wantPayloads(fence), "|")
		if strings.Join(msgs, "|") != want || strings.Join(pmsgs, "|") != want {
			t.Fatalf("RESP%d: SUBSCRIBE got %q, PSUBSCRIBE got %q; want %s each", proto, msgs, pmsgs, want)
		}
		// Outside __lock__: an error reply.
		bad := rdb.Subscribe(ctx, "news")
		_, err := bad.Receive(ctx)
		var rerr redis.Error
		if !errors.As(err, &rerr) || !strings.HasPrefix(err.Error(), "ERR ") {
			t.Errorf("RESP%d: SUBSCRIBE news: %v; want an ERR reply", proto, err)
		}
		bad.Close()
	}
}
