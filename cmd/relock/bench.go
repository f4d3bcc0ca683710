package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"
)

// benchCmd is `relock bench`: a load generator that drives relock with its
// own commands or Redis with the usual lock idiom (SET NX PX + an EVALSHA
// compare-and-delete, polling under contention), so that both are measured
// by the same client in the same run.
type benchCmd struct {
	clientFlags `embed:""`
	Target      string        `help:"Which server protocol to drive: relock (LOCK/UNLOCK) or redis (SET NX PX + EVALSHA)." enum:"relock,redis" default:"relock"`
	Mode        string        `help:"cycle: each connection locks and unlocks its own name; contend: all connections on one name; rw (relock): all connections on bench:rw, every 10th cycle of a connection exclusive and the others shared (90 % readers); hold: take --locks locks and report server memory per lock; pipeline: --pipeline TRYLOCKs then UNLOCKs per round trip; mlock (relock): each connection MLOCKs its own --names names and UNLOCKs each (pipelined); mlock-contend (relock): all connections MLOCK the same --names names, every other connection listing them in the opposite order, and report stalls (a second without a handoff: a deadlock would be one); ping: PING+PING cycles, the I/O ceiling; events: how soon a lock event reaches a subscriber (relock). stall-locks, stall-expiry, stall-auth, stall-preauth, stall-unread, stall-costly (relock, loopback only): an attack while another connection PINGs every --interval (see README, Benchmarks)." enum:"cycle,contend,rw,hold,pipeline,mlock,mlock-contend,ping,events,stall-locks,stall-expiry,stall-auth,stall-preauth,stall-unread,stall-costly" default:"cycle"`
	Connections int           `short:"c" help:"Concurrent connections (stall-locks, stall-expiry: taking the locks; stall-auth, stall-preauth, stall-unread: attacking)." default:"16"`
	Duration    time.Duration `short:"d" help:"How long to run (cycle, contend, pipeline; each stall attack)." default:"5s"`
	TTL         time.Duration `help:"Lock TTL (Redis needs one; 0 for relock: none). stall-expiry: when, from its start, every hold expires." default:"10s"`
	Locks       int           `help:"Locks to hold in hold, stall-locks and stall-expiry modes." default:"100000"`
	Pipeline    int           `short:"P" help:"Pipeline depth: TRYLOCKs per round trip (pipeline), LOCKS pages (stall-locks), wrong AUTHs per connection (stall-auth)." default:"16"`
	Names       int           `help:"mlock, mlock-contend: names per MLOCK." default:"2"`
	Interval    time.Duration `help:"Stall modes: the bystander sends one PING per interval." default:"1ms"`
	ServerLog   string        `help:"Stall modes: the server's log file, to report how much each attack made it grow." placeholder:"FILE"`
	Poll        time.Duration `help:"Redis contend mode: sleep between failed SET NX attempts." default:"0s"`
	Shared      bool          `help:"Cycle and contend modes (relock): take the locks SHARED (readers), to compare shared cycles with exclusive ones."`
	Subscribers int           `help:"Cycle mode (relock): this many pattern subscribers to lock events during the run, subscriber i on __lock__:<--subscribe-pattern with {i} replaced by i>." default:"0"`
	SubPattern  string        `name:"subscribe-pattern" help:"With --subscribers: the glob of subscriber i; the default watches the lock of connection i, if any (bench:<i> is connection i's lock)." default:"bench:{i}*"`
	Label       string        `help:"Label for the JSON result."`
	JSON        bool          `help:"Print the result as one JSON line instead of the summary."`
	Quiet       bool          `short:"q" help:"No progress line."`
}

// benchResult is one run's outcome; `make bench` collects them as JSON.
type benchResult struct {
	Label       string  `json:"label,omitempty"`
	Target      string  `json:"target"`
	Mode        string  `json:"mode"`
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
	Ops         int64   `json:"ops"` // cycles, handoffs, or locks held
	OpsPerSec   float64 `json:"ops_per_sec"`
	Requests    int64   `json:"requests"`
	Wasted      int64   `json:"wasted_requests"`         // failed SET NX polls
	Shared      bool    `json:"shared,omitempty"`        // --shared
	Exclusive   int64   `json:"exclusive_ops,omitempty"` // rw: the cycles that were exclusive
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	P999us      float64 `json:"p999_us"`
	MaxUs       float64 `json:"max_us"`
	ServerCPUus float64 `json:"server_cpu_us_per_op"`
	MinShare    float64 `json:"min_share,omitempty"` // contend: least/most a client got, relative to the mean
	MaxShare    float64 `json:"max_share,omitempty"`
	Names       int     `json:"names,omitempty"`         // mlock modes: names per MLOCK
	NamesPerSec float64 `json:"names_per_sec,omitempty"` // mlock: names taken (and released) per second
	// Stalls (mlock-contend) counts the stretches of at least stallGap
	// in which no connection completed a handoff; MaxGapMs is the longest
	// time without one.
	Stalls       *int64  `json:"stalls,omitempty"`
	MaxGapMs     float64 `json:"max_gap_ms,omitempty"`
	BytesPerLock float64 `json:"rss_bytes_per_lock,omitempty"`
	UsedPerLock  float64 `json:"used_memory_bytes_per_lock,omitempty"`
	Errors       int64   `json:"errors"`
	FirstError   string  `json:"first_error,omitempty"`

	// The stall modes: one result per phase, with the bystander's PINGs.
	Phase        string     `json:"phase,omitempty"`
	Attack       string     `json:"attack,omitempty"`        // what the phase did
	AttackResult string     `json:"attack_result,omitempty"` // its own figures, in words
	Ping         *pingStats `json:"ping,omitempty"`
	DrainMs      float64    `json:"drain_ms,omitempty"`         // stall-expiry: deadline to DBSIZE 0
	RSSGrowth    int64      `json:"rss_growth_bytes,omitempty"` // stall-preauth, stall-unread
	LogGrowth    int64      `json:"log_growth_bytes,omitempty"` // with --server-log
}

// maxBenchIterations bounds every load loop by count as well as by time.
const maxBenchIterations = 100_000_000

// unlockScript is the compare-and-delete every Redis lock library uses.
const unlockScript = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`

// benchRun carries one run's shared state.
type benchRun struct {
	cmd    *benchCmd
	sha    string
	ops    atomic.Int64
	reqs   atomic.Int64
	wasted atomic.Int64
	// exclusive counts the rw mode's exclusive cycles.
	exclusive atomic.Int64
	// lastOp is when an operation last completed (UnixNano): the stall
	// watch of mlock-contend.
	lastOp atomic.Int64
	errs   atomic.Int64
	errMu  sync.Mutex
	err1   string
}

func (r *benchRun) fail(err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return
	}
	r.errs.Add(1)
	r.errMu.Lock()
	if r.err1 == "" {
		r.err1 = err.Error()
	}
	r.errMu.Unlock()
}

func (c *benchCmd) newClient() *redis.Client {
	tlsCfg, _ := c.tlsConfig() // checked in Run
	return redis.NewClient(&redis.Options{
		Addr: c.Addr, Username: c.User, Password: c.Password, TLSConfig: tlsCfg,
		PoolSize: 1, MaxRetries: -1, ReadTimeout: -1, WriteTimeout: 10 * time.Second,
		ContextTimeoutEnabled: true, DisableIdentity: true,
	})
}

// Run runs the benchmark and prints its summary (or JSON).
func (c *benchCmd) Run() error {
	if c.Connections < 1 || c.Connections > 10000 {
		return errors.New("--connections must be between 1 and 10000")
	}
	if c.Target == "redis" && c.TTL <= 0 {
		return errors.New("the Redis idiom needs a --ttl")
	}
	if c.Mode == "rw" && c.Target != "relock" {
		return errors.New("--mode rw drives relock only (Redis has no shared locks)")
	}
	if isMultiMode(c.Mode) && c.Target != "relock" {
		return fmt.Errorf("--mode %s drives relock only (MLOCK)", c.Mode)
	}
	if isMultiMode(c.Mode) && c.Names < 1 {
		return errors.New("--names must be at least 1")
	}
	if c.Shared && (c.Target != "relock" || (c.Mode != "cycle" && c.Mode != "contend")) {
		return errors.New("--shared applies to relock's cycle and contend modes")
	}
	if _, err := c.tlsConfig(); err != nil {
		return err
	}
	admin := c.newClient()
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pid, err := serverPID(ctx, admin)
	if err != nil {
		return fmt.Errorf("INFO server: %w", err)
	}
	r := &benchRun{cmd: c}
	if c.Target == "redis" {
		if r.sha, err = admin.ScriptLoad(ctx, unlockScript).Result(); err != nil {
			return fmt.Errorf("SCRIPT LOAD: %w", err)
		}
	}
	if isStallMode(c.Mode) {
		if c.Target != "relock" {
			return errors.New("the stall modes drive relock only")
		}
		results, err := r.stall(pid, admin)
		for _, res := range results {
			res.Label, res.Target, res.Mode, res.Connections = c.Label, c.Target, c.Mode, c.Connections
			res.Errors = r.errs.Load()
			res.FirstError = r.err1
			if c.JSON {
				if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
					return err
				}
			} else {
				printSummary(os.Stdout, &res)
			}
		}
		return err
	}
	var res benchResult
	switch c.Mode {
	case "hold":
		res, err = r.hold(pid, admin)
	case "events":
		res, err = r.events(pid)
	default:
		res, err = r.timed(pid)
	}
	if err != nil {
		return err
	}
	res.Label, res.Target, res.Mode, res.Connections = c.Label, c.Target, c.Mode, c.Connections
	res.Shared = c.Shared
	if isMultiMode(c.Mode) {
		res.Names = c.Names
	}
	res.Errors = r.errs.Load()
	res.FirstError = r.err1
	if c.JSON {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	printSummary(os.Stdout, &res)
	return nil
}

// timed runs the cycle, contend or pipeline loop on every connection for
// --duration and measures rate, latency and server CPU.
func (r *benchRun) timed(pid int) (benchResult, error) {
	c := r.cmd
	clients := make([]*redis.Client, c.Connections)
	for i := range clients {
		clients[i] = c.newClient()
		defer clients[i].Close()
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := clients[i].Ping(pctx).Err()
		cancel()
		if err != nil {
			return benchResult{}, fmt.Errorf("connect: %w", err)
		}
	}
	hists := make([]*hdrhistogram.Histogram, c.Connections)
	counts := make([]int64, c.Connections)
	if c.Subscribers > 0 {
		stopSubs, err := r.startSubscribers(c.Subscribers)
		if err != nil {
			return benchResult{}, err
		}
		defer stopSubs()
	}
	cpu0, _ := procCPU(pid)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration)
	defer cancel()
	stopProgress := r.progress(start)
	r.lastOp.Store(start.UnixNano())
	var stalls stallWatch
	if c.Mode == "mlock-contend" {
		stopWatch := r.watchStalls(ctx, &stalls)
		defer stopWatch()
	}
	var wg sync.WaitGroup
	for i := range clients {
		hists[i] = hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i] = r.worker(ctx, i, clients[i], hists[i])
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	cpu1, _ := procCPU(pid)
	h := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	for _, x := range hists {
		h.Merge(x)
	}
	ops := r.ops.Load()
	res := benchResult{
		Seconds: elapsed.Seconds(), Ops: ops, OpsPerSec: float64(ops) / elapsed.Seconds(),
		Requests: r.reqs.Load(), Wasted: r.wasted.Load(), Exclusive: r.exclusive.Load(),
		P50us: float64(h.ValueAtQuantile(50)), P99us: float64(h.ValueAtQuantile(99)),
		P999us: float64(h.ValueAtQuantile(99.9)), MaxUs: float64(h.Max()),
	}
	if ops > 0 && cpu1 > cpu0 {
		res.ServerCPUus = float64((cpu1-cpu0)/time.Microsecond) / float64(ops)
	}
	if c.Mode == "mlock" {
		res.NamesPerSec = res.OpsPerSec * float64(c.Names)
	}
	if c.Mode == "mlock-contend" {
		// The run's last stretch counts too: a deadlock at the end would
		// leave every connection waiting until the deadline.
		stalls.observe(time.Now(), time.Unix(0, r.lastOp.Load()))
		n, gap := stalls.result()
		res.Stalls, res.MaxGapMs = &n, float64(gap)/float64(time.Millisecond)
	}
	if (c.Mode == "contend" || c.Mode == "mlock-contend") && ops > 0 {
		mean := float64(ops) / float64(len(counts))
		res.MinShare, res.MaxShare = math.Inf(1), 0
		for _, n := range counts {
			res.MinShare = math.Min(res.MinShare, float64(n)/mean)
			res.MaxShare = math.Max(res.MaxShare, float64(n)/mean)
		}
	}
	return res, nil
}

// worker loops until ctx ends and returns how many operations it completed.
func (r *benchRun) worker(ctx context.Context, id int, rdb *redis.Client, h *hdrhistogram.Histogram) int64 {
	c := r.cmd
	name := "bench:" + strconv.Itoa(id)
	switch c.Mode {
	case "contend":
		name = "bench:contended"
	case "rw":
		name = "bench:rw"
	}
	var names []string // the mlock modes'
	switch c.Mode {
	case "mlock":
		for j := 0; j < c.Names; j++ {
			names = append(names, name+":"+strconv.Itoa(j))
		}
	case "mlock-contend":
		for j := 0; j < c.Names; j++ {
			names = append(names, "bench:mc:"+strconv.Itoa(j))
		}
		if id%2 == 1 {
			slices.Reverse(names)
		}
	}
	ttlMs := c.TTL.Milliseconds()
	var n, seq int64
	for i := 0; i < maxBenchIterations && ctx.Err() == nil; i++ {
		t0 := time.Now()
		var err error
		switch {
		case c.Mode == "ping":
			err = rdb.Ping(ctx).Err()
			if err == nil {
				err = rdb.Ping(ctx).Err()
			}
			r.reqs.Add(2)
		case c.Mode == "pipeline":
			err = r.pipelineRound(ctx, rdb, name)
		case isMultiMode(c.Mode):
			err = r.mlockCycle(ctx, rdb, names, ttlMs)
		case c.Mode == "rw":
			// Every 10th cycle of a connection is a writer's, the
			// connections out of step: 90 % readers at any time.
			exclusive := (i+id)%10 == 0
			err = r.relockCycle(ctx, rdb, name, ttlMs, !exclusive)
			if err == nil && exclusive {
				r.exclusive.Add(1)
			}
		case c.Target == "relock":
			err = r.relockCycle(ctx, rdb, name, ttlMs, c.Shared)
		default:
			seq++
			err = r.redisCycle(ctx, rdb, name, strconv.Itoa(id)+"-"+strconv.FormatInt(seq, 10), ttlMs)
		}
		if err != nil {
			// Errors at the very end are the run's deadline cutting a
			// request short, not the server's.
			if dl, _ := ctx.Deadline(); time.Until(dl) > 10*time.Millisecond {
				r.fail(err)
			}
			continue
		}
		h.RecordValue(int64(time.Since(t0) / time.Microsecond))
		r.lastOp.Store(time.Now().UnixNano())
		n++
		if c.Mode == "pipeline" {
			r.ops.Add(int64(c.Pipeline))
		} else {
			r.ops.Add(1)
		}
	}
	return n
}

// relockCycle takes name (SHARED if shared) and releases it.
func (r *benchRun) relockCycle(ctx context.Context, rdb *redis.Client, name string, ttlMs int64, shared bool) error {
	args := []any{"LOCK", name}
	if ttlMs > 0 {
		args = append(args, "TTL", ttlMs)
	}
	if shared {
		args = append(args, "SHARED")
	}
	key, err := rdb.Do(ctx, args...).Text()
	r.reqs.Add(1)
	if err != nil {
		return err
	}
	err = rdb.Do(ctx, "UNLOCK", name, key).Err()
	r.reqs.Add(1)
	return err
}

// mlockCycle takes names with one MLOCK and releases each with its own
// UNLOCK (pipelined: one round trip).
func (r *benchRun) mlockCycle(ctx context.Context, rdb *redis.Client, names []string, ttlMs int64) error {
	args := make([]any, 0, len(names)+4)
	args = append(args, "MLOCK", len(names))
	for _, name := range names {
		args = append(args, name)
	}
	if ttlMs > 0 {
		args = append(args, "TTL", ttlMs)
	}
	res, err := rdb.Do(ctx, args...).Slice()
	r.reqs.Add(1)
	if err != nil {
		return err
	}
	if len(res) != len(names) {
		return fmt.Errorf("MLOCK: %d keys for %d names", len(res), len(names))
	}
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			p.Do(ctx, "UNLOCK", name, res[i])
		}
		return nil
	})
	r.reqs.Add(int64(len(cmds)))
	return err
}

// isMultiMode reports whether mode drives MLOCK.
func isMultiMode(mode string) bool { return mode == "mlock" || mode == "mlock-contend" }

// stallGap is how long mlock-contend may go without a handoff before the
// stretch counts as a stall: at c=16 on loopback a handoff takes tens of
// microseconds, so a second without one is no scheduling hiccup.
const stallGap = time.Second

// stallWatch counts the stretches without a completed operation.
type stallWatch struct {
	// mu guards the fields below.
	mu      sync.Mutex
	stalls  int64
	inStall bool
	maxGap  time.Duration
}

// observe records that at now the last operation completed at last.
func (s *stallWatch) observe(now, last time.Time) {
	gap := now.Sub(last)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxGap = max(s.maxGap, gap)
	switch {
	case gap >= stallGap && !s.inStall:
		s.stalls++
		s.inStall = true
	case gap < stallGap:
		s.inStall = false
	}
}

func (s *stallWatch) result() (int64, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalls, s.maxGap
}

// watchStalls samples r.lastOp every 10 ms until ctx ends; the returned
// function waits for it to stop.
func (r *benchRun) watchStalls(ctx context.Context, s *stallWatch) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				s.observe(now, time.Unix(0, r.lastOp.Load()))
			}
		}
	}()
	return func() { <-done }
}

// redisCycle takes the lock with SET NX PX, polling while it is taken, and
// releases it with the compare-and-delete script.
func (r *benchRun) redisCycle(ctx context.Context, rdb *redis.Client, name, token string, ttlMs int64) error {
	for attempt := 0; ; attempt++ {
		if attempt == maxBenchIterations {
			return errors.New("gave up polling SET NX")
		}
		ok, err := rdb.SetNX(ctx, name, token, time.Duration(ttlMs)*time.Millisecond).Result()
		r.reqs.Add(1)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		r.wasted.Add(1)
		if r.cmd.Poll > 0 {
			select {
			case <-time.After(r.cmd.Poll):
			case <-ctx.Done():
				return ctx.Err()
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	err := rdb.EvalSha(ctx, r.sha, []string{name}, token).Err()
	r.reqs.Add(1)
	return err
}

// pipelineRound sends --pipeline acquisitions in one round trip, then the
// matching releases in another.
func (r *benchRun) pipelineRound(ctx context.Context, rdb *redis.Client, prefix string) error {
	c := r.cmd
	ttlMs := c.TTL.Milliseconds()
	names := make([]string, c.Pipeline)
	for i := range names {
		names[i] = prefix + ":" + strconv.Itoa(i)
	}
	pipe := rdb.Pipeline()
	cmds := make([]redis.Cmder, len(names))
	token := prefix + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	for i, name := range names {
		if c.Target == "relock" {
			args := []any{"TRYLOCK", name}
			if ttlMs > 0 {
				args = append(args, "TTL", ttlMs)
			}
			cmds[i] = pipe.Do(ctx, args...)
		} else {
			cmds[i] = pipe.SetNX(ctx, name, token, c.TTL)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	pipe = rdb.Pipeline()
	for i, name := range names {
		if c.Target == "relock" {
			pipe.Do(ctx, "UNLOCK", name, cmds[i].(*redis.Cmd).Val())
		} else {
			pipe.EvalSha(ctx, r.sha, []string{name}, token)
		}
	}
	_, err := pipe.Exec(ctx)
	r.reqs.Add(int64(2 * len(names)))
	return err
}

// hold takes --locks locks (pipelined, over --connections connections) and
// reports the server's memory per held lock; then releases them.
func (r *benchRun) hold(pid int, admin *redis.Client) (benchResult, error) {
	c := r.cmd
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rss0, err := procRSS(pid)
	if err != nil {
		return benchResult{}, err
	}
	used0 := usedMemory(ctx, admin)
	clients := make([]*redis.Client, c.Connections)
	for i := range clients {
		clients[i] = c.newClient()
		defer clients[i].Close()
	}
	start := time.Now()
	token := "held"
	var wg sync.WaitGroup
	per := (c.Locks + c.Connections - 1) / c.Connections
	for i, rdb := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := i * per; lo < min((i+1)*per, c.Locks) && ctx.Err() == nil; lo += 1000 {
				pipe := rdb.Pipeline()
				for j := lo; j < min(lo+1000, (i+1)*per, c.Locks); j++ {
					name := "bench:hold:" + strconv.Itoa(j)
					if c.Target == "relock" {
						pipe.Do(ctx, "LOCK", name, "TTL", c.TTL.Milliseconds())
					} else {
						pipe.SetNX(ctx, name, token, c.TTL)
					}
				}
				n, err := pipe.Exec(ctx)
				if err != nil {
					r.fail(err)
					return
				}
				r.ops.Add(int64(len(n)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	held := r.ops.Load()
	rss1, _ := procRSS(pid)
	used1 := usedMemory(ctx, admin)
	res := benchResult{Seconds: elapsed.Seconds(), Ops: held, OpsPerSec: float64(held) / elapsed.Seconds()}
	if held > 0 {
		res.BytesPerLock = float64(rss1-rss0) / float64(held)
		if used0 > 0 && used1 > used0 {
			res.UsedPerLock = float64(used1-used0) / float64(held)
		}
	}
	// Release: relock by closing the connections (deferred); Redis by
	// deleting exactly the keys this run set.
	if c.Target == "redis" {
		for lo := 0; lo < c.Locks; lo += 1000 {
			pipe := admin.Pipeline()
			for j := lo; j < min(lo+1000, c.Locks); j++ {
				pipe.Del(ctx, "bench:hold:"+strconv.Itoa(j))
			}
			pipe.Exec(ctx)
		}
	}
	return res, nil
}

// progress prints a live line to stderr each second until stopped.
func (r *benchRun) progress(start time.Time) func() {
	if r.cmd.Quiet {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-done:
				fmt.Fprintln(os.Stderr)
				return
			case now := <-t.C:
				ops := r.ops.Load()
				rate := float64(ops-last) / now.Sub(lastAt).Seconds()
				last, lastAt = ops, now
				fmt.Fprintf(os.Stderr, "\r%s %s c=%d: %.0f ops/s, %d total, %d errors   ",
					r.cmd.Target, r.cmd.Mode, r.cmd.Connections, rate, ops, r.errs.Load())
			}
		}
	}()
	return func() { close(done); <-finished }
}

func printSummary(w io.Writer, r *benchResult) {
	if r.Ping != nil {
		fmt.Fprintf(w, "====== %s %s: %s ======\n", r.Target, r.Mode, r.Phase)
		fmt.Fprintf(w, "  attack: %s\n  result: %s\n", r.Attack, r.AttackResult)
		p := r.Ping
		fmt.Fprintf(w, "  bystander PING every %.0f µs, %d PINGs (ms): p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
			p.IntervalUs, p.Count, p.P50us/1000, p.P99us/1000, p.P999us/1000, p.MaxUs/1000)
		if p.Unanswered > 0 {
			fmt.Fprintf(w, "  %d PINGs had no reply until %v after the attack: counted with the time they waited\n", p.Unanswered, stallDrainTimeout)
		}
		if p.Errors > 0 {
			fmt.Fprintf(w, "  PING errors: %d (first: %s)\n", p.Errors, p.FirstError)
		}
		if r.Errors > 0 {
			fmt.Fprintf(w, "  errors: %d (first: %s)\n", r.Errors, r.FirstError)
		}
		return
	}
	unit := map[string]string{"cycle": "cycles", "contend": "handoffs", "rw": "cycles", "hold": "locks", "pipeline": "cycles", "ping": "cycles",
		"mlock": "cycles", "mlock-contend": "handoffs"}[r.Mode]
	mode := r.Mode
	if r.Shared {
		mode += " (shared)"
	}
	if r.Names > 0 {
		mode += fmt.Sprintf(" of %d names", r.Names)
	}
	fmt.Fprintf(w, "====== %s %s, %d connections ======\n", r.Target, mode, r.Connections)
	fmt.Fprintf(w, "  %d %s in %.2f s: %.0f %s/s\n", r.Ops, unit, r.Seconds, r.OpsPerSec, unit)
	if r.Mode == "rw" {
		fmt.Fprintf(w, "  %d shared, %d exclusive\n", r.Ops-r.Exclusive, r.Exclusive)
	}
	if r.Mode == "mlock" {
		fmt.Fprintf(w, "  %.0f names/s (each taken by one MLOCK, released by its own UNLOCK)\n", r.NamesPerSec)
	}
	if r.Mode == "hold" {
		fmt.Fprintf(w, "  server RSS per held lock: %.0f bytes", r.BytesPerLock)
		if r.UsedPerLock > 0 {
			fmt.Fprintf(w, " (used_memory: %.0f bytes)", r.UsedPerLock)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "  latency per %s (µs): p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n",
			strings.TrimSuffix(unit, "s"), r.P50us, r.P99us, r.P999us, r.MaxUs)
		fmt.Fprintf(w, "  requests: %d (%d wasted on polling)\n", r.Requests, r.Wasted)
		if r.ServerCPUus > 0 {
			fmt.Fprintf(w, "  server CPU: %.1f µs per %s\n", r.ServerCPUus, strings.TrimSuffix(unit, "s"))
		}
		if r.Mode == "contend" || r.Mode == "mlock-contend" {
			fmt.Fprintf(w, "  fairness: each client got %.2f to %.2f of the mean share\n", r.MinShare, r.MaxShare)
		}
		if r.Stalls != nil {
			fmt.Fprintf(w, "  stalls (%v or more without a handoff): %d; longest gap %.1f ms\n", stallGap, *r.Stalls, r.MaxGapMs)
		}
	}
	if r.Errors > 0 {
		fmt.Fprintf(w, "  errors: %d (first: %s)\n", r.Errors, r.FirstError)
	}
}

// serverPID reads process_id from INFO server (relock and Redis both have it).
func serverPID(ctx context.Context, rdb *redis.Client) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, err
	}
	if v := infoField(info, "process_id"); v != "" {
		return strconv.Atoi(v)
	}
	return 0, errors.New("no process_id in INFO")
}

func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
	return n
}

func infoField(info, field string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok && k == field {
			return v
		}
	}
	return ""
}

// procCPU returns a local process's user+system CPU time from /proc.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields overall, in clock ticks (100 per second).
	s := string(b)
	rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(rest) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(rest[11], 10, 64)
	st, _ := strconv.ParseInt(rest[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// procRSS returns a local process's resident set size in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("reading the server's RSS (is it on this machine?): %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS")
}
