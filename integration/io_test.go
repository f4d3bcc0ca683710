package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite runs on the event loops (plain TCP on Linux). These tests
// stress what is particular to them, and re-run the transport-sensitive
// tests on the goroutine-per-connection path (--io goroutine), which TLS,
// clusters and --fsync always take.

// ioEnv, set in a child test process, makes every server it starts use
// that --io mode (kong reads RELOCK_IO).
const ioEnv = "RELOCK_IO"

func TestIO_GoroutineTransportPassesTheTransportTests(t *testing.T) {
	if os.Getenv(ioEnv) != "" || os.Getenv(engineEnv) != "" {
		t.Skip("in the child")
	}
	t.Parallel()
	// Every lock semantics test (TestLock_*) and the named ones.
	if out := runChildTests(t, ioEnv+"=goroutine", 3*time.Minute, []string{"TestLock_[A-Za-z]+"}); strings.Count(out, "--- PASS: TestLock_") < 9 {
		t.Errorf("too few lock semantics tests passed with --io goroutine:\n%s", out)
	}
	tests := []string{
		"TestLock_WaitersGrantedInFIFOOrder",
		"TestLock_DisconnectedWaiterIsSkipped",
		"TestLock_WaitTimeoutReturnsNilAndLeavesQueue",
		"TestLock_BlockedLockBlocksOnlyItsConnection",
		"TestClientKill_ReleasesVictimHolds",
		"TestServer_StopsWithBlockedLock",
		"TestDisconnect_KilledHolderReleasesWithin100ms",
		"TestDisconnect_KilledWaiterLeavesQueueWithin100ms",
		"TestLimit_RequestBoundsAreProtocolErrors",
		"TestConformance_RESP2",
		"TestConformance_RESP3",
		"TestConformance_MalformedRequests",
		"TestConformance_Limits",
		"TestIO_DeepPipelineToASlowReaderAnsweredInOrder",
		"TestIO_HandoffsBetweenConnectionsOfDifferentLoops",
		"TestIO_UnixSocket",
		"TestEvents_EveryReasonInOrder",
		"TestEvents_SubscriptionReplies",
	}
	out := runChildTests(t, ioEnv+"=goroutine", 3*time.Minute, tests)
	for _, name := range tests {
		if !strings.Contains(out, "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass with --io goroutine:\n%s", name, out)
		}
	}
}

// runChildTests runs the tests matching the names (regular expressions) in
// a child test process with env set, against the same binary, and fails
// the test if any fails; it returns the child's verbose output.
func runChildTests(t *testing.T, env string, within time.Duration, names []string) string {
	t.Helper()
	return runChildTestsIn(t, nil, env, within, names)
}

// runChildTestsIn is runChildTests with the child run under a command
// (wrap, e.g. unshare into a network namespace of its own).
func runChildTestsIn(t *testing.T, wrap []string, env string, within time.Duration, names []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	args := append(append(wrap[:len(wrap):len(wrap)], os.Args[0]), "-test.run", "^("+strings.Join(names, "|")+")$", "-test.count=1", "-test.v")
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env, binEnv+"="+relockBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("with %s: %v\n%s", env, err, out)
	}
	return string(out)
}

// The protocol conformance tables and the lock semantics tests, re-run
// with every server a one-node Raft cluster: the same commands through
// the Raft engine, served by the same event loops (commands that propose
// run off the loop).
func TestEngine_RaftPassesTheEngineTests(t *testing.T) {
	if os.Getenv(ioEnv) != "" || os.Getenv(engineEnv) != "" {
		t.Skip("in the child")
	}
	t.Parallel()
	tests := []string{
		"TestConformance_RESP2",
		"TestConformance_RESP3",
		"TestConformance_MalformedRequests",
		"TestConformance_Limits",
		"TestLock_[A-Za-z]+",
		"TestDisconnect_[A-Za-z]+",
		"TestClientKill_ReleasesVictimHolds",
		"TestEvents_EveryReasonInOrder",
		"TestEvents_SubscriptionReplies",
		"TestLockDelay_DisconnectKeepsTheLockForTheDelay",
		"TestLockDelay_UnlockAndForceUnlockNeverDelay",
		"TestShared_[A-Za-z]+",
		"TestMulti_[A-Za-z]+",
	}
	out := runChildTests(t, engineEnv+"=raft", 4*time.Minute, tests)
	if n := strings.Count(out, "--- PASS: Test"); n < 10 {
		t.Errorf("only %d tests passed with the Raft engine:\n%s", n, out)
	}
}

// A client pipelines far more than the loop buffers (its input stops
// being read past a bound, its output stops being produced past another)
// and reads through a small socket buffer, so that the server's writes
// come back short: every reply still arrives, once, in order.
func TestIO_DeepPipelineToASlowReaderAnsweredInOrder(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "2")
	nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(64 << 10) // much smaller ones can stall loopback TCP itself (Redis too)
	deadline := time.Now().Add(60 * time.Second)
	nc.SetDeadline(deadline)

	const n = 40000
	pad := strings.Repeat("x", 100)
	writeErr := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(nc, 64<<10)
		for i := range n {
			w.Write(encodeCommand("ECHO", strconv.Itoa(i)+pad))
		}
		writeErr <- w.Flush()
	}()
	r := bufio.NewReader(nc)
	for i := range n {
		got, err := readReply(r)
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i, n, err)
		}
		arg := strconv.Itoa(i) + pad
		if want := "$" + strconv.Itoa(len(arg)) + "\r\n" + arg + "\r\n"; got != want {
			t.Fatalf("reply %d = %.40q; want %.40q", i, got, want)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writing the pipeline: %v", err)
	}
	// The connection still serves, and the server is intact.
	c := &rawConn{Conn: nc, r: r}
	if got := c.do(t, "PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after the pipeline = %q", got)
	}
}

// Connections are spread over the loops in turn; a lock passes between
// them with every handoff answered (grants cross loops through their
// inboxes), fences strictly increasing along the handoffs.
func TestIO_HandoffsBetweenConnectionsOfDifferentLoops(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "3")
	const clients, rounds = 6, 40
	var (
		mu     sync.Mutex
		fences []uint64
	)
	errs := make(chan error, clients)
	for range clients {
		c := dialRaw(t, srv)
		go func() {
			errs <- func() error {
				for range rounds {
					key, err := roundTrip(c, "LOCK", "relay", "WAIT", "20000")
					if err != nil || !keyRE.MatchString(key) {
						return fmt.Errorf("LOCK = %q, %v", key, err)
					}
					k := strings.TrimSpace(key[strings.Index(key, "\n")+1:])
					fence, _ := strconv.ParseUint(k[:strings.IndexByte(k, '-')], 10, 64)
					// Appended while holding the lock: in grant order.
					mu.Lock()
					fences = append(fences, fence)
					mu.Unlock()
					if got, err := roundTrip(c, "UNLOCK", "relay", k); err != nil || got != ":1\r\n" {
						return fmt.Errorf("UNLOCK = %q, %v", got, err)
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(fences) != clients*rounds {
		t.Fatalf("%d grants; want %d", len(fences), clients*rounds)
	}
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Fatalf("fence %d = %d after %d: not increasing", i, fences[i], fences[i-1])
		}
	}
}

// roundTrip sends one command on a raw connection and reads its reply.
func roundTrip(c *rawConn, args ...string) (string, error) {
	if err := c.send(args...); err != nil {
		return "", err
	}
	return c.read()
}

// Unix-socket connections are served like TCP ones and named by the
// socket in CLIENT LIST; a holder's disconnect releases.
func TestIO_UnixSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relock.sock")
	srv := startServer(t, "--unix-socket", path)
	holder := dialRawAt(t, "unix", path)
	if got := holder.do(t, "LOCK", "u", "TTL", "60000"); !keyRE.MatchString(got) {
		t.Fatalf("LOCK over the unix socket = %q", got)
	}
	list := dialRawAt(t, "unix", path).do(t, "CLIENT", "LIST")
	if !strings.Contains(list, "addr=/unix:"+path) {
		t.Errorf("CLIENT LIST does not name the socket %s:\n%s", path, list)
	}
	holder.Close()
	tcp := srv.client(t)
	eventually(t, 5*time.Second, func() bool {
		_, held := lockOf(t, tcp, "u")
		return !held
	}, "the unix-socket holder's disconnect did not release u")
}

// A commit that fails is never acknowledged. The third commit is made to
// fail (RELOCK_FAILPOINT=before-fsync:3:error): the replies of the round
// are already composed, so the connection waiting on it is closed
// unanswered and its hold released, on either transport. The server goes
// on, the lock is free, and the holds acknowledged before are kept.
func TestCommit_FailedCommitIsNeverAcknowledged(t *testing.T) {
	t.Parallel()
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			t.Parallel()
			srv := startServerEnv(t, []string{"RELOCK_FAILPOINT=before-fsync:3:error"},
				"--data-dir", t.TempDir(), "--fsync", "always", "--io", io)
			c1, c2, c3 := dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)
			for i, c := range []*rawConn{c1, c2} {
				if got := c.do(t, "LOCK", "f"+strconv.Itoa(i+1)); !keyRE.MatchString(got) {
					t.Fatalf("LOCK f%d = %q", i+1, got)
				}
			}
			// The third commit fails.
			if err := c3.send("LOCK", "f3"); err != nil {
				t.Fatal(err)
			}
			if got, err := c3.read(); err == nil {
				t.Fatalf("LOCK whose commit failed was answered %q; want the connection closed", got)
			}
			admin := srv.client(t)
			if n := infoField(t, admin, "commit_errors"); n != "1" {
				t.Errorf("commit_errors = %s; want 1", n)
			}
			eventually(t, 5*time.Second, func() bool {
				_, held := lockOf(t, admin, "f3")
				return !held
			}, "f3, whose grant was never acknowledged, is still held")
			for _, name := range []string{"f1", "f2"} {
				if _, held := lockOf(t, admin, name); !held {
					t.Errorf("%s, acknowledged before the failure, is not held", name)
				}
			}
			// The next commits succeed (the store rewrites its state).
			c4 := dialRaw(t, srv)
			if got := c4.do(t, "LOCK", "f3"); !keyRE.MatchString(got) {
				t.Fatalf("LOCK f3 after the failure = %q", got)
			}
		})
	}
}
