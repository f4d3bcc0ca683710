package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"
)

// The stall modes of `relock bench` (the no-stall target: no operation
// stalls others). Each runs one attack against the server while a
// bystander connection sends one PING every --interval, and reports the
// bystander's latency next to the attack's own figures:
//
//   - stall-locks: hold --locks locks (over --connections connections),
//     then one connection pipelines --pipeline `LOCKS COUNT 10 AFTER name`
//     pages per round trip, first over every lock, then with a MATCH
//     pattern that selects a tenth of them (after an idle baseline);
//   - stall-expiry: take --locks DETACHed holds whose TTLs all end at the
//     same millisecond, --ttl after the start, and ping across that moment;
//   - stall-auth: --connections unauthenticated connections pipeline
//     --pipeline wrong `AUTH` attempts per round trip while an
//     authenticated connection (--password) pings;
//   - stall-preauth: --connections unauthenticated connections each send a
//     partial request of almost 1 MiB; stall-unread: they send PINGs and
//     never read the replies. Both report the server's RSS growth.
//
// Everything is bounded: each attack by --duration (a round trip in flight
// then gets stallHardTimeout to finish), the bystander by stallMaxPings,
// and the address must be a loopback one or a unix socket.

const (
	// stallHardTimeout bounds one attack round trip, however stalled the
	// server is.
	stallHardTimeout = 60 * time.Second
	// stallExpiryWindow is how long after the deadline stall-expiry waits
	// for the holds to be gone.
	stallExpiryWindow = 30 * time.Second
	// stallDrainTimeout is how long after an attack ends the bystander
	// waits for the replies still due; a PING still unanswered then counts
	// with the time it has waited (a lower bound) and as Unanswered.
	stallDrainTimeout = 10 * time.Second
	// stallMaxPings bounds the bystander's PINGs in one phase.
	stallMaxPings = 200_000
	// stallPageCount is the COUNT of each LOCKS page.
	stallPageCount = 10
	// stallTenants spreads the held locks over name prefixes, so that a
	// MATCH on one prefix selects 1/stallTenants of them.
	stallTenants = 10
	// stallMatchTenant is the prefix the MATCH pages select.
	stallMatchTenant = 3
	// What each stall-preauth connection sends of one unfinished request:
	// 14 arguments of 64 KiB and half of a 15th, a little under the largest
	// request the server accepts (1 MiB).
	preauthArgs, preauthBulk = 16, 64 << 10
	// preauthUnread is how many bytes of PINGs each unread connection
	// sends (about 18,700 PINGs), never reading a reply.
	preauthUnread = 256 << 10
)

// pingStats is the bystander's view of one phase. The bystander is open
// loop: it sends one PING every --interval whether or not the previous
// replies have come (pipelined on one connection), so that a stall of
// 500 ms shows as the ~500 PINGs a steady stream of clients would have had
// delayed, each by how long it waited, not as one slow sample.
type pingStats struct {
	IntervalUs float64 `json:"interval_us"`
	Count      int64   `json:"count"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	// Unanswered PINGs got no reply until stallDrainTimeout after the
	// attack; they count above with the time they waited.
	Unanswered int64  `json:"unanswered"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// isStallMode reports whether mode is one of the stall modes.
func isStallMode(mode string) bool { return strings.HasPrefix(mode, "stall-") }

// checkLoopback refuses any address but a loopback one or a unix socket:
// the stall modes are attacks, meant for a server on this machine.
func checkLoopback(addr string) error {
	if strings.Contains(addr, ",") {
		return errors.New("the stall modes drive one server, not a cluster")
	}
	if strings.Contains(addr, "/") {
		return nil // unix socket
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--addr %s: the stall modes only drive a loopback address or a unix socket", addr)
}

// newClientAs is newClient with other credentials ("" for none).
func (c *benchCmd) newClientAs(user, password string) *redis.Client {
	tlsCfg, _ := c.tlsConfig() // checked in Run
	return redis.NewClient(&redis.Options{
		Addr: c.Addr, Username: user, Password: password, TLSConfig: tlsCfg,
		PoolSize: 1, MaxRetries: -1, ReadTimeout: -1, WriteTimeout: 10 * time.Second,
		ContextTimeoutEnabled: true, DisableIdentity: true,
	})
}

// bystander PINGs on its own connection, one every interval, until stop
// ends (or stallMaxPings); then it waits (up to stallDrainTimeout) for the
// replies still due. go-redis reads each reply before it sends the next
// request, so this writes PINGs on a plain connection and reads the
// one-line replies (+PONG) in order.
func (c *benchCmd) bystander(stop context.Context, interval time.Duration) *pingStats {
	st := &pingStats{IntervalUs: float64(interval / time.Microsecond)}
	var mu sync.Mutex // guards st's error fields: the writer and the reader fail
	failed := func(err error) *pingStats {
		mu.Lock()
		defer mu.Unlock()
		if st.Errors++; st.Errors == 1 {
			st.FirstError = err.Error()
		}
		return st
	}
	conn, err := c.dialRaw(context.Background())
	if err != nil {
		return failed(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	if c.Password != "" {
		user := cmp.Or(c.User, "default")
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(user), user, len(c.Password), c.Password)
		line, err := rd.ReadString('\n')
		if err != nil {
			return failed(err)
		}
		if line != "+OK\r\n" {
			return failed(fmt.Errorf("AUTH: %s", strings.TrimSpace(line)))
		}
		conn.SetDeadline(time.Time{})
	}

	sent := make(chan time.Time, stallMaxPings) // send times of the PINGs in flight
	h := hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
	read := make(chan struct{})
	go func() { // the reader: one reply per PING, in order
		defer close(read)
		for t0 := range sent {
			line, err := rd.ReadString('\n')
			if err != nil {
				// This PING and those after it got no reply: count
				// each with the time it waited.
				if !isTimeout(err) {
					failed(err)
				}
				now := time.Now()
				h.RecordValue(int64(now.Sub(t0) / time.Microsecond))
				st.Unanswered++
				for t := range sent {
					h.RecordValue(int64(now.Sub(t) / time.Microsecond))
					st.Unanswered++
				}
				return
			}
			if line != "+PONG\r\n" {
				failed(errors.New(strings.TrimSpace(line)))
				continue
			}
			h.RecordValue(int64(time.Since(t0) / time.Microsecond))
		}
	}()
	ping := []byte("*1\r\n$4\r\nPING\r\n")
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; i < stallMaxPings; i++ {
		select {
		case <-stop.Done():
		case <-tick.C:
		}
		if stop.Err() != nil {
			break
		}
		t0 := time.Now()
		conn.SetWriteDeadline(t0.Add(stallHardTimeout))
		if _, err := conn.Write(ping); err != nil {
			failed(err)
			break
		}
		sent <- t0
	}
	close(sent)
	conn.SetReadDeadline(time.Now().Add(stallDrainTimeout))
	<-read
	st.Count = h.TotalCount()
	st.P50us = float64(h.ValueAtQuantile(50))
	st.P99us = float64(h.ValueAtQuantile(99))
	st.P999us = float64(h.ValueAtQuantile(99.9))
	st.MaxUs = float64(h.Max())
	return st
}

// dialRaw opens a plain connection (TLS with the TLS flags) to --addr.
func (c *benchCmd) dialRaw(ctx context.Context) (net.Conn, error) {
	network := "tcp"
	if strings.Contains(c.Addr, "/") {
		network = "unix"
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, network, c.Addr)
	if err != nil {
		return nil, err
	}
	cfg, _ := c.tlsConfig() // checked in Run
	if cfg == nil {
		return conn, nil
	}
	if network == "tcp" && cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(c.Addr)
	}
	return tls.Client(conn, cfg), nil
}

// stallPhase runs attack while a bystander pings, and returns the
// bystander's figures with the attack's result. attack gets the run's
// context (ending after --duration); it must return within
// stallHardTimeout of that.
func (r *benchRun) stallPhase(phase string, attack func(ctx context.Context) benchResult) benchResult {
	c := r.cmd
	log0 := fileSize(c.ServerLog)
	stop, stopPinging := context.WithCancel(context.Background())
	pings := make(chan *pingStats, 1)
	go func() { pings <- c.bystander(stop, c.Interval) }()
	// Let the bystander connect and settle before the attack starts.
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration)
	res := attack(ctx)
	cancel()
	stopPinging()
	res.Phase = phase
	res.Ping = <-pings
	if c.ServerLog != "" {
		res.LogGrowth = fileSize(c.ServerLog) - log0
		if res.LogGrowth > 0 {
			res.AttackResult += "; server log +" + byteSize(res.LogGrowth)
		}
	}
	r.progressLine(res)
	return res
}

// byteSize formats n bytes for people.
func byteSize(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fileSize is the size of the file at path, 0 if there is none.
func fileSize(path string) int64 {
	if path == "" {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// progressLine prints a phase's outcome to stderr unless --quiet.
func (r *benchRun) progressLine(res benchResult) {
	if r.cmd.Quiet || res.Ping == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "%s %s: PING p50 %.2f ms, p99 %.2f ms, max %.2f ms; %s\n",
		res.Mode, res.Phase, res.Ping.P50us/1000, res.Ping.P99us/1000, res.Ping.MaxUs/1000, res.AttackResult)
}

// stall runs the --mode stall-* scenario and returns one result per phase.
func (r *benchRun) stall(pid int, admin *redis.Client) ([]benchResult, error) {
	c := r.cmd
	if err := checkLoopback(c.Addr); err != nil {
		return nil, err
	}
	if c.Interval <= 0 || c.Interval > time.Second {
		return nil, errors.New("--interval must be between 0 and 1s")
	}
	switch c.Mode {
	case "stall-locks":
		return r.stallLocks()
	case "stall-expiry":
		return r.stallExpiry(admin)
	case "stall-auth":
		return r.stallAuth()
	case "stall-preauth", "stall-unread":
		return r.stallPreauth(pid)
	case "stall-costly":
		return r.stallCostly()
	}
	return nil, fmt.Errorf("unknown mode %q", c.Mode)
}

// stallLockName is the i-th held lock's name: a tenant prefix, then a
// zero-padded index, so names sort by tenant and then by index.
func stallLockName(i int) string {
	return fmt.Sprintf("bench:stall:t%d:%08d", i%stallTenants, i/stallTenants)
}

// takeLocks takes n locks named by name(i) over conns connections,
// pipelined 1000 at a time, with the arguments args(i) after the name.
// It returns the connections (whose holds end when they close) and how
// many locks it took.
func (r *benchRun) takeLocks(n, conns int, name func(int) string, args func(int) []any) ([]*redis.Client, int64, error) {
	c := r.cmd
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clients := make([]*redis.Client, conns)
	for i := range clients {
		clients[i] = c.newClient()
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		taken int64
		err1  error
	)
	per := (n + conns - 1) / conns
	for i, rdb := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := i * per; lo < min((i+1)*per, n) && ctx.Err() == nil; lo += 1000 {
				pipe := rdb.Pipeline()
				for j := lo; j < min(lo+1000, (i+1)*per, n); j++ {
					pipe.Do(ctx, append([]any{"LOCK", name(j)}, args(j)...)...)
				}
				cmds, err := pipe.Exec(ctx)
				mu.Lock()
				if err != nil && err1 == nil {
					err1 = err
				}
				if err == nil {
					taken += int64(len(cmds))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if err1 != nil {
		for _, rdb := range clients {
			rdb.Close()
		}
		return nil, taken, fmt.Errorf("taking %d locks: %w", n, err1)
	}
	return clients, taken, nil
}

func closeAll(clients []*redis.Client) {
	for _, rdb := range clients {
		rdb.Close()
	}
}

// stallLocks: --locks held locks, then pipelined LOCKS pages.
func (r *benchRun) stallLocks() ([]benchResult, error) {
	c := r.cmd
	ttl := c.TTL.Milliseconds()
	start := time.Now()
	holders, held, err := r.takeLocks(c.Locks, c.Connections, stallLockName, func(int) []any {
		if ttl > 0 {
			return []any{"TTL", ttl}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer closeAll(holders)
	setup := time.Since(start)
	note := fmt.Sprintf("%d locks held by %d connections (taken in %.1f s)", held, c.Connections, setup.Seconds())

	idle := r.stallPhase("idle", func(ctx context.Context) benchResult {
		<-ctx.Done()
		return benchResult{Attack: note + ", no attack", AttackResult: "-"}
	})
	pager := c.newClient()
	defer pager.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	all := r.stallPhase("LOCKS COUNT 10 AFTER", func(ctx context.Context) benchResult {
		res := r.pages(ctx, pager, "", func() string { return stallLockName(rng.IntN(c.Locks)) })
		res.Attack = fmt.Sprintf("%s; 1 connection pipelining %d `LOCKS COUNT %d AFTER <random name>` per round trip",
			note, c.Pipeline, stallPageCount)
		return res
	})
	pattern := fmt.Sprintf("bench:stall:t%d:*", stallMatchTenant)
	match := r.stallPhase("LOCKS MATCH COUNT 10 AFTER", func(ctx context.Context) benchResult {
		res := r.pages(ctx, pager, pattern, func() string {
			i := rng.IntN(max(c.Locks/stallTenants, 1))*stallTenants + stallMatchTenant
			return stallLockName(i)
		})
		res.Attack = fmt.Sprintf("%s; 1 connection pipelining %d `LOCKS MATCH %s COUNT %d AFTER <random name>` per round trip",
			note, c.Pipeline, pattern, stallPageCount)
		return res
	})
	return []benchResult{idle, all, match}, nil
}

// pages sends rounds of --pipeline LOCKS pages until ctx ends; the round
// in flight then finishes (within stallHardTimeout), so that the server
// has no backlog of this phase's pages when the next phase starts.
func (r *benchRun) pages(ctx context.Context, rdb *redis.Client, match string, after func() string) benchResult {
	c := r.cmd
	h := hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
	start := time.Now()
	var pages, locks int64
	for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
		rctx, cancel := context.WithTimeout(context.Background(), stallHardTimeout)
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, c.Pipeline)
		for j := range cmds {
			args := []any{"LOCKS"}
			if match != "" {
				args = append(args, "MATCH", match)
			}
			args = append(args, "COUNT", stallPageCount, "AFTER", after())
			cmds[j] = pipe.Do(rctx, args...)
		}
		t0 := time.Now()
		_, err := pipe.Exec(rctx)
		cancel()
		if err != nil {
			r.fail(err)
			break
		}
		h.RecordValue(int64(time.Since(t0) / time.Microsecond))
		for _, cmd := range cmds {
			if v, ok := cmd.Val().([]any); ok {
				locks += int64(len(v))
			}
		}
		pages += int64(len(cmds))
	}
	el := time.Since(start)
	return benchResult{
		Seconds: el.Seconds(), Ops: pages, OpsPerSec: float64(pages) / el.Seconds(), Requests: pages,
		P50us: float64(h.ValueAtQuantile(50)), P99us: float64(h.ValueAtQuantile(99)), MaxUs: float64(h.Max()),
		AttackResult: fmt.Sprintf("%d pages (%d locks listed) in %.1f s: %.0f pages/s, round trip of %d pages p50 %.0f ms, max %.0f ms",
			pages, locks, el.Seconds(), float64(pages)/el.Seconds(), c.Pipeline,
			float64(h.ValueAtQuantile(50))/1000, float64(h.Max())/1000),
	}
}

// stallExpiry: --locks detached holds all expiring at once.
func (r *benchRun) stallExpiry(admin *redis.Client) ([]benchResult, error) {
	c := r.cmd
	if c.TTL < 500*time.Millisecond {
		return nil, errors.New("stall-expiry needs a --ttl of at least 500ms")
	}
	start := time.Now()
	deadline := start.Add(c.TTL)
	name := func(i int) string { return "bench:expiry:" + strconv.Itoa(i) }
	holders, held, err := r.takeLocks(c.Locks, c.Connections, name, func(int) []any {
		// The same deadline for every hold, whenever it is taken.
		return []any{"TTL", max(time.Until(deadline).Milliseconds(), 1), "DETACH"}
	})
	if err != nil {
		return nil, err
	}
	closeAll(holders) // detached: the holds stay
	setup := time.Since(start)
	if left := time.Until(deadline); left < 200*time.Millisecond {
		return nil, fmt.Errorf("taking %d holds took %.1f s, too close to their %v TTL: raise --ttl", held, setup.Seconds(), c.TTL)
	}
	// Start pinging 300 ms before the deadline; --duration is how long
	// after the deadline to keep pinging at least.
	if wait := time.Until(deadline) - 300*time.Millisecond; wait > 0 {
		time.Sleep(wait)
	}
	res := r.stallPhase(fmt.Sprintf("%d holds expire at once", held), func(ctx context.Context) benchResult {
		// The attack is the server's own expiry: watch DBSIZE fall to 0.
		<-time.After(time.Until(deadline))
		var drained time.Duration
		for i := 0; i < 100_000; i++ {
			qctx, cancel := context.WithTimeout(context.Background(), stallExpiryWindow)
			n, err := admin.DBSize(qctx).Result()
			cancel()
			if err != nil {
				if !isTimeout(err) {
					r.fail(err) // a timeout only means: not gone in time
				}
				break
			}
			if n == 0 {
				drained = time.Since(deadline)
				break
			}
			if time.Since(deadline) > stallExpiryWindow {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		<-ctx.Done() // at least --duration of pinging
		out := benchResult{Ops: held, Seconds: setup.Seconds(), OpsPerSec: float64(held) / setup.Seconds(), DrainMs: float64(drained) / 1e6}
		out.Attack = fmt.Sprintf("%d DETACHed holds (taken by %d connections in %.1f s) whose TTLs end at the same moment (± a few ms)",
			held, c.Connections, setup.Seconds())
		if drained > 0 {
			out.AttackResult = fmt.Sprintf("all gone (DBSIZE 0) %.0f ms after their deadline", out.DrainMs)
		} else {
			out.AttackResult = fmt.Sprintf("not all gone %v after their deadline", stallExpiryWindow)
		}
		return out
	})
	return []benchResult{res}, nil
}

// stallAuth: --connections unauthenticated connections pipelining wrong
// AUTH attempts.
func (r *benchRun) stallAuth() ([]benchResult, error) {
	c := r.cmd
	if c.Password == "" {
		return nil, errors.New("stall-auth needs the server's --password (start it with --requirepass)")
	}
	attackers := make([]*redis.Client, c.Connections)
	for i := range attackers {
		attackers[i] = c.newClientAs("", "")
	}
	defer closeAll(attackers)
	res := r.stallPhase("wrong AUTH flood", func(ctx context.Context) benchResult {
		h := hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
		var (
			mu       sync.Mutex
			attempts int64
			refused  int64 // WRONGPASS replies
			wg       sync.WaitGroup
		)
		start := time.Now()
		for id, rdb := range attackers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
					rctx, cancel := context.WithTimeout(context.Background(), stallHardTimeout)
					pipe := rdb.Pipeline()
					cmds := make([]*redis.Cmd, c.Pipeline)
					for j := range cmds {
						cmds[j] = pipe.Do(rctx, "AUTH", "default", fmt.Sprintf("wrong-%d-%d-%d", id, i, j))
					}
					t0 := time.Now()
					_, err := pipe.Exec(rctx)
					cancel()
					el := time.Since(t0)
					n := int64(0)
					for _, cmd := range cmds {
						if e := cmd.Err(); e != nil && strings.HasPrefix(e.Error(), "WRONGPASS") {
							n++
						}
					}
					mu.Lock()
					attempts += int64(len(cmds))
					refused += n
					h.RecordValue(int64(el / time.Microsecond))
					mu.Unlock()
					if err != nil && n == 0 {
						r.fail(err) // not the expected WRONGPASS replies
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		return benchResult{
			Seconds: el.Seconds(), Ops: attempts, OpsPerSec: float64(attempts) / el.Seconds(), Requests: attempts,
			P50us: float64(h.ValueAtQuantile(50)), P99us: float64(h.ValueAtQuantile(99)), MaxUs: float64(h.Max()),
			Attack: fmt.Sprintf("%d unauthenticated connections, each pipelining %d wrong `AUTH default <password>` per round trip",
				c.Connections, c.Pipeline),
			AttackResult: fmt.Sprintf("%d attempts (%d WRONGPASS) in %.1f s: %.0f/s, round trip of %d p50 %.0f ms, max %.0f ms",
				attempts, refused, el.Seconds(), float64(attempts)/el.Seconds(), c.Pipeline,
				float64(h.ValueAtQuantile(50))/1000, float64(h.Max())/1000),
		}
	})
	return []benchResult{res}, nil
}

// stallPreauth: --connections unauthenticated connections each leave a
// large request unfinished (stall-preauth), or send PINGs whose replies
// they never read (stall-unread); reports the server's RSS growth.
func (r *benchRun) stallPreauth(pid int) ([]benchResult, error) {
	c := r.cmd
	payload := stallPartialRequest()
	phase, attack := "partial requests", fmt.Sprintf("each sending %.0f KiB of a request it never finishes", float64(len(payload))/1024)
	if c.Mode == "stall-unread" {
		payload = []byte(strings.Repeat("*1\r\n$4\r\nPING\r\n", preauthUnread/14))
		phase, attack = "unread replies", fmt.Sprintf("each sending %d PINGs and reading no reply", len(payload)/14)
	}
	res := r.stallPhase(phase, func(ctx context.Context) benchResult {
		rss0, err := procRSS(pid)
		if err != nil {
			r.fail(err)
		}
		peak := make(chan int64, 1)
		go func() { // the server's largest RSS until ctx ends
			top := rss0
			for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
				if v, err := procRSS(pid); err == nil {
					top = max(top, v)
				}
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
			peak <- top
		}()
		conns, sent := r.rawFlood(ctx, c.Connections, payload)
		<-ctx.Done()
		open := countOpen(conns)
		for _, conn := range conns {
			conn.Close()
		}
		out := benchResult{Ops: int64(len(conns)), Requests: sent, RSSGrowth: <-peak - rss0}
		out.Attack = fmt.Sprintf("%d unauthenticated connections, %s", c.Connections, attack)
		out.AttackResult = fmt.Sprintf("%.1f MiB sent; %d of %d connections still open after %v; server RSS peak +%.1f MiB (%.0f KiB per connection)",
			float64(sent)/(1<<20), open, len(conns), c.Duration, float64(out.RSSGrowth)/(1<<20),
			float64(out.RSSGrowth)/1024/float64(max(len(conns), 1)))
		return out
	})
	return []benchResult{res}, nil
}

// stallPartialRequest announces preauthArgs arguments of preauthBulk
// bytes and stops halfway through the (preauthArgs-1)th: as much as the
// server accepts of one request (1 MiB, headers included), less a little.
func stallPartialRequest() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", preauthArgs)
	body := strings.Repeat("x", preauthBulk)
	for range preauthArgs - 2 {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", preauthBulk, body)
	}
	fmt.Fprintf(&b, "$%d\r\n%s", preauthBulk, body[:preauthBulk/2])
	return []byte(b.String())
}

// rawFlood opens n connections and writes payload on each (bounded by ctx
// and a write deadline), reading nothing. It returns the connections and
// the bytes written in all.
func (r *benchRun) rawFlood(ctx context.Context, n int, payload []byte) ([]net.Conn, int64) {
	conns := make([]net.Conn, 0, n)
	for range n {
		conn, err := r.cmd.dialRaw(ctx)
		if err != nil {
			r.fail(err)
			break
		}
		conns = append(conns, conn)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int64
	)
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dl := time.Now().Add(5 * time.Second)
			if d, ok := ctx.Deadline(); ok && d.Before(dl) {
				dl = d
			}
			conn.SetWriteDeadline(dl)
			w, _ := conn.Write(payload) // a short write: the server stopped reading or closed
			mu.Lock()
			sent += int64(w)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return conns, sent
}

// countOpen counts the connections the server has not closed: a read that
// times out at once means open; EOF or a reset means closed.
func countOpen(conns []net.Conn) int {
	open := 0
	buf := make([]byte, 4096)
	for _, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		for range 1024 { // drain what the server wrote, boundedly
			_, err := conn.Read(buf)
			if isTimeout(err) {
				open++
				break
			}
			if err != nil {
				break
			}
		}
	}
	return open
}

// stallCostly: requests whose cost is not their count, one kind per phase
// on the same server (found by a review; each stalled a PING by 0.3–7 s
// before relock bounded it): 1024 costly pattern subscriptions while
// another connection churns a lock of a 1 KB name; costly LOCKS MATCH
// globs over 4096 locks of 1 KB names; shared LOCK+UNLOCK pairs on a lock
// with 20,000 shared holds; the largest LOCKS pages (COUNT 100000) over
// 100,000 locks.
func (r *benchRun) stallCostly() ([]benchResult, error) {
	c := r.cmd
	ctx0, cancel0 := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel0()
	idle := r.stallPhase("idle", func(ctx context.Context) benchResult {
		<-ctx.Done()
		return benchResult{Attack: "no attack", AttackResult: "-"}
	})
	// Costly patterns: "*" + k a's + "b" + k against a name of 1024 a's.
	sub := c.newClient()
	defer sub.Close()
	ps := sub.Subscribe(ctx0)
	defer ps.Close()
	for k := 1; k <= 1024; k += 64 {
		var chans []string
		for j := k; j < k+64; j++ {
			chans = append(chans, "__lock__:*"+strings.Repeat("a", j%1000)+"b"+strconv.Itoa(j))
		}
		if err := ps.PSubscribe(ctx0, chans...); err != nil {
			return nil, err
		}
	}
	churn := c.newClient()
	defer churn.Close()
	name := strings.Repeat("a", 1024)
	patterns := r.stallPhase("1024 costly patterns", func(ctx context.Context) benchResult {
		var n int64
		for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
			key, err := churn.Do(ctx, "LOCK", name).Text()
			if err != nil {
				break
			}
			churn.Do(context.Background(), "UNLOCK", name, key)
			n++
		}
		return benchResult{Ops: n, Attack: "1 connection subscribed to 1024 patterns `__lock__:*a…ab<k>` (k a's, k ≤ 1000); 1 connection locking and unlocking a 1024-byte name of a's",
			AttackResult: fmt.Sprintf("%d LOCK+UNLOCK cycles", n)}
	})
	ps.Close()
	// Costly MATCH globs over locks with 1 KB names.
	long, _, err := r.takeLocks(4096, 1, func(i int) string { return fmt.Sprintf("%s%05d", strings.Repeat("a", 1000), i) },
		func(int) []any { return []any{"TTL", 3600000} })
	if err != nil {
		return nil, err
	}
	glob := "*" + strings.Repeat("a", 500) + "b"
	pager := c.newClient()
	defer pager.Close()
	match := r.stallPhase("costly LOCKS MATCH", func(ctx context.Context) benchResult {
		res := r.pages(ctx, pager, glob, func() string { return "" })
		res.Attack = fmt.Sprintf("4096 locks of 1005-byte names; 1 connection pipelining %d `LOCKS MATCH *a{500}b COUNT 10`", c.Pipeline)
		return res
	})
	closeAll(long)
	// A lock with many shared holds.
	holds, _, err := r.takeLocks(20000, 1, func(int) string { return "bench:stall:big" },
		func(int) []any { return []any{"SHARED", "DETACH", "TTL", 3600000} })
	if err != nil {
		return nil, err
	}
	defer closeAll(holds)
	sharer := c.newClient()
	defer sharer.Close()
	shared := r.stallPhase("shared holds of one lock", func(ctx context.Context) benchResult {
		var n int64
		for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
			pipe := sharer.Pipeline()
			cmds := make([]*redis.Cmd, 64)
			for j := range cmds {
				cmds[j] = pipe.Do(ctx, "LOCK", "bench:stall:big", "SHARED")
			}
			if _, err := pipe.Exec(ctx); err != nil {
				break
			}
			pipe = sharer.Pipeline()
			for _, cmd := range cmds {
				pipe.Do(context.Background(), "UNLOCK", "bench:stall:big", cmd.Val())
			}
			pipe.Exec(context.Background())
			n += int64(len(cmds))
		}
		return benchResult{Ops: n, Attack: "a lock with 20000 shared holds; 1 connection pipelining 64 shared LOCKs of it, then their UNLOCKs",
			AttackResult: fmt.Sprintf("%d LOCK+UNLOCK pairs", n)}
	})
	closeAll(holds)
	// The largest pages.
	many, _, err := r.takeLocks(100000, 4, stallLockName, func(int) []any { return []any{"TTL", 3600000} })
	if err != nil {
		return nil, err
	}
	defer closeAll(many)
	rng := rand.New(rand.NewPCG(3, 4))
	largest := r.stallPhase("largest LOCKS pages", func(ctx context.Context) benchResult {
		var pages, bytes int64
		for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
			v, err := pager.Do(ctx, "LOCKS", "COUNT", 100000, "AFTER", stallLockName(rng.IntN(100000))).Slice()
			if err != nil {
				break
			}
			pages++
			bytes += int64(len(v))
		}
		return benchResult{Ops: pages, Attack: "100000 locks held; 1 connection reading `LOCKS COUNT 100000 AFTER <random name>` pages (each at most 1 MiB)",
			AttackResult: fmt.Sprintf("%d pages, %d locks listed", pages, bytes)}
	})
	return []benchResult{idle, patterns, match, shared, largest}, nil
}
