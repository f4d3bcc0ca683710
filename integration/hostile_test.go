package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Hostile input: malformed frames, huge lengths, binary names, deep
// pipelines, slowloris, connection churn. After each the server still
// answers, its memory stays bounded and no hold leaks.

// maxRSSGrowthKB bounds how much the server's resident memory may grow
// over the whole test (the race detector's shadow memory included). A
// 512 MB bulk header that was honoured would blow it at once.
const maxRSSGrowthKB = 96 << 10

func TestHostile_ServerSurvivesAndLeaksNothing(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	admin := srv.client(t)
	pid := infoField(t, admin, "process_id")
	base := vmRSS(t, admin)
	checkRSS := func(phase string) {
		t.Helper()
		if rss := vmRSS(t, admin); rss-base > maxRSSGrowthKB {
			t.Fatalf("after %s VmRSS is %d kB, %d kB over the %d kB at start", phase, rss, rss-base, base)
		}
	}
	// healthy checks that the server answers, holds nothing and has no
	// connection but admin's (each phase closes its own first).
	healthy := func(phase string) {
		t.Helper()
		if got := infoField(t, admin, "process_id"); got != pid {
			t.Fatalf("after %s the server is another process (%s, was %s)", phase, got, pid)
		}
		mustUnlock(t, admin, "health", mustLock(t, admin, "TRYLOCK", "health"))
		leaked := func() string {
			return fmt.Sprintf("DBSIZE %d, holds %s, waiters %s, connected_clients %s", dbsize(t, admin),
				infoField(t, admin, "holds"), infoField(t, admin, "waiters"), infoField(t, admin, "connected_clients"))
		}
		eventually(t, 5*time.Second, func() bool { return leaked() == "DBSIZE 0, holds 0, waiters 0, connected_clients 1" },
			"after %s something leaked", phase)
		checkRSS(phase)
		t.Logf("after %s: %s, VmRSS %d kB (%d kB at start)", phase, leaked(), vmRSS(t, admin), base)
	}

	t.Run("malformed frames", func(t *testing.T) {
		protocolErr := `-ERR Protocol error: .+\r\n`
		tests := []struct {
			raw    string
			reply  string // regexp of the first reply
			closed bool   // then the server closes the connection
		}{
			{"*1\r\n$abc\r\n", `-ERR Protocol error: invalid bulk length\r\n`, true},
			{"*abc\r\n", `-ERR Protocol error: invalid multibulk length\r\n`, true},
			{"*2\r\n$4\r\nPING\r\n:5\r\n", `-ERR Protocol error: expected '\$'\r\n`, true},
			{"*1\r\n$4\r\nPINGxx\r\n", protocolErr, true},
			{"*-1\r\nPING\r\n", `\+PONG\r\n`, false}, // an empty multibulk is ignored, as in Redis
			{"*0\r\nPING\r\n", `\+PONG\r\n`, false},
			{"\"unbalanced\r\n", protocolErr, true},
			{"*" + strings.Repeat("7", 40) + "\r\n", `-ERR Protocol error: invalid length header\r\n`, true},
			{"\x00\x01\x02\xff\r\n", `-ERR unknown command .*\r\n`, false},
			{"LOCK\r\n", `-ERR wrong number of arguments for 'lock' command\r\n`, false},
			{"*1\r\n$4\r\nLOCK\r\n", `-ERR wrong number of arguments for 'lock' command\r\n`, false},
			{"*3\r\n$4\r\nLOCK\r\n$0\r\n\r\n$3\r\nTTL\r\n", `-ERR syntax error\r\n`, false},
			// Huge lengths: refused at the header, before any body. Each
			// send ends with the byte that is refused, so the server has
			// read everything and the reply is not lost to a reset.
			{"*2\r\n$4\r\nECHO\r\n$536870912\r\n", `-ERR Protocol error: argument of 536870912 bytes is too large \(at most 65536\)\r\n`, true},
			{"*1\r\n$9223372036854775807\r\n", `-ERR Protocol error: argument of 9223372036854775807 bytes is too large .*\r\n`, true},
			{"*1\r\n$99999999999999999999\r\n", `-ERR Protocol error: invalid bulk length\r\n`, true},
			{"*2147483647\r\n", `-ERR Protocol error: too many arguments \(2147483647\)\r\n`, true},
			{"*1025\r\n", `-ERR Protocol error: too many arguments \(1025\)\r\n`, true},
			{strings.Repeat("x", 64<<10+1), `-ERR Protocol error: too big inline request\r\n`, true},
			{"ECHO" + strings.Repeat(" ", 1024), `-ERR Protocol error: too many arguments in inline request\r\n`, true},
		}
		for _, tt := range tests {
			c := dialRaw(t, srv)
			if _, err := c.Write([]byte(tt.raw)); err != nil {
				t.Fatalf("%.40q: write: %v", tt.raw, err)
			}
			got, err := c.read()
			if err != nil {
				t.Fatalf("%.40q: no reply: %v", tt.raw, err)
			}
			if !regexp.MustCompile(`^` + tt.reply + `$`).MatchString(got) {
				t.Errorf("%.40q: reply %q; want %s", tt.raw, got, tt.reply)
			}
			if tt.closed {
				c.expectClosed(t)
			} else if got := c.do(t, "PING"); got != "+PONG\r\n" {
				t.Errorf("%.40q: PING after it = %q", tt.raw, got)
			}
			c.Close()
		}
		healthy("malformed frames")
	})

	t.Run("memory bombs", func(t *testing.T) {
		// Requests that are small on the wire but large in the server, or
		// large within each bound: 1024 arguments of 64 KiB (64 MiB), and
		// inline lines of 32,000 words (redcon allocates the rest of the
		// line at every space: 1 GB a line). Each connection is refused
		// early; the server's memory stays bounded.
		bulk := "$65536\r\n" + strings.Repeat("x", 65536) + "\r\n"
		bombs := map[string]func(i int) string{
			"64 MiB multibulk": func(i int) string {
				if i == 0 {
					return "*1024\r\n$4\r\nECHO\r\n"
				}
				return bulk
			},
			"inline word bomb": func(i int) string {
				if i == 0 {
					return "ECHO" + strings.Repeat(" a", 32000) + "\r\n"
				}
				return ""
			},
		}
		for name, bomb := range bombs {
			var wg sync.WaitGroup
			for n := 0; n < 8; n++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
					if err != nil {
						t.Error(err)
						return
					}
					defer nc.Close()
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					// Write until the server closes (or 1024 pieces are sent).
					for i := 0; i < 1024; i++ {
						piece := bomb(i)
						if piece == "" {
							break
						}
						if _, err := nc.Write([]byte(piece)); err != nil {
							break
						}
					}
					buf := make([]byte, 4096)
					for {
						if _, err := nc.Read(buf); err != nil {
							var ne net.Error
							if errors.As(err, &ne) && ne.Timeout() {
								t.Errorf("%s: the server did not close the connection", name)
							}
							return
						}
					}
				}()
			}
			wg.Wait()
			checkRSS(name)
		}
		healthy("memory bombs")
	})

	t.Run("binary names", func(t *testing.T) {
		c := srv.client(t)
		all := make([]byte, 256)
		names := make([]string, 0, 258)
		for i := range all {
			all[i] = byte(i)
			names = append(names, string([]byte{byte(i)}))
		}
		names = append(names, string(all), "\x00"+string(all)+"\x00")
		keys := map[string]string{}
		for _, name := range names {
			keys[name] = mustLock(t, c, "TRYLOCK", name, "OWNER", name)
		}
		ls, err := readLocks(ctxFor(t, 5*time.Second), admin, "COUNT", 1000)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]string, len(ls))
		for i, l := range ls {
			got[i] = l.Name
			if len(l.Holders) != 1 || l.Holders[0].Owner != l.Name {
				t.Errorf("LOCKS %q: %+v; want one holder with the same owner", l.Name, l.Holders)
			}
		}
		want := append([]string(nil), names...)
		sort.Strings(want)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("LOCKS names differ from the %d binary names locked (got %d)", len(want), len(got))
		}
		for _, name := range names {
			if n, err := c.Do(ctxFor(t, 5*time.Second), "CHECK", name, keys[name]).Int(); err != nil || n != -1 {
				t.Errorf("CHECK %q = %d, %v", name, n, err)
			}
			mustUnlock(t, c, name, keys[name])
		}
		c.Close()
		healthy("binary names")
	})

	t.Run("10k pipelined commands", func(t *testing.T) {
		const n = 10000
		c := dialRaw(t, srv)
		var buf []byte
		for i := 0; i < n; i++ {
			switch i % 3 {
			case 0:
				buf = append(buf, encodeCommand("ECHO", strconv.Itoa(i))...)
			case 1:
				buf = append(buf, encodeCommand("TRYLOCK", "pipe:"+strconv.Itoa(i))...)
			case 2:
				buf = append(buf, encodeCommand("CHECK", "pipe:"+strconv.Itoa(i-1), "1-0000000000000000")...)
			}
		}
		// Write while reading: the replies would fill the socket buffers.
		wrote := make(chan error, 1)
		go func() {
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, err := c.Write(buf)
			wrote <- err
		}()
		for i := 0; i < n; i++ {
			got, err := c.read()
			if err != nil {
				t.Fatalf("reply %d of %d: %v", i, n, err)
			}
			var ok bool
			switch i % 3 {
			case 0:
				ok = got == "$"+strconv.Itoa(len(strconv.Itoa(i)))+"\r\n"+strconv.Itoa(i)+"\r\n"
			case 1:
				ok = keyRE.MatchString(got)
			case 2:
				ok = got == notHeld
			}
			if !ok {
				t.Fatalf("reply %d (command %d) out of order or wrong: %q", i, i%3, got)
			}
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		if got := dbsize(t, admin); got != n/3 {
			t.Errorf("DBSIZE = %d; want %d TRYLOCKs held", got, n/3)
		}
		c.Close() // its holds go with it
		healthy("10k pipelined commands")
	})

	t.Run("slowloris", func(t *testing.T) {
		// One frame a byte at a time, with small pauses (at most 45 × 2 ms).
		frame := encodeCommand("LOCK", "slow", "TTL", "60000")
		c := dialRaw(t, srv)
		for i := range frame {
			if _, err := c.Write(frame[i : i+1]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond) // the pace of the attack, not synchronisation
		}
		got, err := c.read()
		if err != nil || !keyRE.MatchString(got) {
			t.Fatalf("LOCK sent a byte at a time = %q, %v; want a key", got, err)
		}
		c.Close()

		// Many connections each hold a partial frame; others are served.
		const holders = 200
		conns := make([]*rawConn, holders)
		rests := make([][]byte, holders)
		for i := range conns {
			frame := encodeCommand("LOCK", fmt.Sprintf("loris:%03d", i), "TTL", "60000")
			cut := len(frame) - 5 - i%20
			conns[i] = dialRaw(t, srv)
			if _, err := conns[i].Write(frame[:cut]); err != nil {
				t.Fatal(err)
			}
			rests[i] = frame[cut:]
		}
		eventually(t, 5*time.Second, func() bool { return intField(t, admin, "connected_clients") == 1+holders },
			"connected_clients never reached the %d partial frames + admin", holders)
		other := srv.client(t)
		for i := 0; i < 20; i++ {
			start := time.Now()
			mustUnlock(t, other, "served", mustLock(t, other, "LOCK", "served"))
			if d := time.Since(start); d > time.Second {
				t.Errorf("a LOCK+UNLOCK took %v while %d partial frames were open", d, holders)
			}
		}
		other.Close()
		// The frames complete: every one is answered.
		for i, c := range conns {
			if _, err := c.Write(rests[i]); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range conns {
			if got, err := c.read(); err != nil || !keyRE.MatchString(got) {
				t.Fatalf("completed frame %d = %q, %v; want a key", i, got, err)
			}
			c.Close()
		}
		healthy("slowloris")
	})

	t.Run("1000 connect-disconnect cycles", func(t *testing.T) {
		const workers, cycles = 8, 125
		accepted := intField(t, admin, "total_connections_received")
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < cycles; i++ {
					if err := churn(srv.Addr, w*cycles+i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// A connection closed at once is still accepted, a moment later.
		eventually(t, 5*time.Second, func() bool { return intField(t, admin, "total_connections_received")-accepted == workers*cycles },
			"the server did not see the %d connections", workers*cycles)
		healthy("1000 connect-disconnect cycles")
	})
}

// churn runs one connect/disconnect cycle of kind i%4: close at once,
// PING, take a lock and leave without releasing it, or leave in the
// middle of a frame.
func churn(addr string, i int) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(nc)
	switch i % 4 {
	case 1:
		nc.Write(encodeCommand("PING"))
		if got, err := readReply(r); got != "+PONG\r\n" {
			return fmt.Errorf("cycle %d: PING = %q, %v", i, got, err)
		}
	case 2:
		nc.Write(encodeCommand("TRYLOCK", "churn:"+strconv.Itoa(i)))
		if got, err := readReply(r); !keyRE.MatchString(got) {
			return fmt.Errorf("cycle %d: TRYLOCK = %q, %v", i, got, err)
		}
	case 3:
		nc.Write(encodeCommand("LOCK", "churn")[:9])
	}
	return nil
}

// TestLimit_RequestBoundsAreProtocolErrors: --max-args and --max-arg-bytes
// (and the request size they imply) close the offending connection with a
// protocol error; other connections and their holds are untouched.
func TestLimit_RequestBoundsAreProtocolErrors(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-args", "20", "--max-arg-bytes", "4096")
	admin := srv.client(t)
	key := mustLock(t, admin, "LOCK", "kept", "TTL", 60000)
	big := strings.Repeat("a", 4096)
	bigBulk := "$4096\r\n" + big + "\r\n"
	// Refused requests are sent up to the byte that is refused, so that
	// nothing is left unread when the server closes (which would turn the
	// close into a reset that may overtake the reply).
	tests := []struct {
		name, raw, reply string
	}{
		{"20 arguments", string(encodeCommand(append([]string{"ECHO"}, strings.Fields(strings.Repeat("a ", 19))...)...)), wrongArity("echo")},
		{"argument of max-arg-bytes", string(encodeCommand("ECHO", big)), bigBulk},
		{"21 arguments", "*21\r\n", "-ERR Protocol error: too many arguments (21)\r\n"},
		{"argument over max-arg-bytes", "*2\r\n$4\r\nECHO\r\n$4097\r\n", "-ERR Protocol error: argument of 4097 bytes is too large (at most 4096)\r\n"},
		// 16 × max-arg-bytes in one request: its 16th big argument is refused
		// at its header.
		{"request over 16 × max-arg-bytes", "*20\r\n$4\r\nECHO\r\n" + strings.Repeat(bigBulk, 15) + "$4096\r\n", "-ERR Protocol error: request too large (more than 65536 bytes)\r\n"},
		{"inline words over max-args", "ECHO" + strings.Repeat(" a", 19) + " ", "-ERR Protocol error: too many arguments in inline request\r\n"},
	}
	for _, tt := range tests {
		c := dialRaw(t, srv)
		if _, err := c.Write([]byte(tt.raw)); err != nil {
			t.Fatal(err)
		}
		got, err := c.read()
		if err != nil || got != tt.reply {
			t.Errorf("%s: %.80q, %v; want %.80q", tt.name, got, err, tt.reply)
		}
		if strings.HasPrefix(tt.reply, "-ERR Protocol") {
			c.expectClosed(t)
		} else if got := c.do(t, "PING"); got != "+PONG\r\n" {
			t.Errorf("%s: PING after it = %q", tt.name, got)
		}
	}
	if n, err := admin.Do(ctxFor(t, 5*time.Second), "CHECK", "kept", key).Int(); err != nil || n <= 0 {
		t.Errorf("the hold of another connection: CHECK = %d, %v", n, err)
	}
	mustUnlock(t, admin, "kept", key)
}

// TestLimit_AuthTimeoutFreesSlotsTakenByIdleConnections: idle
// unauthenticated connections count against --max-clients until the auth
// timeout closes them; holders are unaffected.
func TestLimit_AuthTimeoutFreesSlotsTakenByIdleConnections(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--requirepass", "pw", "--max-clients", "3", "--auth-timeout", "300ms")
	holder := dialRaw(t, srv)
	if got := holder.do(t, "AUTH", "pw"); got != ok {
		t.Fatalf("AUTH = %q", got)
	}
	key := holder.do(t, "LOCK", "held", "TTL", "60000")
	if !keyRE.MatchString(key) {
		t.Fatalf("LOCK = %q", key)
	}
	idle1, idle2 := dialRaw(t, srv), dialRaw(t, srv)
	over := dialRaw(t, srv)
	if got, err := over.read(); err != nil || got != "-LIMIT max number of clients reached\r\n" {
		t.Fatalf("the 4th connection got %q, %v; want -LIMIT", got, err)
	}
	over.expectClosed(t)
	idle1.expectClosed(t)
	idle2.expectClosed(t)
	eventually(t, 5*time.Second, func() bool {
		nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
		if err != nil {
			return false
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write(encodeCommand("AUTH", "pw"))
		got, _ := readReply(bufio.NewReader(nc))
		return got == ok
	}, "no slot after the idle connections were closed")
	k := keyRE.FindStringSubmatch(key)[1]
	if got := holder.do(t, "CHECK", "held", k); !regexp.MustCompile(`^:\d+\r\n$`).MatchString(got) {
		t.Errorf("the holder's CHECK = %q; want its hold", got)
	}
}

// intField returns a numeric INFO field.
func intField(t testing.TB, c *redis.Client, field string) int {
	t.Helper()
	v := infoField(t, c, field)
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("INFO %s = %q: %v", field, v, err)
	}
	return n
}
