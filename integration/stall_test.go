package integration

import (
	"bufio"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// No client stalls others. Each test runs an attack while another,
// authenticated client PINGs and measures how long each PING takes: a
// correct server answers within a few milliseconds, the bugs these tests
// pin took 100×–10,000× longer, so the thresholds are generous.

// stallProbe PINGs srv from a connection of its own every millisecond
// until stop is closed (or 60 s, or 20,000 PINGs) and returns the
// slowest round trip.
func stallProbe(t testing.TB, srv *server, pass string, stop <-chan struct{}) (worst func() time.Duration) {
	t.Helper()
	c := dialRaw(t, srv)
	if pass != "" {
		if got := c.do(t, "AUTH", pass); got != "+OK\r\n" {
			t.Fatalf("AUTH = %q", got)
		}
	}
	var mu sync.Mutex
	var max time.Duration
	done := make(chan struct{})
	quit := make(chan struct{})
	t.Cleanup(func() { // before c is closed: cleanups run last first
		close(quit)
		<-done
	})
	go func() {
		defer close(done)
		deadline := time.Now().Add(60 * time.Second)
		for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			case <-quit:
				return
			case <-time.After(time.Millisecond):
			}
			start := time.Now()
			if err := c.send("PING"); err != nil {
				return
			}
			if got, err := c.read(); err != nil || got != "+PONG\r\n" {
				t.Errorf("PING = %q, %v", got, err)
				return
			}
			mu.Lock()
			max = maxDuration(max, time.Since(start))
			mu.Unlock()
		}
	}()
	return func() time.Duration {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return max
	}
}

func maxDuration(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// stallBound is the slowest PING a test accepts while an attack runs: far
// above a correct server's few ms (under -race, beside the rest of the
// suite on a shared 2-core machine), far below the 5 s and more that the
// bugs caused here.
const stallBound = time.Second

// Wrong passwords are checked off the event loop: 40 pipelined AUTHs for
// an unknown user (a bcrypt check each, ~60 ms) on a connection of the
// same loop do not delay another client's PING. They are answered in
// order, each with -WRONGPASS, later and later after the first few.
func TestStall_AUTHFloodDoesNotStallOtherClients(t *testing.T) {
	t.Parallel()
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			t.Parallel()
			// One loop: the attacker and the prober share it.
			srv := startServer(t, "--requirepass", "s3cret", "--event-loops", "1", "--io", io, "--auth-timeout", "5m")
			stop := make(chan struct{})
			worst := stallProbe(t, srv, "s3cret", stop)
			attacker := dialRaw(t, srv)
			const n = 40
			var req []byte
			for range n {
				req = append(req, encodeCommand("AUTH", "nosuchuser", "guess")...)
			}
			if _, err := attacker.Write(req); err != nil {
				t.Fatal(err)
			}
			// Each check takes ~60 ms (seconds under -race), and after the
			// first few they are rate-limited: probe until three have
			// failed. (The goroutine path answers a pipelined batch at
			// its end, so replies are not what to wait for.)
			admin := srv.client(t, func(o *redis.Options) { o.Password = "s3cret" })
			eventually(t, 90*time.Second, func() bool {
				n, _ := strconv.Atoi(infoField(t, admin, "auth_failures"))
				return n >= 3
			}, "the wrong AUTHs were not checked")
			close(stop)
			if w := worst(); w > stallBound {
				t.Errorf("while 40 wrong AUTHs were checked, another client's PING took %v (want < %v)", w, stallBound)
			}
		})
	}
}

// A request the configured limits allow is answered on every transport,
// however much larger it is than the loop's usual input bound (1 MiB):
// here a 3 MiB ECHO with --max-arg-bytes 4 MiB.
func TestLimit_LargeRequestWithinLimitsIsAnswered(t *testing.T) {
	t.Parallel()
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, "--max-arg-bytes", strconv.Itoa(4<<20), "--io", io)
			c := dialRaw(t, srv)
			msg := strings.Repeat("x", 3<<20)
			done := make(chan error, 1)
			go func() { done <- c.send("ECHO", msg) }()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			got, err := readReply(c.r)
			if err != nil {
				t.Fatalf("a 3 MiB ECHO allowed by --max-arg-bytes was not answered: %v", err)
			}
			if want := "$" + strconv.Itoa(len(msg)) + "\r\n" + msg + "\r\n"; got != want {
				t.Fatalf("ECHO of 3 MiB answered %d bytes, want %d", len(got), len(want))
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Before it authenticates a connection may send only small requests
// (as Redis bounds unauthenticated requests): a larger one is a protocol
// error that closes it, and once authenticated the configured limits
// apply.
func TestLimit_UnauthenticatedRequestsAreSmall(t *testing.T) {
	t.Parallel()
	for _, io := range []string{"auto", "goroutine"} {
		t.Run(io, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, "--requirepass", "s3cret", "--io", io)
			c := dialRaw(t, srv)
			if err := c.send("AUTH", "default", strings.Repeat("p", 20000)); err != nil {
				t.Fatal(err)
			}
			got, err := c.read()
			if err != nil || !strings.HasPrefix(got, "-ERR Protocol error: unauthenticated request too large") {
				t.Fatalf("a 20 kB unauthenticated request = %q, %v; want a protocol error", got, err)
			}
			c.expectClosed(t)

			c = dialRaw(t, srv)
			if got := c.do(t, "AUTH", "s3cret"); got != "+OK\r\n" {
				t.Fatalf("AUTH = %q", got)
			}
			big := strings.Repeat("y", 20000)
			if got := c.do(t, "ECHO", big); got != "$20000\r\n"+big+"\r\n" {
				t.Fatalf("ECHO of 20 kB after AUTH = %.40q", got)
			}
		})
	}
}

// Unauthenticated connections that pipeline requests and never read the
// replies cost the server a few kB each, not megabytes: 150 of them grow
// its resident memory by far less than 150 × 1 MiB.
func TestLimit_UnauthenticatedConnectionsCannotMakeTheServerBuffer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--requirepass", "s3cret")
	before := serverRSS(t, srv)
	const conns = 150
	// PING with an 8 kB message: allowed before AUTH, cheap to run, and
	// its reply is as large as the request.
	ping := encodeCommand("PING", strings.Repeat("p", 8<<10))
	burst := []byte(strings.Repeat(string(ping), (256<<10)/len(ping)))
	var wg sync.WaitGroup
	for range conns {
		nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Write until the server stops reading (bounded: 8 MiB or 5 s).
			nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			for range 32 {
				if _, err := nc.Write(burst); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	// The last requests written are in the server's hands: wait until its
	// memory is steady (bounded), then measure.
	var after int64
	prev := int64(-1)
	eventually(t, 10*time.Second, func() bool {
		after = serverRSS(t, srv)
		steady := after == prev
		prev = after
		if !steady {
			time.Sleep(200 * time.Millisecond) // sampling interval, not synchronization
		}
		return steady
	}, "server memory never settled")
	grew := after - before
	t.Logf("RSS %d kB before, %d kB after %d unauthenticated flooders (%d kB each)", before>>10, after>>10, conns, grew/conns>>10)
	if grew > conns*(256<<10) {
		t.Errorf("%d unauthenticated connections grew the server by %d MiB (%d kB each); want < 256 kB each",
			conns, grew>>20, grew/conns>>10)
	}
	// The server still serves.
	c := dialRaw(t, srv)
	if got := c.do(t, "AUTH", "s3cret"); got != "+OK\r\n" {
		t.Fatalf("AUTH after the flood = %q", got)
	}
}

// serverRSS returns the server process's resident memory in bytes.
func serverRSS(t testing.TB, srv *server) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(srv.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// CLIENT KILL of connections accepted a moment ago (an admin killing by
// id as fast as new connections arrive) never crashes the server: a
// kill may reach the connection's loop before the loop has served it.
func TestClientKill_ConnectionAcceptedAMomentAgo(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "2")
	admin := dialRaw(t, srv)
	first, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(admin.do(t, "CLIENT", "ID"), ":")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		for range n {
			nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
			if err != nil {
				return
			}
			nc.Close()
		}
	}()
	// Kill ids as they come: each new connection takes the next id.
	var req []byte
	for id := first + 1; id <= first+n; id++ {
		req = append(req, encodeCommand("CLIENT", "KILL", "ID", strconv.FormatInt(id, 10))...)
	}
	for i := 0; i < len(req); i += 256 {
		if _, err := admin.Write(req[i:min(i+256, len(req))]); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if _, err := admin.read(); err != nil {
			t.Fatalf("CLIENT KILL reply: %v (did the server crash?)\n%s", err, srv.logText())
		}
	}
	<-dialed
	if got := dialRaw(t, srv).do(t, "PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after the kills = %q", got)
	}
}

// fill takes n detached locks named prefix0…prefixN-1 with ttl (ms),
// pipelined in batches on one connection, and fails unless each is
// granted.
func fill(t testing.TB, srv *server, prefix string, n, ttl int) {
	t.Helper()
	c := dialRaw(t, srv)
	const batch = 1000
	for i := 0; i < n; i += batch {
		var req []byte
		m := min(batch, n-i)
		for j := range m {
			req = append(req, encodeCommand("LOCK", prefix+strconv.Itoa(i+j), "TTL", strconv.Itoa(ttl), "DETACH")...)
		}
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		for range m {
			got, err := readReply(c.r)
			if err != nil || !keyRE.MatchString(got) {
				t.Fatalf("LOCK = %q, %v", got, err)
			}
		}
	}
}

// Paging through many locks costs each page its own size, not the
// table's: 20 pipelined one-lock pages over 100k locks do not delay
// another client's PING, and they page correctly.
func TestStall_LOCKSPagesDoNotStallOtherClients(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "1")
	const n = 100_000
	fill(t, srv, "page:", n, 600_000)
	names := make([]string, n)
	for i := range names {
		names[i] = "page:" + strconv.Itoa(i)
	}
	sort.Strings(names)
	stop := make(chan struct{})
	worst := stallProbe(t, srv, "", stop)
	c := dialRaw(t, srv)
	const pages = 20
	var req []byte
	for i := range pages {
		req = append(req, encodeCommand("LOCKS", "COUNT", "1", "AFTER", "page:"+strconv.Itoa(50_000+i))...)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := range pages {
		got, err := readReply(c.r)
		if err != nil {
			t.Fatal(err)
		}
		after := "page:" + strconv.Itoa(50_000+i)
		want := names[sort.SearchStrings(names, after)+1]
		if !strings.Contains(got, "\r\n"+want+"\r\n") {
			t.Fatalf("page %d = %.120q; want the lock %s", i, got, want)
		}
	}
	// A glob with no literal prefix examines every name, in steps.
	var matching []string
	for _, name := range names {
		if strings.HasSuffix(name, "999") {
			matching = append(matching, name)
		}
	}
	req = nil
	for range 5 {
		req = append(req, encodeCommand("LOCKS", "MATCH", "*999", "COUNT", "50")...)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		got, err := readReply(c.r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "*50\r\n") || !strings.Contains(got, "\r\n"+matching[0]+"\r\n") ||
			!strings.Contains(got, "\r\n"+matching[49]+"\r\n") || strings.Contains(got, "\r\n"+matching[50]+"\r\n") {
			t.Fatalf("LOCKS MATCH *999 COUNT 50 = %.200q; want %s … %s", got, matching[0], matching[49])
		}
	}
	close(stop)
	if w := worst(); w > stallBound {
		t.Errorf("while LOCKS pages were served over %d locks, another client's PING took %v (want < %v)", n, w, stallBound)
	}
}

// Mass expiry costs each expired hold O(log n), whatever the number of
// shards, and does not hold the server while it runs: 10k holds expiring
// together with --shards 4096 do not delay another client's PING (they
// stalled it for seconds, cost holds × shards).
func TestStall_MassExpiryDoesNotStallOtherClients(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--event-loops", "1", "--shards", "4096")
	const n = 10_000
	start := time.Now()
	const ttl = 20_000
	fill(t, srv, "exp:", n, ttl)
	if time.Since(start) > ttl*time.Millisecond/2 {
		t.Fatalf("taking %d locks took %v: too slow to watch them expire", n, time.Since(start))
	}
	stop := make(chan struct{})
	worst := stallProbe(t, srv, "", stop)
	admin := srv.client(t)
	eventually(t, 60*time.Second, func() bool {
		return infoField(t, admin, "locks") == "0"
	}, "the holds did not expire")
	close(stop)
	if time.Since(start) < ttl*time.Millisecond {
		t.Fatal("the holds expired before their TTL")
	}
	if w := worst(); w > stallBound {
		t.Errorf("while %d holds expired, another client's PING took %v (want < %v)", n, w, stallBound)
	}
}
