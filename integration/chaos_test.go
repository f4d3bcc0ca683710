package integration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"
)

// The kill -9 campaign: clients cycle LOCK/UNLOCK/CHECK/TRYLOCK/RENEW with
// and without TTLs against --fsync always, close connections while
// holding, let TTLs run out, and the server is killed at random moments
// and restarted on the same data dir. The whole history is then checked:
//
//   - linearizable for the mutex-with-fences model of chaos_model_test.go
//     (porcupine): no acknowledged hold lost, nothing released comes back,
//     a lock's fences increase, expiry and restore grace within their
//     deadlines;
//   - every fence unique, and increasing in real time across locks and
//     restarts (checkFences);
//   - no key reported NOTHELD is held afterwards (checkResurrections: the
//     model finds this too, this names it plainly).
//
// Some kills are "quiet": for a few tens of ms before the kill the clients
// only read (CHECK, LOCKS), so that nothing commits between a release the
// server made on its own (disconnect, expiry) and the kill — a release
// that such a read revealed must have been committed before its reply.
//
// Against a server that commits such a release only with the next
// unrelated commit, the check finds it in about one quiet kill in three:
// the hold comes back as an orphan after the restart (CHECK by its key
// answers the restore grace left, LOCKS lists its fence).
//
// RELOCK_CHAOS_ROUNDS sets the number of kills (default 3, a few seconds,
// in `make test`; `make chaos` runs 25), RELOCK_CHAOS_SEED repeats a run's
// choices (not its timing).

const (
	chaosRoundsEnv = "RELOCK_CHAOS_ROUNDS"
	chaosSeedEnv   = "RELOCK_CHAOS_SEED"
	chaosWorkers   = 6
	chaosGrace     = 2 * time.Second // --restore-grace
	chaosPoolSize  = 32              // recent keys that clients CHECK
)

var chaosNames = []string{"chaos:a", "chaos:b", "chaos:c", "chaos:d", "chaos:e"}

// chaosHistory records the operations, with times in ns since began (the
// monotonic clock).
type chaosHistory struct {
	began time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation // guarded by mu
}

func (h *chaosHistory) now() int64 { return int64(time.Since(h.began)) }

func (h *chaosHistory) add(client int, in chaosInput, out chaosOutput) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: in.call, Output: out, Return: in.ret})
}

// chaosHold is a hold a worker was granted.
type chaosHold struct {
	name, key string
	ttl       time.Duration
	detach    bool
}

// chaosCampaign is one run: its history, the current server and round,
// and the keys clients look at.
type chaosCampaign struct {
	t     *testing.T
	h     chaosHistory
	conns atomic.Int64 // connection ids handed out
	quiet atomic.Bool  // clients only read until the kill

	mu    sync.Mutex
	addr  string      // the server's address; guarded by mu
	round int         // guarded by mu
	pool  []chaosHold // recent acknowledged grants; guarded by mu
}

func (cp *chaosCampaign) current() (addr string, round int) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.addr, cp.round
}

func (cp *chaosCampaign) remember(h chaosHold) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.pool = append(cp.pool, h)
	if len(cp.pool) > chaosPoolSize {
		cp.pool = slices.Delete(cp.pool, 0, len(cp.pool)-chaosPoolSize)
	}
}

// pick returns a recent key, one of the last few half of the time.
func (cp *chaosCampaign) pick(rng *rand.Rand) (chaosHold, bool) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	n := len(cp.pool)
	if n == 0 {
		return chaosHold{}, false
	}
	if rng.IntN(2) == 0 {
		return cp.pool[n-1-rng.IntN(min(n, 4))], true
	}
	return cp.pool[rng.IntN(n)], true
}

// chaosWorker is one client: one connection at a time (a new one after
// every broken or deliberately closed connection) and at most one hold.
type chaosWorker struct {
	cp   *chaosCampaign
	id   int
	rng  *rand.Rand
	c    *redis.Client
	conn int        // the model's id of c's connection
	hold *chaosHold // acknowledged and, as far as this worker knows, held
}

func (w *chaosWorker) connect() {
	addr, _ := w.cp.current()
	w.c = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, ReadTimeout: -1,
		ContextTimeoutEnabled: true, DialTimeout: 2 * time.Second})
	w.conn = int(w.cp.conns.Add(1))
}

// hangUp closes the worker's connection: a release by disconnect of its
// bound hold, when the server is alive (see liveDisconnects).
func (w *chaosWorker) hangUp() {
	_, round := w.cp.current()
	in := chaosInput{op: opDisconnect, conn: w.conn, round: round, call: w.cp.h.now()}
	w.c.Close()
	in.ret = w.cp.h.now()
	w.cp.h.add(w.id, in, chaosOutput{})
}

// disconnect closes the worker's connection and opens a new one.
func (w *chaosWorker) disconnect() {
	w.hangUp()
	w.connect()
}

// exec runs one command, records it and returns its outcome. A reply that
// never came (the server was killed) is an unknown outcome, after which
// the worker closes its connection.
func (w *chaosWorker) exec(in chaosInput, wait time.Duration, args ...any) chaosOutput {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+wait)
	defer cancel()
	_, in.round = w.cp.current()
	in.conn = w.conn
	in.call = w.cp.h.now()
	cmd := w.c.Do(ctx, args...)
	in.ret = w.cp.h.now()
	out := chaosReply(w.cp.t, in, cmd, cmd.Err(), args)
	w.cp.h.add(w.id, in, out)
	if out.unknown {
		w.disconnect()
	}
	return out
}

// chaosReply is the outcome of one campaign command from its reply: a
// key or a TTL, a refusal that changed nothing (nil, NOTHELD, DEADLOCK),
// or unknown (no reply, -TRYAGAIN, an unexpected error, which also fails
// the test).
func chaosReply(t testing.TB, in chaosInput, cmd *redis.Cmd, err error, args []any) chaosOutput {
	acquire := in.op == opLock || in.op == opTryLock
	var out chaosOutput
	var rerr redis.Error
	switch {
	case err == nil:
		out.ok = true
		switch in.op {
		case opLock, opTryLock:
			out.key, _ = cmd.Val().(string)
			f, perr := parseFence(out.key)
			if perr != nil {
				t.Errorf("%v: %v", args, perr)
			}
			out.fence = f
		case opCheck:
			out.ttlMs, _ = cmd.Val().(int64)
		}
	case errors.Is(err, redis.Nil) && acquire:
	case errors.As(err, &rerr) && strings.HasPrefix(err.Error(), "DEADLOCK") && in.op == opLock:
		// Workers holding some locks and waiting for others close
		// cycles: refused, nothing changed — as a WAIT that ran out
		// while the lock was held.
	case errors.As(err, &rerr) && strings.HasPrefix(err.Error(), "NOTHELD") && !acquire:
	case errors.As(err, &rerr) && strings.HasPrefix(err.Error(), "TRYAGAIN"):
		out.unknown = true // a cluster's leader changed while applying it
	case errors.As(err, &rerr):
		t.Errorf("%v: unexpected error reply %v", args, err)
		out.unknown = true
	default:
		out.unknown = true
	}
	return out
}

// randomAcquire draws a campaign's LOCK (with a WAIT) or TRYLOCK on a
// random lock, with no TTL, a short one (expiring within the round) or a
// long one, sometimes DETACHed: its input, arguments and WAIT.
func randomAcquire(rng *rand.Rand, try bool) (chaosInput, []any, time.Duration) {
	name := chaosNames[rng.IntN(len(chaosNames))]
	var ttl time.Duration
	switch r := rng.IntN(100); {
	case r < 35:
	case r < 75:
		ttl = time.Duration(50+rng.IntN(250)) * time.Millisecond
	default:
		ttl = 3 * time.Second
	}
	detach := ttl > 0 && rng.IntN(100) < 15
	in := chaosInput{op: opLock, name: name, ttl: int64(ttl), detach: detach}
	args := []any{"LOCK", name}
	if try {
		in.op, args[0] = opTryLock, "TRYLOCK"
	}
	if ttl > 0 {
		args = append(args, "TTL", ttl.Milliseconds())
	}
	var wait time.Duration
	if !try {
		wait = time.Duration(10+rng.IntN(140)) * time.Millisecond
		args = append(args, "WAIT", wait.Milliseconds())
	}
	if detach {
		args = append(args, "DETACH")
	}
	return in, args, wait
}

func parseFence(key string) (int64, error) {
	prefix, _, ok := strings.Cut(key, "-")
	f, err := strconv.ParseInt(prefix, 10, 64)
	if !ok || err != nil || f <= 0 {
		return 0, fmt.Errorf("malformed key %q", key)
	}
	return f, nil
}

// acquire runs a random LOCK or TRYLOCK (randomAcquire).
func (w *chaosWorker) acquire(try bool) {
	in, args, wait := randomAcquire(w.rng, try)
	if out := w.exec(in, wait, args...); out.ok {
		w.hold = &chaosHold{name: in.name, key: out.key, ttl: time.Duration(in.ttl), detach: in.detach}
		w.cp.remember(*w.hold)
	}
}

// checkKey runs CHECK name key and returns whether the key holds the lock.
func (w *chaosWorker) checkKey(h chaosHold) chaosOutput {
	return w.exec(chaosInput{op: opCheck, name: h.name, key: h.key}, 0, "CHECK", h.name, h.key)
}

// locks runs LOCKS over the campaign's names and records it as one
// observation per lock.
func (w *chaosWorker) locks() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, round := w.cp.current()
	call := w.cp.h.now()
	ls, err := readLocks(ctx, w.c, "MATCH", "chaos:*")
	ret := w.cp.h.now()
	for _, name := range chaosNames {
		out := chaosOutput{unknown: err != nil, ok: true}
		for _, l := range ls {
			if l.Name == name {
				for _, hv := range l.Holders {
					out.fences = append(out.fences, hv.Fence)
				}
			}
		}
		w.cp.h.add(w.id, chaosInput{op: opLocks, name: name, conn: w.conn, round: round, call: call, ret: ret}, out)
	}
	if err != nil {
		w.disconnect()
	}
}

// step runs one random operation.
func (w *chaosWorker) step() {
	if w.cp.quiet.Load() {
		w.quietStep()
		return
	}
	r := w.rng.IntN(100)
	if w.hold == nil {
		switch {
		case r < 40:
			w.acquire(false)
		case r < 60:
			w.acquire(true)
		case r < 95:
			if h, ok := w.cp.pick(w.rng); ok {
				w.checkKey(h)
			}
		default:
			w.locks()
		}
		return
	}
	h := *w.hold
	switch {
	case r < 30:
		w.exec(chaosInput{op: opUnlock, name: h.name, key: h.key}, 0, "UNLOCK", h.name, h.key)
		w.hold = nil
	case r < 50:
		if out := w.checkKey(h); !out.ok {
			w.hold = nil
		}
	case r < 60:
		w.dropConnection()
	case r < 65:
		w.reset()
	case r < 75 && h.ttl > 0:
		w.hold = nil // abandoned: its TTL runs out
	case r < 75:
		w.exec(chaosInput{op: opUnlock, name: h.name, key: h.key}, 0, "UNLOCK", h.name, h.key)
		w.hold = nil
	case r < 95:
		if o, ok := w.cp.pick(w.rng); ok {
			w.checkKey(o)
		}
	default:
		w.locks()
	}
}

// quietStep runs one operation of the quiet phase before a kill: a holder
// may close its connection or RESET (the server releases on its own), the
// others only read, so that nothing else commits.
func (w *chaosWorker) quietStep() {
	r := w.rng.IntN(100)
	switch {
	case w.hold != nil && r < 50:
		w.dropConnection()
	case w.hold != nil && r < 60:
		w.reset()
	case r < 95:
		if h, ok := w.cp.pick(w.rng); ok {
			w.checkKey(h)
		}
	default:
		w.locks()
	}
}

// dropConnection closes the connection of the worker's hold: a detached
// hold survives, a bound one is released by the server on its own. Its key
// becomes the most recent in the pool, for the others to CHECK.
func (w *chaosWorker) dropConnection() {
	w.disconnect()
	w.cp.remember(*w.hold)
	w.hold = nil
}

// reset runs RESET, which releases the connection's bound hold.
func (w *chaosWorker) reset() {
	out := w.exec(chaosInput{op: opReset}, 0, "RESET")
	if w.hold != nil && (out.unknown || !w.hold.detach) {
		w.hold = nil
	}
}

// work runs the worker for one round: it adopts (RENEW) or abandons the
// hold it had when the server was killed, then runs operations until ctx
// ends (the server was killed), at most maxOps.
func (w *chaosWorker) work(ctx context.Context, maxOps int) {
	w.connect()
	defer w.hangUp()
	if h := w.hold; h != nil {
		w.hold = nil
		if w.rng.IntN(2) == 0 {
			if out := w.exec(chaosInput{op: opRenew, name: h.name, key: h.key}, 0, "RENEW", h.name, h.key); out.ok {
				w.hold = h
			}
		}
	}
	for i := 0; i < maxOps && ctx.Err() == nil; i++ {
		w.step()
		if d := w.rng.IntN(3); d > 0 { // think time, not synchronization
			time.Sleep(time.Duration(d) * time.Millisecond)
		}
	}
}

// checkPool CHECKs every recent key at once, right after a restart, before
// the restore grace ends.
func (cp *chaosCampaign) checkPool(w *chaosWorker) {
	cp.mu.Lock()
	pool := slices.Clone(cp.pool)
	cp.mu.Unlock()
	w.connect()
	defer w.hangUp()
	for _, h := range pool {
		w.checkKey(h)
	}
}

// chaosSettings returns a campaign's number of kills (countEnv, else
// def) and its seed (RELOCK_CHAOS_SEED, else the clock).
func chaosSettings(t *testing.T, countEnv string, def int) (int, uint64) {
	t.Helper()
	n := def
	if s := os.Getenv(countEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive number", countEnv, s)
		}
		n = v
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(chaosSeedEnv); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	return n, seed
}

func TestChaos_KillDuringLockTrafficKeepsHistoryLinearizable(t *testing.T) {
	rounds, seed := chaosSettings(t, chaosRoundsEnv, 3)
	t.Logf("seed %d (%s to repeat), %d rounds", seed, chaosSeedEnv, rounds)
	rng := rand.New(rand.NewPCG(seed, seed^0xc4a05))

	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--fsync", "always", "--restore-grace", chaosGrace.String()}
	cp := &chaosCampaign{t: t, h: chaosHistory{began: time.Now()}}
	srv := startServer(t, args...)
	cp.addr = srv.Addr
	workers := make([]*chaosWorker, chaosWorkers)
	for i := range workers {
		workers[i] = &chaosWorker{cp: cp, id: i, rng: rand.New(rand.NewPCG(seed+uint64(i)+1, seed))}
	}
	checker := &chaosWorker{cp: cp, id: chaosWorkers, rng: rand.New(rand.NewPCG(seed, 0))}
	const maxOps = 5000 // per worker and round: bounds a round if a kill never comes

	// runWorkers runs every worker until stop returns, then waits for
	// them (bounded).
	runWorkers := func(stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.work(ctx, maxOps)
			}()
		}
		stop()
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("workers did not stop within 30s of the end of their round")
		}
	}

	quietKills := 0
	for round := range rounds {
		busy := time.Duration(100+rng.IntN(300)) * time.Millisecond
		quiet := rng.IntN(3) != 0 // two kills in three
		var kill int64
		runWorkers(func() {
			time.Sleep(busy) // the random moment of the kill
			if quiet {
				quietKills++
				cp.quiet.Store(true)
				time.Sleep(time.Duration(30+rng.IntN(70)) * time.Millisecond)
			}
			kill = cp.h.now()
			srv.Kill()
		})
		cp.quiet.Store(false)
		srv = startServer(t, args...)
		listening := cp.h.now()
		cp.mu.Lock()
		cp.addr, cp.round = srv.Addr, round+1
		cp.mu.Unlock()
		cp.h.add(chaosWorkers+1, chaosInput{op: opRestart, round: round + 1, call: kill, ret: listening, grace: int64(chaosGrace)}, chaosOutput{})
		cp.checkPool(checker)
		t.Logf("round %d: killed after %v (quiet %v), restarted in %v, %d operations so far",
			round, busy, quiet, time.Duration(listening-kill), len(cp.h.ops))
	}
	// A last round without a kill sees what the last restart brought back.
	runWorkers(func() { time.Sleep(300 * time.Millisecond) })
	srv.Stop()

	ops := liveDisconnects(cp.h.ops)
	checkFences(t, ops)
	checkResurrections(t, ops)
	checkChaosLinearizable(t, ops, seed)
	t.Logf("%d rounds (%d quiet kills), %d operations, %v", rounds, quietKills, len(ops), time.Since(cp.h.began))
}

// liveDisconnects drops the connection closes that came after the kill of
// their round: the connection died with the server, which released
// nothing. (A client learns of the kill only from its broken connection,
// and then closes it; kept, such a close would let the model release any
// hold of that connection before the restart.)
func liveDisconnects(ops []porcupine.Operation) []porcupine.Operation {
	killedAt := map[int]int64{} // round → when its server was killed
	for _, op := range ops {
		if in := op.Input.(chaosInput); in.op == opRestart {
			killedAt[in.round-1] = in.call
		}
	}
	return slices.DeleteFunc(slices.Clone(ops), func(op porcupine.Operation) bool {
		in := op.Input.(chaosInput)
		k, killed := killedAt[in.round]
		return in.op == opDisconnect && killed && in.call >= k
	})
}

// checkFences checks every acknowledged grant's fence: unique, and larger
// than the fence of every grant acknowledged before it was requested
// (across locks and restarts: max(high-water+1, now µs) at start).
func checkFences(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	type grant struct {
		call, ret, fence int64
		desc             string
	}
	var grants []grant
	for _, op := range ops {
		in, out := op.Input.(chaosInput), op.Output.(chaosOutput)
		if (in.op == opLock || in.op == opTryLock) && out.ok {
			grants = append(grants, grant{op.Call, op.Return, out.fence, describeChaosOp(in, out)})
		}
	}
	seen := map[int64]string{}
	for _, g := range grants {
		if prev, dup := seen[g.fence]; dup {
			t.Errorf("fence %d granted twice: %s and %s", g.fence, prev, g.desc)
		}
		seen[g.fence] = g.desc
	}
	byRet := slices.Clone(grants)
	slices.SortFunc(byRet, func(a, b grant) int { return cmp.Compare(a.ret, b.ret) })
	slices.SortFunc(grants, func(a, b grant) int { return cmp.Compare(a.call, b.call) })
	var before grant // the largest fence acknowledged so far
	i := 0
	for _, g := range grants {
		for ; i < len(byRet) && byRet[i].ret < g.call; i++ {
			if byRet[i].fence > before.fence {
				before = byRet[i]
			}
		}
		if before.fence != 0 && g.fence <= before.fence {
			t.Errorf("fence went backwards: %s after %s", g.desc, before.desc)
		}
	}
	if len(grants) == 0 {
		t.Error("no grant was acknowledged")
	}
}

// checkResurrections reports keys that a reply showed not holding their
// lock and that a later reply (requested after it) showed holding it.
func checkResurrections(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	gone := map[string]porcupine.Operation{} // key → first NOTHELD reply
	sorted := slices.Clone(ops)
	slices.SortFunc(sorted, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	for _, op := range sorted {
		in, out := op.Input.(chaosInput), op.Output.(chaosOutput)
		if in.op != opCheck && in.op != opUnlock && in.op != opRenew || out.unknown {
			continue
		}
		if !out.ok {
			if _, ok := gone[in.key]; !ok {
				gone[in.key] = op
			}
			continue
		}
		if g, ok := gone[in.key]; ok && g.Return < op.Call {
			t.Errorf("released hold came back: %s, then %s", describeChaosOp(g.Input, g.Output), describeChaosOp(in, out))
		}
	}
}

// checkChaosLinearizable checks the history against mutexModel, one lock
// at a time, and for a lock whose history is not linearizable logs where
// it goes wrong and writes porcupine's visualization.
func checkChaosLinearizable(t *testing.T, ops []porcupine.Operation, seed uint64) {
	t.Helper()
	model := mutexModel.ToModel()
	model.Partition, model.PartitionEvent = nil, nil
	for _, part := range partitionByLock(ops) {
		name := part[0].Input.(chaosInput).name
		began := time.Now()
		res, info := porcupine.CheckOperationsVerbose(model, part, 3*time.Minute)
		switch res {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			t.Logf("%s: the linearizability check timed out after %v: inconclusive", name, time.Since(began))
			continue
		}
		// The longest prefix porcupine could linearize, and the
		// operations that could come next: one of them cannot.
		var longest []porcupine.Operation
		for _, l := range info.PartialLinearizationsOperations()[0] {
			if len(l) > len(longest) {
				longest = l
			}
		}
		var b strings.Builder
		for _, op := range longest[max(0, len(longest)-15):] {
			b.WriteString("\n    " + describeChaosOp(op.Input, op.Output))
		}
		b.WriteString("\n  and none of these can come next:")
		var rest []porcupine.Operation
		for _, op := range part {
			if !slices.ContainsFunc(longest, func(l porcupine.Operation) bool { return l.Call == op.Call && l.Input == op.Input }) {
				rest = append(rest, op)
			}
		}
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		for _, op := range rest[:min(len(rest), 6)] {
			b.WriteString("\n    " + describeChaosOp(op.Input, op.Output))
		}
		// The story of the first key among them.
		for _, op := range rest[:min(len(rest), 6)] {
			key := op.Input.(chaosInput).key
			if key == "" {
				continue
			}
			b.WriteString("\n  " + key + " and the restarts:")
			for _, o := range part {
				if in := o.Input.(chaosInput); in.key == key || in.op == opRestart || o.Output.(chaosOutput).key == key {
					b.WriteString("\n    " + describeChaosOp(o.Input, o.Output))
				}
			}
			break
		}
		path := filepath.Join(os.TempDir(), fmt.Sprintf("relock-chaos-%d-%s.html", seed, strings.TrimPrefix(name, "chaos:")))
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			path = err.Error()
		}
		t.Errorf("%s: history not linearizable for the mutex-with-fences model (seed %d, visualization %s); the longest linearizable prefix ends with:%s",
			name, seed, path, b.String())
	}
}
