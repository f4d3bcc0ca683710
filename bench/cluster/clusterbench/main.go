// Command clusterbench is the etcd side of `make bench-cluster` (the performance targets,
// the cluster bullet) and the glue that drives both 3-node clusters:
//
//	clusterbench etcd     --endpoints E --mode cycle|contend -c N -d D   etcd's concurrency.Mutex Lock+Unlock
//	clusterbench exec     --pids P,P,P -- bin/relock bench ... --json    run relock bench, add the CPU of all nodes
//	clusterbench leader   --target relock|etcd --addrs A,A,A           print the leader's client address
//	clusterbench failover --target relock|etcd --pid P --survivors A,A kill -9 the leader, time the next grant
//	clusterbench wait     --target relock|etcd --addr A                wait until a (restarted) node knows a leader
//
// It lives in its own Go module (bench/cluster/go.mod) so that relock's
// go.mod does not take etcd's dependency tree. Every result is one JSON
// line in the shape of `relock bench --json` (bench/report -cluster reads
// them). Every loop is bounded by time and by count.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

const (
	// maxIterations bounds every load loop by count as well as by time.
	maxIterations = 100_000_000
	// maxSamples bounds the latencies kept for percentiles.
	maxSamples = 2_000_000
	// attemptTimeout bounds one request of leader and wait.
	attemptTimeout = time.Second
	// retryPause is how often a failover client starts an attempt.
	retryPause = 10 * time.Millisecond
	// maxAttempts bounds a failover client's attempts.
	maxAttempts = 10_000
)

// result is one run's outcome, in the fields of `relock bench --json`,
// plus the CPU of every node and the failover time.
type result struct {
	Label       string  `json:"label,omitempty"`
	Target      string  `json:"target"`
	Mode        string  `json:"mode"`
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
	Ops         int64   `json:"ops"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	Requests    int64   `json:"requests"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	P999us      float64 `json:"p999_us"`
	MaxUs       float64 `json:"max_us"`
	ServerCPUus float64 `json:"server_cpu_us_per_op"`            // the leader's
	ClusterCPU  float64 `json:"cluster_cpu_us_per_op,omitempty"` // all nodes'
	ClientCPU   float64 `json:"client_cpu_us_per_op,omitempty"`  // the load generator's
	MinShare    float64 `json:"min_share,omitempty"`
	MaxShare    float64 `json:"max_share,omitempty"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"` // failover: of the first failed attempt
	// failover
	FailoverMs float64 `json:"failover_ms,omitempty"`
	Attempts   int     `json:"attempts,omitempty"`
	Killed     string  `json:"killed,omitempty"`
	GrantedBy  string  `json:"granted_by,omitempty"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("clusterbench: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: clusterbench etcd|exec|leader|failover|wait [flags]")
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	target := fs.String("target", "relock", "relock or etcd")
	addrs := fs.String("addrs", "", "leader: every node's client address, comma-separated")
	addr := fs.String("addr", "", "wait: the node's client address")
	endpoints := fs.String("endpoints", "", "etcd: the endpoints the clients use, comma-separated")
	mode := fs.String("mode", "cycle", "etcd: cycle (each connection its own mutex) or contend (all on one)")
	conns := fs.Int("c", 16, "etcd: connections (clients, each with its own session)")
	dur := fs.Duration("d", 5*time.Second, "etcd: how long to run")
	label := fs.String("label", "", "label of the JSON result")
	pids := fs.String("pids", "", "etcd, exec: every node's pid (CPU per operation across the cluster)")
	leaderPID := fs.Int("leader-pid", 0, "etcd: the leader's pid (its CPU per operation)")
	pid := fs.Int("pid", 0, "failover: the leader's pid, to kill -9")
	survivors := fs.String("survivors", "", "failover: the other nodes' client addresses, comma-separated")
	leader := fs.String("leader", "", "failover: the leader's client address, checked just before the kill (exit status 3 if it is not the leader)")
	timeout := fs.Duration("timeout", 30*time.Second, "leader, failover, wait: give up after")
	attempt := fs.Duration("attempt-timeout", time.Second, "failover: how long one lock attempt may take (one starts every 10 ms)")
	if err := fs.Parse(args); err != nil {
		log.Fatal(err)
	}
	var res *result
	var err error
	switch cmd {
	case "etcd":
		res, err = etcdBench(split(*endpoints), *mode, *conns, *dur, parsePIDs(*pids), *leaderPID)
	case "exec":
		err = execWithCPU(parsePIDs(*pids), fs.Args())
	case "leader":
		var a string
		a, err = waitLeader(*target, split(*addrs), *timeout)
		if err == nil {
			fmt.Println(a)
		}
	case "failover":
		res, err = failover(*target, *pid, *leader, split(*survivors), *timeout, *attempt)
		if errors.Is(err, errNotLeader) {
			log.Print(err)
			os.Exit(3)
		}
	case "wait":
		_, err = waitLeader(*target, []string{*addr}, *timeout)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		log.Fatalf("%s: %v", cmd, err)
	}
	if res != nil {
		res.Label, res.Target = *label, *target
		if cmd == "etcd" {
			res.Target = "etcd"
		}
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			log.Fatal(err)
		}
	}
}

func split(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func parsePIDs(s string) []int {
	var out []int
	for _, x := range split(s) {
		n, err := strconv.Atoi(x)
		if err != nil {
			log.Fatalf("--pids: %q", x)
		}
		out = append(out, n)
	}
	return out
}

// cpuOf returns the user+system CPU time of local processes, from /proc.
func cpuOf(pids ...int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(rest) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(rest[11], 10, 64)
		st, _ := strconv.ParseInt(rest[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond // 100 ticks/s
	}
	return total
}

func perOp(d time.Duration, ops int64) float64 {
	if ops <= 0 || d <= 0 {
		return 0
	}
	return float64(d/time.Microsecond) / float64(ops)
}

// execWithCPU runs a `relock bench --json` command line and adds the CPU
// per operation of every node (pids) to each JSON line it prints.
func execWithCPU(pids []int, argv []string) error {
	if len(argv) == 0 {
		return errors.New("exec: no command after --")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	cpu0 := cpuOf(pids...)
	out, err := cmd.Output()
	cpu := cpuOf(pids...) - cpu0
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	client := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return fmt.Errorf("not a JSON line: %q", line)
		}
		if ops, ok := m["ops"].(float64); ok {
			m["cluster_cpu_us_per_op"] = perOp(cpu, int64(ops))
			m["client_cpu_us_per_op"] = perOp(client, int64(ops))
		}
		if err := json.NewEncoder(os.Stdout).Encode(m); err != nil {
			return err
		}
	}
	return nil
}

// quietLogger keeps the etcd client's gRPC chatter (a killed node) off the
// terminal.
var quietLogger = zap.NewNop()

func etcdClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: quietLogger,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
	})
}

// newSession grants a session's lease (TTL 60 s, kept alive by the client)
// within 10 s.
func newSession(cli *clientv3.Client) (*concurrency.Session, error) {
	ctx, cancel := context.WithTimeout(cli.Ctx(), 10*time.Second)
	defer cancel()
	id, err := cli.Grant(ctx, 60)
	if err != nil {
		return nil, err
	}
	return concurrency.NewSession(cli, concurrency.WithLease(id.ID))
}

// etcdBench runs conns clients, each with its own connection and session,
// locking and unlocking a concurrency.Mutex (its own, or one for all in
// contend mode) for dur.
func etcdBench(endpoints []string, mode string, conns int, dur time.Duration, pids []int, leaderPID int) (*result, error) {
	if mode != "cycle" && mode != "contend" {
		return nil, fmt.Errorf("--mode %q: cycle or contend", mode)
	}
	if conns < 1 || conns > 10000 {
		return nil, errors.New("-c must be between 1 and 10000")
	}
	sessions := make([]*concurrency.Session, conns)
	for i := range sessions {
		cli, err := etcdClient(endpoints)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		s, err := newSession(cli)
		if err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
		defer s.Close()
		sessions[i] = s
	}
	var (
		ops, reqs, errs atomic.Int64
		errMu           sync.Mutex
		err1            string
		wg              sync.WaitGroup
	)
	counts := make([]int64, conns)
	lats := make([][]time.Duration, conns)
	perConn := maxSamples / conns
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	cpu0, lcpu0, self0 := cpuOf(pids...), cpuOf(leaderPID), cpuOf(os.Getpid())
	start := time.Now()
	for i, s := range sessions {
		name := "/bench/" + strconv.Itoa(i)
		if mode == "contend" {
			name = "/bench/contended"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := concurrency.NewMutex(s, name)
			for n := 0; n < maxIterations && ctx.Err() == nil; n++ {
				t0 := time.Now()
				err := m.Lock(ctx)
				reqs.Add(1)
				if err == nil {
					// Release even if the run's deadline has just passed.
					uctx, ucancel := context.WithTimeout(context.Background(), 5*time.Second)
					err = m.Unlock(uctx)
					ucancel()
					reqs.Add(1)
				}
				if err != nil {
					if dl, _ := ctx.Deadline(); time.Until(dl) > 10*time.Millisecond {
						errs.Add(1)
						errMu.Lock()
						if err1 == "" {
							err1 = err.Error()
						}
						errMu.Unlock()
						time.Sleep(retryPause)
					}
					continue
				}
				if len(lats[i]) < perConn {
					lats[i] = append(lats[i], time.Since(t0))
				}
				counts[i]++
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu, lcpu, self := cpuOf(pids...)-cpu0, cpuOf(leaderPID)-lcpu0, cpuOf(os.Getpid())-self0
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	n := ops.Load()
	res := &result{
		Mode: mode, Connections: conns, Seconds: elapsed.Seconds(), Ops: n, OpsPerSec: float64(n) / elapsed.Seconds(),
		Requests: reqs.Load(), P50us: pct(all, 50), P99us: pct(all, 99), P999us: pct(all, 99.9), MaxUs: pct(all, 100),
		ServerCPUus: perOp(lcpu, n), ClusterCPU: perOp(cpu, n), ClientCPU: perOp(self, n), Errors: errs.Load(), FirstError: err1,
	}
	if mode == "contend" && n > 0 {
		mean := float64(n) / float64(conns)
		res.MinShare, res.MaxShare = math.Inf(1), 0
		for _, c := range counts {
			res.MinShare = math.Min(res.MinShare, float64(c)/mean)
			res.MaxShare = math.Max(res.MaxShare, float64(c)/mean)
		}
	}
	return res, nil
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Microsecond)
}

func redisClient(addr string, poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, PoolSize: poolSize, MaxRetries: -1, DialTimeout: attemptTimeout,
		ReadTimeout: -1, WriteTimeout: attemptTimeout, ContextTimeoutEnabled: true, DisableIdentity: true,
	})
}

// waitLeader returns the client address of the leader as the nodes at addrs
// see it, once one of them knows it and the leader itself agrees; retries
// until timeout.
func waitLeader(target string, addrs []string, timeout time.Duration) (string, error) {
	if len(addrs) == 0 {
		return "", errors.New("no addresses")
	}
	deadline := time.Now().Add(timeout)
	last := errors.New("no leader yet")
	for i := 0; i < maxAttempts && time.Now().Before(deadline); i++ {
		for _, a := range addrs {
			var leader string
			var err error
			if target == "etcd" {
				leader, err = etcdLeader(a)
			} else {
				leader, err = relockLeader(a)
				if err == nil {
					// The leader must see itself as the leader.
					var self string
					if self, err = relockLeader(leader); err == nil && self != leader {
						err = fmt.Errorf("%s names %s, which names %s", a, leader, self)
					}
				}
			}
			if err == nil {
				return leader, nil
			}
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("no leader within %v: %w", timeout, last)
}

// relockLeader asks one relock node for the leader's client address
// (CLUSTER SLOTS: the leader serves every slot).
func relockLeader(addr string) (string, error) {
	c := redisClient(addr, 1)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	v, err := c.Do(ctx, "CLUSTER", "SLOTS").Slice()
	if err != nil {
		return "", err
	}
	if len(v) == 0 {
		return "", fmt.Errorf("%s knows no leader", addr)
	}
	slot, ok := v[0].([]any)
	if !ok || len(slot) < 3 {
		return "", fmt.Errorf("%s: CLUSTER SLOTS: unexpected %v", addr, v)
	}
	node, ok := slot[2].([]any)
	if !ok || len(node) < 2 {
		return "", fmt.Errorf("%s: CLUSTER SLOTS: unexpected %v", addr, v)
	}
	host, _ := node[0].(string)
	port, _ := node[1].(int64)
	return host + ":" + strconv.FormatInt(port, 10), nil
}

// etcdLeader asks one etcd member for the leader and returns its client
// address (the leader's member ID mapped through MemberList).
func etcdLeader(endpoint string) (string, error) {
	cli, err := etcdClient([]string{endpoint})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return "", err
	}
	if st.Leader == 0 {
		return "", fmt.Errorf("%s knows no leader", endpoint)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range ml.Members {
		if m.ID == st.Leader && len(m.ClientURLs) > 0 {
			return strings.TrimPrefix(m.ClientURLs[0], "http://"), nil
		}
	}
	return "", fmt.Errorf("%s: leader %x is not a member", endpoint, st.Leader)
}

var errNotLeader = errors.New("not the leader any more")

// failover kills the leader (pid) with SIGKILL and times, from the kill,
// how long a client retrying a lock of a fresh name against the survivors
// takes to be granted one. The client is connected before the kill. It
// starts an attempt every retryPause, each bounded by attemptTimeout and
// with a name of its own, without waiting for the previous ones: an etcd
// request that a follower forwards to the dead leader waits out its
// timeout, and a sequential client would then measure its own timeout
// rather than when the new leader first grants a lock. At most
// attemptTimeout/retryPause attempts are in flight.
func failover(target string, pid int, leader string, survivors []string, timeout, attemptTimeout time.Duration) (*result, error) {
	if pid <= 0 || leader == "" || len(survivors) == 0 {
		return nil, errors.New("failover needs --pid, --leader and --survivors")
	}
	prefix := "failover:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	var try func(ctx context.Context, n int) (string, error)
	switch target {
	case "relock":
		clients := map[string]*redis.Client{}
		for _, a := range survivors {
			clients[a] = redisClient(a, int(attemptTimeout/retryPause)+1)
			defer clients[a].Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := clients[a].Ping(ctx).Err()
			cancel()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", a, err)
			}
		}
		try = func(ctx context.Context, n int) (string, error) {
			name := prefix + strconv.Itoa(n)
			a := survivors[n%len(survivors)]
			// Follow -MOVED to a survivor at once (at most twice).
			for hop := 0; hop < 3; hop++ {
				key, err := clients[a].Do(ctx, "LOCK", name, "TTL", 30000).Text()
				if err == nil {
					uctx, ucancel := context.WithTimeout(context.Background(), time.Second)
					clients[a].Do(uctx, "UNLOCK", name, key)
					ucancel()
					return a, nil
				}
				moved, ok := strings.CutPrefix(err.Error(), "MOVED 0 ")
				if !ok || clients[moved] == nil || moved == a {
					return "", err
				}
				a = moved
			}
			return "", errors.New("too many -MOVED")
		}
	case "etcd":
		cli, err := etcdClient(survivors)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		// The session (its lease) is granted before the kill, as the
		// relock client's connections are made before it.
		sess, err := newSession(cli)
		if err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
		defer sess.Orphan()
		try = func(ctx context.Context, n int) (string, error) {
			// Fail fast on a member that knows it has no leader (as
			// relock's -CLUSTERDOWN does).
			ctx = clientv3.WithRequireLeader(ctx)
			m := concurrency.NewMutex(sess, "/"+prefix+strconv.Itoa(n))
			if err := m.Lock(ctx); err != nil {
				return "", err
			}
			uctx, ucancel := context.WithTimeout(context.Background(), time.Second)
			m.Unlock(uctx)
			ucancel()
			return "", nil
		}
	default:
		return nil, fmt.Errorf("--target %q", target)
	}

	type outcome struct {
		n       int
		by      string
		err     error
		elapsed time.Duration
	}
	results := make(chan outcome, maxAttempts)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Leadership may have moved since the caller looked (a restarted
	// node's election): the node killed must be the leader now.
	var self string
	var err error
	if target == "etcd" {
		self, err = etcdLeader(leader)
	} else {
		self, err = relockLeader(leader)
	}
	if err != nil || self != leader {
		return nil, fmt.Errorf("%w: %s names %q (%v)", errNotLeader, leader, self, err)
	}
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("kill -9 %d: %w", pid, err)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(retryPause)
	defer tick.Stop()
	maxInFlight := int(attemptTimeout/retryPause) + 1
	var inFlight, started, failed int
	var first, last string // the first and last failed attempts' errors, for the record
	launch := func() {
		started++
		inFlight++
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
			defer cancel()
			by, err := try(ctx, n)
			results <- outcome{n, by, err, time.Since(t0)}
		}(started)
	}
	launch()
	for {
		select {
		case o := <-results:
			inFlight--
			if o.err == nil {
				return &result{Mode: "failover", Connections: 1, FailoverMs: float64(o.elapsed) / float64(time.Millisecond),
					Attempts: o.n, Killed: strconv.Itoa(pid), GrantedBy: o.by, FirstError: first}, nil
			}
			failed++
			if first == "" {
				first = o.err.Error()
			}
			last = o.err.Error()
		case <-tick.C:
			if inFlight < maxInFlight && started < maxAttempts {
				launch()
			}
		case <-deadline.C:
			return nil, fmt.Errorf("no lock granted within %v of the kill (%d attempts failed; last: %s)", timeout, failed, last)
		}
	}
}
