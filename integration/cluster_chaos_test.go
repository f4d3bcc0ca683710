package integration

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"
)

// The leader-kill campaign: the kill -9 campaign of chaos_test.go on a
// three-process Raft cluster (cluster_test.go's harness). Clients cycle
// LOCK/UNLOCK/CHECK/TRYLOCK/RENEW/RESET/LOCKS with and without TTLs
// against the leader, following -MOVED and reconnecting to whichever node
// leads, while the test kill -9s the current leader at random moments and
// restarts it. The whole history is then checked with chaos_test.go's
// checks and chaos_model_test.go's model:
//
//   - linearizable for the mutex-with-fences model (porcupine): no
//     acknowledged hold lost across failovers, nothing released comes
//     back, a lock's fences increase, TTL expiry and the orphans' restore
//     grace within their deadlines;
//   - every fence unique, and increasing in real time across locks and
//     leaders (checkFences);
//   - no key reported NOTHELD is held afterwards (checkResurrections).
//
// What the model needs to know about a cluster, and how the test tells it:
//
//   - A takeover is the model's opRestart. A new leader's takeover entry
//     turns every connection-bound hold into an orphan whose deadline is
//     the takeover's clock + --restore-grace (or its own, if sooner), as a
//     single server's restart does. takeoverMonitor polls every node's
//     INFO replication and records each takeover it sees — those that
//     follow a kill and any other election (a loaded machine may call
//     one) — over an interval that contains it: from the latest moment at
//     which some node was seen in the previous leader's term or lower (no
//     node can lead a later term before it leaves that term) to the first
//     LOCKS the new leader serves (a node serves lock commands only once
//     its own takeover entry of its current term is applied).
//   - Requests that were not applied are not in the history: -MOVED and
//     -CLUSTERDOWN (a follower answers them without proposing anything),
//     "session ended" (the connection's session was orphaned before the
//     request; the request changed nothing), a refused connection.
//   - A request whose outcome is unknown (its connection dropped, or
//     -TRYAGAIN) was appended to the log of a leader that then died or
//     lost leadership: the first takeover after it either commits it or
//     drops it for good. Its interval is extended to the end of that
//     takeover's interval (settleClusterHistory), where a single server's
//     unknown outcomes end with the kill.
//   - A connection closed after its node was killed releases nothing, and
//     a request sent on it after the kill did nothing: both are dropped,
//     as liveDisconnects does for the single server.
//
// RELOCK_CLUSTER_CHAOS_KILLS sets the number of leader kills (default 3,
// about 10 s, in `make test`; `make chaos` runs 20);
// RELOCK_CHAOS_SEED repeats a run's choices (not its timing).

const (
	clusterChaosKillsEnv = "RELOCK_CLUSTER_CHAOS_KILLS"
	clusterChaosWorkers  = 6
	clusterChaosGrace    = 2 * time.Second // --restore-grace
	clusterChaosProbe    = "chaos-probe:*" // what the monitor's LOCKS asks for: no campaign lock
)

// nodeLife names one process of a node: its index and how many of its
// processes were reaped before it.
type nodeLife struct{ node, life int }

// takeover is one leader takeover the monitor saw, over [call, ret] in
// history time.
type takeover struct {
	term      uint64
	node      int
	call, ret int64
}

// clusterCampaign is one run of the leader-kill campaign. The embedded
// chaosCampaign brings the history, connection ids, the quiet phase and
// the pool of recent keys.
type clusterCampaign struct {
	*chaosCampaign
	c *testCluster

	lmu       sync.Mutex
	lives     []int              // per node: processes reaped so far; guarded by lmu
	reapedAt  map[nodeLife]int64 // when each reaped process was gone; guarded by lmu
	connLife  map[int]nodeLife   // the model's connection id → the process it reached; guarded by lmu
	kills     int                // guarded by lmu
	leader    int                // the node of the last takeover seen, -1 before; guarded by lmu
	takeovers []takeover         // in the order seen (terms increase); guarded by lmu
}

func (cp *clusterCampaign) life(node int) nodeLife {
	cp.lmu.Lock()
	defer cp.lmu.Unlock()
	return nodeLife{node, cp.lives[node]}
}

// opsSoFar returns how many operations the history has.
func (cp *clusterCampaign) opsSoFar() int {
	cp.h.mu.Lock()
	defer cp.h.mu.Unlock()
	return len(cp.h.ops)
}

func (cp *clusterCampaign) killCount() int {
	cp.lmu.Lock()
	defer cp.lmu.Unlock()
	return cp.kills
}

// lastTakeover returns the last takeover seen (ok false: none yet).
func (cp *clusterCampaign) lastTakeover() (takeover, bool) {
	cp.lmu.Lock()
	defer cp.lmu.Unlock()
	if len(cp.takeovers) == 0 {
		return takeover{}, false
	}
	return cp.takeovers[len(cp.takeovers)-1], true
}

// addrFor returns the address a connection attempt should try: the
// leader's at first, then each node in turn.
func (cp *clusterCampaign) addrFor(attempt int) (string, int) {
	cp.lmu.Lock()
	leader := cp.leader
	cp.lmu.Unlock()
	n := len(cp.c.nodes)
	i := attempt % n
	if leader >= 0 {
		i = (leader + attempt) % n
	}
	return cp.c.nodes[i].addr, i
}

func (cp *clusterCampaign) nodeOf(addr string) int {
	for i, nd := range cp.c.nodes {
		if nd.addr == addr {
			return i
		}
	}
	return -1
}

// kill kill -9s node i's process, waits until it is reaped and records
// when: a connection to it closed later released nothing.
func (cp *clusterCampaign) kill(i int) {
	cp.c.nodes[i].srv.Kill()
	gone := cp.h.now()
	cp.lmu.Lock()
	defer cp.lmu.Unlock()
	cp.reapedAt[nodeLife{i, cp.lives[i]}] = gone
	cp.lives[i]++ // whatever listens on its address from now on is a new process
	cp.kills++
}

// cut counts a fault that leaves the leader's process running (its Raft
// link cut). Unlike a kill, nothing sent to it is dropped from the
// history: what it appended while it still believed it led may yet be
// committed, for it may lead again (its log is the longest of its term)
// and commit it with its takeover. So its unknown outcomes are settled by
// the next takeover, and its connections' closes doom their holds, as
// before the cut.
func (cp *clusterCampaign) cut() {
	cp.lmu.Lock()
	defer cp.lmu.Unlock()
	cp.kills++
}

// errConnGone: a dialNode client's one connection was closed, and no
// request went out.
var errConnGone = errors.New("this client's connection was closed (a new connection is a new client)")

// dialNode connects to addr (a refused connection fails at once, without
// go-redis's dial retries and their log lines) and returns a client on
// that one connection, which it never replaces. ReadTimeout -1: a blocking
// LOCK waits as long as its context allows.
func dialNode(ctx context.Context, addr string, readTimeout time.Duration) (*redis.Client, error) {
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var used sync.Once
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, DialerRetries: 1,
		ReadTimeout: readTimeout, ContextTimeoutEnabled: true,
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			conn := net.Conn(nil)
			used.Do(func() { conn = nc })
			if conn == nil {
				return nil, errConnGone // never re-dialled: a new connection is a new client
			}
			return conn, nil
		}})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// clusterWorker is one client: one connection at a time to whichever node
// it was sent to, and at most one hold.
type clusterWorker struct {
	cp   *clusterCampaign
	id   int
	rng  *rand.Rand
	c    *redis.Client // nil: not connected
	conn int           // the model's id of c's connection
	used bool          // c was sent a LOCK, TRYLOCK or RENEW: its close may release a hold
	next string        // the address to try first (from -MOVED)
	hold *chaosHold    // acknowledged and, as far as this worker knows, held
	lost bool          // hold's connection broke: adopt it (RENEW) or abandon it next
}

// connect opens a connection to the leader, or to any node that answers;
// false when ctx ended first.
func (w *clusterWorker) connect(ctx context.Context) bool {
	n := len(w.cp.c.nodes)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		addr, i := w.next, w.cp.nodeOf(w.next)
		w.next = ""
		if i < 0 {
			addr, i = w.cp.addrFor(attempt)
		}
		// The process reached is the one that lived at the address both
		// before and after the dial (a restart bumps it after the reap).
		before := w.cp.life(i)
		c, err := dialNode(ctx, addr, -1)
		if err == nil && w.cp.life(i) != before {
			c.Close()
			err = errors.New("the node was restarted meanwhile")
		}
		if err != nil {
			if attempt%n == n-1 {
				time.Sleep(10 * time.Millisecond) // pacing while no node answers, not synchronization
			}
			continue
		}
		w.c, w.used = c, false
		w.conn = int(w.cp.conns.Add(1))
		w.cp.lmu.Lock()
		w.cp.connLife[w.conn] = before
		w.cp.lmu.Unlock()
		return true
	}
	return false
}

// hangUp closes the worker's connection; the close is recorded if it may
// release a hold (settleClusterHistory drops it if the node was dead).
func (w *clusterWorker) hangUp() {
	if w.c == nil {
		return
	}
	in := chaosInput{op: opDisconnect, conn: w.conn, round: w.cp.killCount(), call: w.cp.h.now()}
	w.c.Close()
	in.ret = w.cp.h.now()
	if w.used {
		w.cp.h.add(w.id, in, chaosOutput{})
	}
	w.c = nil
}

// drop hangs up a connection that failed; a hold bound to it is lost.
func (w *clusterWorker) drop() {
	if w.hold != nil {
		w.lost = true
	}
	w.hangUp()
}

// send runs do on a connection to the leader. A request that was not
// applied (-MOVED, -CLUSTERDOWN, an ended session, a connection found
// closed before sending) is not recorded and is sent again, to the node
// named or after a pause. It returns do's error and the interval of the
// attempt that counted, done false if the campaign ended first.
func (w *clusterWorker) send(ctx context.Context, in *chaosInput, wait time.Duration, do func(context.Context) error) (err error, done bool) {
	for ctx.Err() == nil {
		if w.c == nil && !w.connect(ctx) {
			break
		}
		in.conn, in.round = w.conn, w.cp.killCount()
		octx, cancel := context.WithTimeout(context.Background(), 10*time.Second+wait)
		in.call = w.cp.h.now()
		err = do(octx)
		in.ret = w.cp.h.now()
		cancel()
		var rerr redis.Error
		msg := ""
		if errors.As(err, &rerr) {
			msg = err.Error()
		}
		switch {
		case errors.Is(err, errConnGone): // closed while idle (a leader that lost leadership): nothing was sent
		case strings.HasPrefix(msg, "MOVED "):
			w.next = msg[strings.LastIndexByte(msg, ' ')+1:]
		case strings.HasPrefix(msg, "CLUSTERDOWN"):
			time.Sleep(10 * time.Millisecond) // no leader yet: pacing, not synchronization
		case strings.HasPrefix(msg, "ERR this connection's session ended"):
		default:
			switch in.op {
			case opLock, opTryLock, opRenew:
				w.used = true // applied, or maybe: closing c may release a hold
			}
			return err, true
		}
		w.drop()
	}
	return nil, false
}

// exec runs one command through send and records it. A reply that never
// came or -TRYAGAIN is an unknown outcome, after which the worker hangs up.
func (w *clusterWorker) exec(ctx context.Context, in chaosInput, wait time.Duration, args ...any) (chaosOutput, bool) {
	var cmd *redis.Cmd
	err, done := w.send(ctx, &in, wait, func(octx context.Context) error {
		cmd = w.c.Do(octx, args...)
		return cmd.Err()
	})
	if !done {
		return chaosOutput{}, false
	}
	out := chaosReply(w.cp.t, in, cmd, err, args)
	w.cp.h.add(w.id, in, out)
	if out.unknown {
		w.drop()
	}
	return out, true
}

// acquire runs a random LOCK or TRYLOCK (randomAcquire).
func (w *clusterWorker) acquire(ctx context.Context, try bool) {
	in, args, wait := randomAcquire(w.rng, try)
	if out, _ := w.exec(ctx, in, wait, args...); out.ok {
		w.hold = &chaosHold{name: in.name, key: out.key, ttl: time.Duration(in.ttl), detach: in.detach}
		w.cp.remember(*w.hold)
	}
}

func (w *clusterWorker) checkKey(ctx context.Context, h chaosHold) chaosOutput {
	out, _ := w.exec(ctx, chaosInput{op: opCheck, name: h.name, key: h.key}, 0, "CHECK", h.name, h.key)
	return out
}

// locks runs LOCKS over the campaign's names and records it as one
// observation per lock.
func (w *clusterWorker) locks(ctx context.Context) {
	var ls []lockView
	in := chaosInput{op: opLocks}
	err, done := w.send(ctx, &in, 0, func(octx context.Context) error {
		var err error
		ls, err = readLocks(octx, w.c, "MATCH", "chaos:*")
		return err
	})
	if !done {
		return
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		w.cp.t.Errorf("LOCKS: unexpected error reply %v", err)
	}
	for _, name := range chaosNames {
		out := chaosOutput{unknown: err != nil, ok: true}
		for _, l := range ls {
			if l.Name == name {
				for _, hv := range l.Holders {
					out.fences = append(out.fences, hv.Fence)
				}
			}
		}
		in.name = name
		w.cp.h.add(w.id, in, out)
	}
	if err != nil {
		w.drop()
	}
}

// step runs one random operation, as chaosWorker.step does, after
// adopting or abandoning a hold whose connection broke.
func (w *clusterWorker) step(ctx context.Context) {
	if w.lost {
		w.lost = false
		if h := w.hold; h != nil {
			w.hold = nil
			if w.rng.IntN(2) == 0 {
				in := chaosInput{op: opRenew, name: h.name, key: h.key}
				if out, _ := w.exec(ctx, in, 0, "RENEW", h.name, h.key); out.ok {
					w.hold = h
				}
			}
			return
		}
	}
	if w.cp.quiet.Load() {
		w.quietStep(ctx)
		return
	}
	r := w.rng.IntN(100)
	if w.hold == nil {
		switch {
		case r < 40:
			w.acquire(ctx, false)
		case r < 60:
			w.acquire(ctx, true)
		case r < 95:
			if h, ok := w.cp.pick(w.rng); ok {
				w.checkKey(ctx, h)
			}
		default:
			w.locks(ctx)
		}
		return
	}
	h := *w.hold
	switch {
	case r < 30:
		w.exec(ctx, chaosInput{op: opUnlock, name: h.name, key: h.key}, 0, "UNLOCK", h.name, h.key)
		w.hold = nil
	case r < 50:
		if out := w.checkKey(ctx, h); !out.ok && !out.unknown {
			w.hold = nil
		}
	case r < 60:
		w.dropConnection()
	case r < 65:
		w.reset(ctx)
	case r < 75 && h.ttl > 0:
		w.hold = nil // abandoned: its TTL runs out
	case r < 75:
		w.exec(ctx, chaosInput{op: opUnlock, name: h.name, key: h.key}, 0, "UNLOCK", h.name, h.key)
		w.hold = nil
	case r < 95:
		if o, ok := w.cp.pick(w.rng); ok {
			w.checkKey(ctx, o)
		}
	default:
		w.locks(ctx)
	}
}

// quietStep is chaosWorker.quietStep: before a quiet kill, holders may
// close their connection or RESET, the others only read.
func (w *clusterWorker) quietStep(ctx context.Context) {
	r := w.rng.IntN(100)
	switch {
	case w.hold != nil && r < 50:
		w.dropConnection()
	case w.hold != nil && r < 60:
		w.reset(ctx)
	case r < 95:
		if h, ok := w.cp.pick(w.rng); ok {
			w.checkKey(ctx, h)
		}
	default:
		w.locks(ctx)
	}
}

// dropConnection closes the connection of the worker's hold: a detached
// hold survives, a bound one is released by the leader.
func (w *clusterWorker) dropConnection() {
	w.hangUp()
	w.cp.remember(*w.hold)
	w.hold = nil
}

// reset runs RESET, which releases the connection's bound hold.
func (w *clusterWorker) reset(ctx context.Context) {
	out, _ := w.exec(ctx, chaosInput{op: opReset}, 0, "RESET")
	if w.hold != nil && (out.unknown || !w.hold.detach) {
		w.hold = nil
	}
}

// work runs operations until ctx ends, at most maxOps.
func (w *clusterWorker) work(ctx context.Context, maxOps int) {
	defer w.hangUp()
	for i := 0; i < maxOps && ctx.Err() == nil; i++ {
		w.step(ctx)
		if d := w.rng.IntN(3); d > 0 { // think time, not synchronization
			time.Sleep(time.Duration(d) * time.Millisecond)
		}
	}
}

// checkPool CHECKs every recent key, right after a takeover, before the
// restore grace ends.
func (w *clusterWorker) checkPool(ctx context.Context) {
	w.cp.mu.Lock()
	pool := slices.Clone(w.cp.pool)
	w.cp.mu.Unlock()
	defer w.hangUp()
	for _, h := range pool {
		w.checkKey(ctx, h)
	}
}

// takeoverMonitor polls every node's INFO replication and records each
// takeover as an opRestart in the history (see the top of this file).
type takeoverMonitor struct {
	cp      *clusterCampaign
	clients []*redis.Client // per node; nil: not connected
	lastLow []int64         // per node: when it was last seen in the last takeover's term or lower
	term    uint64          // the last takeover's term
}

// run polls until ctx ends.
func (m *takeoverMonitor) run(ctx context.Context) {
	defer func() {
		for _, c := range m.clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i := range m.clients {
			m.poll(ctx, i)
		}
	}
}

// info runs INFO replication on node i (bounded to 1 s).
func (m *takeoverMonitor) info(ctx context.Context, i int) (map[string]string, error) {
	if m.clients[i] == nil {
		c, err := dialNode(ctx, m.cp.c.nodes[i].addr, time.Second)
		if err != nil {
			return nil, err
		}
		m.clients[i] = c
	}
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	text, err := m.clients[i].Info(ictx, "replication").Result()
	if err != nil {
		m.clients[i].Close()
		m.clients[i] = nil
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

func (m *takeoverMonitor) poll(ctx context.Context, i int) {
	call := m.cp.h.now()
	info, err := m.info(ctx, i)
	if err != nil {
		return
	}
	term, _ := strconv.ParseUint(info["raft_term"], 10, 64)
	if term <= m.term {
		m.lastLow[i] = call
		return
	}
	if info["role"] != "master" || info["raft_leader_addr"] != m.cp.c.nodes[i].addr {
		return
	}
	// Node i leads term, and its takeover entry of that term may be
	// applied: it is if it serves a LOCKS while still leading term.
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	_, lerr := readLocks(lctx, m.clients[i], "MATCH", clusterChaosProbe)
	cancel()
	served := m.cp.h.now()
	if lerr != nil {
		return
	}
	after, err := m.info(ctx, i)
	if err != nil || after["raft_term"] != info["raft_term"] || after["role"] != "master" {
		return
	}
	from := slices.Min(m.lastLow) - clockMargin
	in := chaosInput{op: opRestart, call: from, ret: served, grace: int64(clusterChaosGrace)}
	m.cp.lmu.Lock()
	in.round = m.cp.kills
	m.cp.takeovers = append(m.cp.takeovers, takeover{term: term, node: i, call: from, ret: served})
	m.cp.leader = i
	m.cp.lmu.Unlock()
	m.cp.h.add(clusterChaosWorkers+1, in, chaosOutput{})
	m.term = term
	m.lastLow[i] = served
}

// TestCluster_ChaosLeaderKillsKeepHistoryLinearizable: six clients cycle
// lock commands through whichever node leads while the leader is kill -9ed
// at random moments (two kills in three after a quiet phase in which the
// clients only read) and restarted, before or after a new leader takes
// over; right after each takeover a checker CHECKs every recent key. The
// history is linearizable for chaos_model_test.go's model, fences are
// unique and increase in real time, and nothing released comes back.
func TestCluster_ChaosLeaderKillsKeepHistoryLinearizable(t *testing.T) {
	kills, seed := chaosSettings(t, clusterChaosKillsEnv, 3)
	t.Logf("seed %d (%s to repeat), %d leader kills", seed, chaosSeedEnv, kills)
	c := startClusterWith(t, 3, func(*clusterNode) []string {
		return []string{"--restore-grace", clusterChaosGrace.String()}
	})
	runLeaderFaults(t, c, kills, seed, leaderFault{
		what:   "killed",
		strike: func(cp *clusterCampaign, i int) { cp.kill(i) },
		healable: func(_ *clusterCampaign, _ int, rng *rand.Rand) {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		},
		heal: func(cp *clusterCampaign, i int) { cp.c.nodes[i].restart(t) },
	})
}

// leaderFault is what a campaign does to the leader, and undoes.
type leaderFault struct {
	what string // for the log: "killed", "cut off"
	// strike takes node i out of the cluster (and records it: kill, cut).
	strike func(cp *clusterCampaign, i int)
	// healable returns once node i may be healed before a new leader
	// took over (after a random pause).
	healable func(cp *clusterCampaign, i int, rng *rand.Rand)
	// heal brings node i back, as a follower.
	heal func(cp *clusterCampaign, i int)
}

// runLeaderFaults runs the campaign on cluster c (started with
// --restore-grace clusterChaosGrace): faults of the leader at random
// moments, each healed before or after a new leader takes over, then the
// history's checks.
func runLeaderFaults(t *testing.T, c *testCluster, faults int, seed uint64, fault leaderFault) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x1eade7))
	c.waitLeader(c.nodes, 20*time.Second)
	cp := &clusterCampaign{
		chaosCampaign: &chaosCampaign{t: t, h: chaosHistory{began: time.Now()}},
		c:             c, lives: make([]int, len(c.nodes)), reapedAt: map[nodeLife]int64{},
		connLife: map[int]nodeLife{}, leader: -1,
	}
	mon := &takeoverMonitor{cp: cp, clients: make([]*redis.Client, len(c.nodes)), lastLow: make([]int64, len(c.nodes))}
	monCtx, stopMon := context.WithCancel(context.Background())
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() { defer monWG.Done(); mon.run(monCtx) }()
	stopMonitor := func() { stopMon(); monWG.Wait() }
	defer stopMonitor()

	// waitTakeover waits until the monitor has seen a takeover after the
	// n-th, and returns it.
	waitTakeover := func(n int, within time.Duration) takeover {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			cp.lmu.Lock()
			seen := len(cp.takeovers)
			cp.lmu.Unlock()
			if seen > n {
				tk, _ := cp.lastTakeover()
				return tk
			}
			if time.Now().After(deadline) {
				t.Fatalf("the monitor saw no takeover within %v", within)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// settle waits until every node runs and follows one leader, and the
	// monitor has seen that leader's takeover.
	settle := func() takeover {
		t.Helper()
		leader, _ := c.waitLeader(c.nodes, 20*time.Second)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if tk, ok := cp.lastTakeover(); ok && c.nodes[tk.node] == leader {
				return tk
			}
			if time.Now().After(deadline) {
				t.Fatalf("the monitor did not see %s's takeover within 10s", leader.id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	settle()

	workers := make([]*clusterWorker, clusterChaosWorkers)
	for i := range workers {
		workers[i] = &clusterWorker{cp: cp, id: i, rng: rand.New(rand.NewPCG(seed+uint64(i)+1, seed))}
	}
	checker := &clusterWorker{cp: cp, id: clusterChaosWorkers, rng: rand.New(rand.NewPCG(seed, 0))}
	const maxOps = 100_000 // per worker: bounds the run if the kills never end
	ctx, stopWorkers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.work(ctx, maxOps)
		}()
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		stopWorkers()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("workers did not stop within 30s")
		}
	}
	defer stop()

	var failovers []time.Duration
	quietKills := 0
	for k := range faults {
		before := settle()
		busy := time.Duration(200+rng.IntN(600)) * time.Millisecond
		quiet := rng.IntN(3) != 0 // two kills in three
		time.Sleep(busy)          // the random moment of the kill
		if quiet {
			quietKills++
			cp.quiet.Store(true)
			time.Sleep(time.Duration(30+rng.IntN(70)) * time.Millisecond)
		}
		victim, _ := cp.lastTakeover() // the leader now (the last takeover may be later than before's)
		cp.lmu.Lock()
		seen := len(cp.takeovers)
		cp.lmu.Unlock()
		killedAt := cp.h.now()
		fault.strike(cp, victim.node)
		cp.quiet.Store(false)
		nd := c.nodes[victim.node]
		early := rng.IntN(2) == 0 // healed before a new leader is elected, or after
		if early {
			fault.healable(cp, victim.node, rng)
			fault.heal(cp, victim.node)
		}
		next := waitTakeover(seen, 20*time.Second)
		failovers = append(failovers, time.Duration(next.ret-killedAt))
		checker.checkPool(ctx)
		if !early {
			fault.heal(cp, victim.node)
		}
		t.Logf("fault %d: %s (term %d) %s after %v (quiet %v, healed early %v); %s took over (term %d) %v after it; %d operations so far",
			k, nd.id, before.term, fault.what, busy, quiet, early, c.nodes[next.node].id, next.term,
			time.Duration(next.ret-killedAt).Round(time.Millisecond), cp.opsSoFar())
	}
	// A last stretch without a kill sees what the last failover left.
	settle()
	time.Sleep(500 * time.Millisecond)
	stop()
	stopMonitor()

	ops := settleClusterHistory(cp)
	unknown := 0
	for _, op := range ops {
		if op.Output.(chaosOutput).unknown {
			unknown++
		}
	}
	// The first takeover is the cluster's first election.
	t.Logf("%d takeovers for %d faults; %d operations with an unknown outcome", len(cp.takeovers)-1, faults, unknown)
	checkFences(t, ops)
	checkResurrections(t, ops)
	checkChaosLinearizable(t, ops, seed)
	slices.Sort(failovers)
	t.Logf("%d leader faults (%s; %d quiet), %d operations, %v; fault to the new leader serving: median %v, max %v",
		faults, fault.what, quietKills, len(ops), time.Since(cp.h.began).Round(time.Millisecond),
		failovers[len(failovers)/2].Round(time.Millisecond), failovers[len(failovers)-1].Round(time.Millisecond))
}

// settleClusterHistory returns the campaign's history as the model reads
// it:
//
//   - a connection close, or a request whose outcome is unknown, sent
//     after the process it reached was reaped did nothing: dropped;
//   - any other unknown outcome was appended to the log of a leader that
//     then lost leadership, and is settled by the first takeover of a later
//     term: before it, or never. Its interval ends with that takeover's
//     (the first one seen after the request returned whose term is above
//     that of every takeover seen before it was sent; the end of the
//     history if none).
func settleClusterHistory(cp *clusterCampaign) []porcupine.Operation {
	cp.lmu.Lock()
	defer cp.lmu.Unlock()
	end := cp.h.now()
	var out []porcupine.Operation
	for _, op := range cp.h.ops {
		in, res := op.Input.(chaosInput), op.Output.(chaosOutput)
		if in.op == opDisconnect || res.unknown {
			life, ok := cp.connLife[in.conn]
			if gone, dead := cp.reapedAt[life]; ok && dead && in.call >= gone {
				continue
			}
		}
		if res.unknown {
			// Takeovers seen before the request was sent: it went to the
			// leader of their last term or a later one.
			seenBefore, _ := slices.BinarySearchFunc(cp.takeovers, in.call, func(tk takeover, call int64) int {
				if tk.ret <= call {
					return -1
				}
				return 1
			})
			settled := end
			for _, tk := range cp.takeovers[seenBefore:] {
				if tk.ret >= in.ret {
					settled = tk.ret
					break
				}
			}
			in.ret = max(in.ret, settled)
			op.Input, op.Return = in, in.ret
		}
		out = append(out, op)
	}
	return out
}
