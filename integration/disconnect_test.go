package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A crashed client's locks are released when its connection closes
// (docs/protocol.md). These tests crash a real process: the test binary re-executed
// as a child (TestHelperProcess) that takes locks, and is then SIGKILLed.

const (
	// helperEnv holds the server address in a child process; its presence
	// makes the test binary a helper (TestMain builds nothing).
	helperEnv = "RELOCK_IT_HELPER_ADDR"
	// helperLocksEnv lists the locks the child LOCKs, comma-separated.
	helperLocksEnv = "RELOCK_IT_HELPER_LOCKS"
)

// TestHelperProcess is not a test: run as a child with helperEnv set, it
// connects, prints "ID <client id>", LOCKs each lock of helperLocksEnv
// printing "KEY <name> <key>", prints "READY", and then blocks until its
// stdin closes (the parent's end) or a minute passes.
func TestHelperProcess(t *testing.T) {
	addr := os.Getenv(helperEnv)
	if addr == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, ReadTimeout: -1, ContextTimeoutEnabled: true})
	id, err := c.ClientID(ctx).Result()
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("ID", id)
	for _, name := range strings.Split(os.Getenv(helperLocksEnv), ",") {
		key, err := c.Do(ctx, "LOCK", name).Text()
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println("KEY", name, key)
	}
	fmt.Println("READY")
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	<-ctx.Done()
	os.Exit(0)
}

// child is a helper process started by startChild.
type child struct {
	cmd   *exec.Cmd
	lines chan string // its stdout, line by line
}

// startChild starts the helper process taking locks on srv. It is killed
// and waited for when the test ends.
func startChild(t *testing.T, srv *server, locks ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+srv.Addr, helperLocksEnv+"="+strings.Join(locks, ","))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, lines: make(chan string, 16)}
	go func() {
		defer close(ch.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return ch
}

// expect reads the child's next output line, which must start with prefix,
// and returns the rest of it.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			t.Fatalf("child exited; want %q", prefix)
		}
		rest, found := strings.CutPrefix(line, prefix)
		if !found {
			t.Fatalf("child printed %q; want %q", line, prefix)
		}
		return strings.TrimSpace(rest)
	case <-time.After(10 * time.Second):
		t.Fatalf("child printed nothing within 10s; want %q", prefix)
		return ""
	}
}

// TestDisconnect_KilledHolderReleasesWithin100ms: kill -9 of a client
// process releases its locks, and the next waiter is granted, within
// 100 ms of the kill. Not parallel: it is timed.
func TestDisconnect_KilledHolderReleasesWithin100ms(t *testing.T) {
	srv := startServer(t)
	ctx := ctxFor(t, 30*time.Second)
	admin, waiter := srv.client(t), srv.client(t)

	ch := startChild(t, srv, "crash-a", "crash-b")
	childID := ch.expect(t, "ID ")
	ch.expect(t, "KEY crash-a ")
	ch.expect(t, "KEY crash-b ")
	ch.expect(t, "READY")
	for _, name := range []string{"crash-a", "crash-b"} {
		if l, _ := lockOf(t, admin, name); len(l.Holders) != 1 || itoa(int(l.Holders[0].ClientID)) != childID {
			t.Fatalf("LOCKS %s = %+v; want held by the child (client %s)", name, l, childID)
		}
	}
	granted := lockAsync(ctx, waiter, "crash-a")
	waitForWaiters(t, admin, "crash-a", 1)

	killed := time.Now()
	if err := ch.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	g := awaitGrant(t, granted, 5*time.Second)
	if d := g.at.Sub(killed); d >= 100*time.Millisecond {
		t.Errorf("waiter granted %v after kill -9 of the holder; want < 100ms", d)
	} else {
		t.Logf("waiter granted %v after kill -9 of the holder", d)
	}
	if _, held := lockOf(t, admin, "crash-b"); held {
		t.Errorf("crash-b still held %v after the kill", time.Since(killed))
	}
	if got := infoField(t, admin, "releases_disconnect"); got != "2" {
		t.Errorf("INFO releases_disconnect = %s; want 2", got)
	}
	mustUnlock(t, waiter, "crash-a", g.key)
}

// TestDisconnect_KilledWaiterLeavesQueueWithin100ms: kill -9 of a client
// blocked in LOCK takes it out of the queue within 100 ms, and it is never
// granted. Not parallel: it is timed.
func TestDisconnect_KilledWaiterLeavesQueueWithin100ms(t *testing.T) {
	srv := startServer(t)
	admin, holder := srv.client(t), srv.client(t)
	key := mustLock(t, holder, "LOCK", "crash-w")

	ch := startChild(t, srv, "crash-w")
	childID := ch.expect(t, "ID ")
	eventually(t, 10*time.Second, func() bool {
		return slices.Equal(waiterIDs(t, admin, "crash-w"), []int64{int64(atoi(t, childID))})
	}, "the child never queued for crash-w")

	killed := time.Now()
	if err := ch.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() bool { return len(waiterIDs(t, admin, "crash-w")) == 0 },
		"the killed waiter is still queued")
	if d := time.Since(killed); d >= 100*time.Millisecond {
		t.Errorf("killed waiter left the queue %v after kill -9; want < 100ms", d)
	} else {
		t.Logf("killed waiter left the queue within %v", d)
	}
	mustUnlock(t, holder, "crash-w", key)
	if got := dbsize(t, admin); got != 0 {
		t.Errorf("DBSIZE = %d; the killed waiter must never be granted", got)
	}
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}
