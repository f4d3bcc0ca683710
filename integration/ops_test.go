package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/redis/go-redis/v9"
)

// Operating relock: the figures an on-call engineer reads (/metrics,
// /healthz, /readyz, INFO, CLIENT LIST), the structured logs, and the admin
// tools (`relock locks`, `relock unlock --force`).

// opsMetricsAddr returns the address of --metrics-listen from the server's
// "metrics listening" log line (the test passes 127.0.0.1:0).
func opsMetricsAddr(t testing.TB, srv *server) string {
	t.Helper()
	var addr string
	eventually(t, 5*time.Second, func() bool {
		v, _ := logField(srv, "metrics listening", "addr")
		addr, _ = v.(string)
		return addr != ""
	}, "no \"metrics listening\" log line with an addr")
	return addr
}

// opsGet fetches http://addr/path and returns the status and body.
func opsGet(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// opsScrape is one parsed /metrics scrape.
type opsScrape struct {
	raw  string
	fams map[string]*dto.MetricFamily
}

func opsScrapeMetrics(t testing.TB, addr string) opsScrape {
	t.Helper()
	code, body := opsGet(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d:\n%s", code, body)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return opsScrape{raw: body, fams: fams}
}

// value returns the value of the sample of family name whose labels include
// the label pairs given ("k", "v", ...): a counter's or gauge's value, a
// histogram's sample count. It fails the test unless exactly one sample
// matches.
func (s opsScrape) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	fam, ok := s.fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	var found []*dto.Metric
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples match, want 1", name, labels, len(found))
	}
	m := found[0]
	switch fam.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	t.Fatalf("%s has type %v", name, fam.GetType())
	return 0
}

// errorsSince returns relock_errors_total by code, less the counts of an
// earlier scrape (codes whose count did not change are left out). A stock
// client's handshake may draw errors (go-redis sends CLIENT
// MAINT_NOTIFICATIONS), so tests count from a scrape taken after it.
func (s opsScrape) errorsSince(before opsScrape) map[string]float64 {
	byCode := func(sc opsScrape) map[string]float64 {
		out := map[string]float64{}
		for _, m := range sc.fams["relock_errors_total"].GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "code" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
		return out
	}
	out, prev := byCode(s), byCode(before)
	for code, n := range out {
		if n -= prev[code]; n == 0 {
			delete(out, code)
		} else {
			out[code] = n
		}
	}
	return out
}

type opsWant struct {
	name   string
	labels []string
	want   float64
}

func (s opsScrape) check(t testing.TB, when string, wants []opsWant) {
	t.Helper()
	for _, w := range wants {
		if got := s.value(t, w.name, w.labels...); got != w.want {
			t.Errorf("%s: %s%v = %v, want %v", when, w.name, w.labels, got, w.want)
		}
	}
}

// opsDo runs one command that must succeed and returns its reply.
func opsDo(t testing.TB, c *redis.Client, args ...any) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Do(ctx, args...).Result()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

// opsNotHeld runs a command that must fail with -NOTHELD.
func opsNotHeld(t testing.TB, c *redis.Client, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, args...).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
		t.Fatalf("%v = %v, want NOTHELD", args, err)
	}
}

// opsGone waits until the lock no longer exists.
func opsGone(t testing.TB, c *redis.Client, name, why string) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool { _, ok := lockOf(t, c, name); return !ok }, "%s: lock %q still exists", why, name)
}

// opsClientLine returns the CLIENT LIST line of client id as its fields.
func opsClientLine(t testing.TB, c *redis.Client, id int64) map[string]string {
	t.Helper()
	list, ok := opsDo(t, c, "CLIENT", "LIST").(string)
	if !ok {
		t.Fatal("CLIENT LIST is not a string")
	}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := opsFields(line)
		if f["id"] == strconv.FormatInt(id, 10) {
			return f
		}
	}
	t.Fatalf("CLIENT LIST has no id=%d:\n%s", id, list)
	return nil
}

func opsFields(line string) map[string]string {
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	return f
}

// opsInfo returns every field of INFO.
func opsInfo(t testing.TB, c *redis.Client) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "all").Result()
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	f := map[string]string{}
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			f[k] = v
		}
	}
	return f
}

// opsSecret returns a random string that must never show up in a log.
func opsSecret(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestMetrics_ScrapeAfterScriptedWorkload runs a workload with a known
// count of each event and checks every counter, gauge and histogram count
// on /metrics, the same figures in INFO, the per-client counts in CLIENT
// LIST / CLIENT INFO, and that no label value (nor anything on the page)
// names a lock or shows a key.
func TestMetrics_ScrapeAfterScriptedWorkload(t *testing.T) {
	srv := startServer(t, "--metrics-listen", "127.0.0.1:0")
	addr := opsMetricsAddr(t, srv)

	if code, body := opsGet(t, addr, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %q, want 200", code, body)
	}
	if code, body := opsGet(t, addr, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %q, want 200", code, body)
	}

	a, c, d := srv.client(t), srv.client(t), srv.client(t)
	b := srv.client(t)
	aID, dID := clientID(t, a), clientID(t, d)
	before := opsScrapeMetrics(t, addr)
	errorsBefore, _ := strconv.Atoi(opsInfo(t, a)["total_error_replies"])
	var keys []string

	// 1. A grant released by UNLOCK; the same UNLOCK again is NOTHELD.
	k := mustLock(t, a, "LOCK", "ops:unlock")
	keys = append(keys, k)
	mustUnlock(t, a, "ops:unlock", k)
	opsNotHeld(t, a, "UNLOCK", "ops:unlock", k)

	// 2. A grant that expires; renewing it afterwards is NOTHELD.
	k = mustLock(t, a, "LOCK", "ops:ttl", "TTL", 20)
	keys = append(keys, k)
	opsGone(t, a, "ops:ttl", "TTL 20")
	opsNotHeld(t, a, "RENEW", "ops:ttl", k)

	// 3. A grant released because its connection closed.
	keys = append(keys, mustLock(t, b, "LOCK", "ops:conn"))
	b.Close()
	opsGone(t, a, "ops:conn", "holder disconnected")
	// B's session may end a moment after its hold was released.
	eventually(t, 5*time.Second, func() bool {
		return opsScrapeMetrics(t, addr).value(t, "relock_connected_clients") == 3
	}, "relock_connected_clients never 3 after B closed")

	// 4. A holds ops:queue; C's WAIT runs out; D queues.
	kQueue := mustLock(t, a, "LOCK", "ops:queue")
	keys = append(keys, kQueue)
	if err := c.Do(ctxFor(t, 5*time.Second), "LOCK", "ops:queue", "WAIT", 30).Err(); err != redis.Nil {
		t.Fatalf("LOCK ops:queue WAIT 30 = %v, want nil", err)
	}
	ctx := ctxFor(t, 20*time.Second)
	dGrant := lockAsync(ctx, d, "ops:queue")
	waitForWaiters(t, a, "ops:queue", 1)

	mid := opsScrapeMetrics(t, addr)
	mid.check(t, "while A holds and D waits", []opsWant{
		{"relock_holds", nil, 1},
		{"relock_waiters", nil, 1},
		{"relock_locks", nil, 1},
		{"relock_connected_clients", nil, 3},
		{"relock_grants_total", nil, 4},
		{"relock_wait_timeouts_total", nil, 1},
	})
	info := opsInfo(t, a)
	for k, want := range map[string]string{"holds": "1", "waiters": "1", "locks": "1", "blocked_clients": "1", "connected_clients": "3"} {
		if info[k] != want {
			t.Errorf("INFO %s:%s, want %s", k, info[k], want)
		}
	}
	// CLIENT LIST / CLIENT INFO: counts per client, never names or keys.
	if f := opsClientLine(t, a, aID); f["holds"] != "1" || f["waits"] != "0" {
		t.Errorf("CLIENT LIST line of the holder: holds=%s waits=%s, want 1 and 0", f["holds"], f["waits"])
	}
	if f := opsClientLine(t, a, dID); f["waits"] != "1" || f["holds"] != "0" || f["flags"] != "b" {
		t.Errorf("CLIENT LIST line of the waiter: holds=%s waits=%s flags=%s, want 0, 1, b", f["holds"], f["waits"], f["flags"])
	}
	ci, _ := opsDo(t, a, "CLIENT", "INFO").(string)
	if f := opsFields(ci); f["id"] != strconv.FormatInt(aID, 10) || f["holds"] != "1" || f["waits"] != "0" {
		t.Errorf("CLIENT INFO = %q, want id=%d holds=1 waits=0", ci, aID)
	}
	if list, _ := opsDo(t, a, "CLIENT", "LIST").(string); strings.Contains(list, "ops:") || strings.Contains(list, kQueue) {
		t.Errorf("CLIENT LIST shows a lock name or key:\n%s", list)
	}

	// 5. FORCEUNLOCK hands ops:queue to D (a grant after a wait); D unlocks.
	if n := opsDo(t, a, "FORCEUNLOCK", "ops:queue"); n != int64(1) {
		t.Fatalf("FORCEUNLOCK = %v, want 1", n)
	}
	g := awaitGrant(t, dGrant, 5*time.Second)
	keys = append(keys, g.key)
	mustUnlock(t, d, "ops:queue", g.key)
	// 6. The third NOTHELD: the forced-out key.
	opsNotHeld(t, a, "CHECK", "ops:queue", kQueue)

	end := opsScrapeMetrics(t, addr)
	end.check(t, "after the workload", []opsWant{
		{"relock_grants_total", nil, 5},
		{"relock_releases_total", []string{"reason", "unlock"}, 2},
		{"relock_releases_total", []string{"reason", "expired"}, 1},
		{"relock_releases_total", []string{"reason", "disconnect"}, 1},
		{"relock_releases_total", []string{"reason", "forced"}, 1},
		{"relock_wait_timeouts_total", nil, 1},
		{"relock_wait_seconds", nil, 1}, // sample count: D's grant after a wait
		{"relock_hold_seconds", nil, 5}, // sample count: one per release
		{"relock_command_duration_seconds", []string{"command", "lock"}, 6},
		{"relock_command_duration_seconds", []string{"command", "unlock"}, 3},
		{"relock_command_duration_seconds", []string{"command", "renew"}, 1},
		{"relock_command_duration_seconds", []string{"command", "check"}, 1},
		{"relock_command_duration_seconds", []string{"command", "forceunlock"}, 1},
		{"relock_holds", nil, 0},
		{"relock_waiters", nil, 0},
		{"relock_locks", nil, 0},
		{"relock_connected_clients", nil, 3},
		{"relock_connections_total", nil, 4},
		{"relock_rejected_connections_total", nil, 0},
		{"relock_auth_failures_total", nil, 0},
	})
	if got := end.errorsSince(before); !maps.Equal(got, map[string]float64{"NOTHELD": 3}) {
		t.Errorf("relock_errors_total grew by %v during the workload, want NOTHELD 3 only", got)
	}
	if got := end.value(t, "relock_last_fence"); got != float64(fenceOf(t, g.key)) {
		t.Errorf("relock_last_fence = %v, want the last grant's fence %d", got, fenceOf(t, g.key))
	}

	// INFO reports the same figures.
	info = opsInfo(t, a)
	for k, want := range map[string]string{
		"grants": "5", "grants_after_wait": "1", "wait_timeouts": "1",
		"releases_unlock": "2", "releases_expired": "1", "releases_disconnect": "1", "releases_forced": "1",
		"holds": "0", "waiters": "0", "locks": "0",
		"total_error_replies": strconv.Itoa(errorsBefore + 3), "connected_clients": "3", "total_connections_received": "4",
	} {
		if info[k] != want {
			t.Errorf("INFO %s:%s, want %s", k, info[k], want)
		}
	}

	// Bounded cardinality: label values come from fixed sets.
	names := []string{"ops:unlock", "ops:ttl", "ops:conn", "ops:queue"}
	for _, s := range []opsScrape{mid, end} {
		for fname, fam := range s.fams {
			for _, m := range fam.GetMetric() {
				for _, lp := range m.GetLabel() {
					for _, n := range names {
						if strings.Contains(lp.GetValue(), n) {
							t.Errorf("%s has label %s=%q naming lock %q", fname, lp.GetName(), lp.GetValue(), n)
						}
					}
				}
			}
		}
		if strings.Contains(s.raw, "ops:") {
			t.Errorf("/metrics mentions a lock name:\n%s", s.raw)
		}
		for _, k := range keys {
			if _, rnd, _ := strings.Cut(k, "-"); strings.Contains(s.raw, rnd) {
				t.Errorf("/metrics shows key %s", k)
			}
		}
	}
	cmds := end.fams["relock_command_duration_seconds"].GetMetric()
	if len(cmds) == 0 || len(cmds) > 64 {
		t.Errorf("relock_command_duration_seconds has %d series; want one per command in the table", len(cmds))
	}
}

// TestMetrics_ErrorCodesAreLabelsFromAFixedSet sends errors whose text
// carries client input and checks that only the codes become labels.
func TestMetrics_ErrorCodesAreLabelsFromAFixedSet(t *testing.T) {
	srv := startServer(t, "--metrics-listen", "127.0.0.1:0")
	addr := opsMetricsAddr(t, srv)
	c := srv.client(t)
	before := opsScrapeMetrics(t, addr)
	ctx := ctxFor(t, 10*time.Second)
	for _, args := range [][]any{
		{"NOSUCHCOMMAND", "ops:secret-name"},
		{"LOCK", "ops:size", "SIZE", 2},
		{"LOCK", "ops:size", "SIZE", 3},     // SIZEMISMATCH, names the lock in its text
		{"LOCK", "ops:x", "TTL", "ops:ttl"}, // not an integer
	} {
		c.Do(ctx, args...)
	}
	s := opsScrapeMetrics(t, addr)
	if got, want := s.errorsSince(before), map[string]float64{"ERR": 2, "SIZEMISMATCH": 1}; !maps.Equal(got, want) {
		t.Errorf("relock_errors_total grew by %v, want %v", got, want)
	}
	if strings.Contains(s.raw, "ops:") {
		t.Errorf("/metrics mentions a lock name from an error's text:\n%s", s.raw)
	}
}

// opsLogs returns the log lines with msg, in order.
func opsLogs(srv *server, msg string) []map[string]any {
	var out []map[string]any
	for _, m := range srv.Logs() {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// opsReleased returns the "released" log lines of lock with reason.
func opsReleased(srv *server, lock, reason string) []map[string]any {
	var out []map[string]any
	for _, m := range opsLogs(srv, "released") {
		if m["lock"] == lock && m["reason"] == reason {
			out = append(out, m)
		}
	}
	return out
}

// opsCheckEvent checks that exactly one log line is msg for lock (with
// reason, when not "") and that it has the level, fence and client.
func opsCheckEvent(t testing.TB, srv *server, msg, reason, level, lock string, fence, client int64) {
	t.Helper()
	var got []map[string]any
	for _, m := range opsLogs(srv, msg) {
		if m["lock"] == lock && (reason == "" || m["reason"] == reason) {
			got = append(got, m)
		}
	}
	if len(got) != 1 {
		t.Errorf("%d %q log lines for %s (reason %q), want 1:\n%s", len(got), msg, lock, reason, srv.logText())
		return
	}
	m := got[0]
	if m["level"] != level || m["fence"] != float64(fence) || m["client"] != float64(client) {
		t.Errorf("%q %s: level %v fence %v client %v, want %s %d %d", msg, lock, m["level"], m["fence"], m["client"], level, fence, client)
	}
}

// TestLogs_JSONLifecycleAndInvoluntaryReleases checks the JSON log of two
// runs on one data dir: the lifecycle at info, grants and unlocks at
// debug, every involuntary release at info with lock, fence, client and
// reason, and that no line shows a key or a password.
func TestLogs_JSONLifecycleAndInvoluntaryReleases(t *testing.T) {
	dir := t.TempDir()
	pass := opsSecret("pass-")
	withPass := func(o *redis.Options) { o.Password = pass }
	srv := startServer(t, "--data-dir", dir, "--requirepass", pass, "--metrics-listen", "127.0.0.1:0")
	a, b, c := srv.client(t, withPass), srv.client(t, withPass), srv.client(t, withPass)
	aID, bID, cID := clientID(t, a), clientID(t, b), clientID(t, c)
	var keys []string
	lock := func(cl *redis.Client, args ...any) string {
		t.Helper()
		k := mustLock(t, cl, "LOCK", args...)
		keys = append(keys, k)
		return k
	}

	kUnlock := lock(a, "logs:unlock")
	mustUnlock(t, a, "logs:unlock", kUnlock)
	kTTL := lock(a, "logs:ttl", "TTL", 20)
	opsGone(t, a, "logs:ttl", "TTL 20")
	kConn := lock(b, "logs:conn")
	b.Close()
	opsGone(t, a, "logs:conn", "holder disconnected")
	kForce := lock(a, "logs:force")
	waiting := lockAsync(ctxFor(t, 20*time.Second), c, "logs:force")
	waitForWaiters(t, a, "logs:force", 1)
	opsDo(t, a, "FORCEUNLOCK", "logs:force")
	kWaited := awaitGrant(t, waiting, 5*time.Second).key
	keys = append(keys, kWaited)
	kKept := lock(a, "logs:kept", "OWNER", "job-7")
	// A failed AUTH: the wrong password must not be logged either.
	wrong := opsSecret("wrong-")
	bad := srv.client(t)
	if err := bad.Do(ctxFor(t, 5*time.Second), "AUTH", wrong).Err(); err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	eventually(t, 5*time.Second, func() bool { return len(opsReleased(srv, "logs:ttl", "expired")) == 1 }, "no expiry logged")
	srv.Stop()

	// Lifecycle at info.
	for _, msg := range []string{"starting relock", "restored", "metrics listening", "listening", "shutting down", "state committed", "stopped"} {
		ls := opsLogs(srv, msg)
		if len(ls) != 1 || ls[0]["level"] != "INFO" {
			t.Errorf("%d %q lines (want 1 at INFO): %v", len(ls), msg, ls)
		}
	}
	if l := opsLogs(srv, "listening"); len(l) == 1 && l[0]["addr"] != srv.Addr {
		t.Errorf("listening addr %v, want %s", l[0]["addr"], srv.Addr)
	}
	if l := opsLogs(srv, "starting relock"); len(l) == 1 && l[0]["version"] == nil {
		t.Errorf("starting relock without a version: %v", l[0])
	}
	if n := restoredHolds(t, srv); n != 0 {
		t.Errorf("first start restored %d holds, want 0", n)
	}
	// Grants and unlocks at debug.
	opsCheckEvent(t, srv, "granted", "", "DEBUG", "logs:unlock", fenceOf(t, kUnlock), aID)
	opsCheckEvent(t, srv, "released", "unlock", "DEBUG", "logs:unlock", fenceOf(t, kUnlock), aID)
	opsCheckEvent(t, srv, "granted after wait", "", "DEBUG", "logs:force", fenceOf(t, kWaited), cID)
	// Involuntary releases at info, with the holder's client id.
	opsCheckEvent(t, srv, "released", "expired", "INFO", "logs:ttl", fenceOf(t, kTTL), aID)
	opsCheckEvent(t, srv, "released", "disconnect", "INFO", "logs:conn", fenceOf(t, kConn), bID)
	opsCheckEvent(t, srv, "released", "forced", "INFO", "logs:force", fenceOf(t, kForce), aID)
	for _, m := range opsLogs(srv, "released") {
		if _, ok := m["held_ms"].(float64); m["level"] == "INFO" && !ok {
			t.Errorf("involuntary release without held_ms: %v", m)
		}
	}
	if fu := opsLogs(srv, "force unlock"); len(fu) != 1 || fu[0]["by_client"] != float64(aID) {
		t.Errorf("force unlock lines %v, want one by client %d", fu, aID)
	}
	if af := opsLogs(srv, "authentication failed"); len(af) != 1 {
		t.Errorf("%d \"authentication failed\" lines, want 1", len(af))
	}

	// A restart restores the two bound holds left at the stop.
	srv2 := startServer(t, "--data-dir", dir, "--requirepass", pass)
	if n := restoredHolds(t, srv2); n != 2 {
		t.Errorf("second start restored %d holds (want logs:kept and logs:force)", n)
	}
	a2 := srv2.client(t, withPass)
	if ms := mustCheck(t, a2, "logs:kept", kKept); ms <= 0 {
		t.Errorf("restored orphan logs:kept has TTL %d ms, want the restore grace", ms)
	}
	srv2.Stop()
	if len(opsLogs(srv2, "stopped")) != 1 {
		t.Errorf("second run did not log \"stopped\"")
	}

	// Never a key or a password, at any level.
	for _, s := range []*server{srv, srv2} {
		text := s.logText()
		for _, k := range keys {
			_, rnd, _ := strings.Cut(k, "-")
			if strings.Contains(text, rnd) {
				t.Errorf("the log shows key %s:\n%s", k, text)
			}
		}
		for _, secret := range []string{pass, wrong} {
			if strings.Contains(text, secret) {
				t.Errorf("the log shows password %q:\n%s", secret, text)
			}
		}
		for _, m := range s.Logs() {
			if m["msg"] == "raw" {
				t.Errorf("a log line is not JSON: %v", m["line"])
			}
		}
	}
}

// opsLocksState sets up the locks of the golden file: jobs:build held
// re-entrantly with a TTL and two waiters, jobs:pool a semaphore with two
// of three slots taken, jobs:token a detached hold, and misc (outside
// jobs:*). It returns labels for the volatile fences and client ids.
func opsLocksState(t *testing.T, srv *server) (fences, clients map[string]string) {
	t.Helper()
	h1, h2, w1, w2 := srv.client(t), srv.client(t), srv.client(t), srv.client(t)
	clients = map[string]string{}
	for label, c := range map[string]*redis.Client{"<h1>": h1, "<h2>": h2, "<w1>": w1, "<w2>": w2} {
		clients[strconv.FormatInt(clientID(t, c), 10)] = label
	}
	fences = map[string]string{}
	label := func(name, key string) { fences[strconv.FormatInt(fenceOf(t, key), 10)] = name }

	label("<build>", mustLock(t, h1, "LOCK", "jobs:build", "TTL", 60000, "OWNER", "ci-runner-7"))
	mustLock(t, h1, "LOCK", "jobs:build", "TTL", 60000, "OWNER", "ci-runner-7") // count 2
	label("<pool-1>", mustLock(t, h1, "LOCK", "jobs:pool", "SIZE", 3))
	label("<pool-2>", mustLock(t, h2, "LOCK", "jobs:pool", "SIZE", 3, "TTL", 60000, "OWNER", "batch"))
	label("<token>", mustLock(t, h2, "LOCK", "jobs:token", "TTL", 60000, "DETACH"))
	mustLock(t, h1, "LOCK", "misc")
	ctx := ctxFor(t, 30*time.Second)
	lockAsync(ctx, w1, "jobs:build", "OWNER", "deployer")
	waitForWaiters(t, h1, "jobs:build", 1)
	lockAsync(ctx, w2, "jobs:build")
	waitForWaiters(t, h1, "jobs:build", 2)
	return fences, clients
}

var opsDurationRE = regexp.MustCompile(`^([0-9.]+(ns|µs|ms|s|m|h))+$`)

// opsNormalizeTable checks that the table's cells start at its header's
// columns, then re-renders it with volatile cells replaced: fences and
// client ids by their labels, TTLs and ages by <ttl> and <age>.
func opsNormalizeTable(t *testing.T, out string, fences, clients map[string]string) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	cols := strings.Fields(header)
	var starts []int
	for _, c := range cols {
		starts = append(starts, strings.Index(header, c))
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for n, line := range lines {
		if strings.TrimRight(line, " ") != line {
			t.Errorf("line %d has trailing blanks: %q", n+1, line)
		}
		cells := make([]string, len(cols))
		for i, s := range starts {
			if s >= len(line) {
				break
			}
			if s > 0 && line[s-1] != ' ' {
				t.Fatalf("line %d: a cell runs into column %s (not aligned):\n%s", n+1, cols[i], out)
			}
			end := len(line)
			if i+1 < len(starts) && starts[i+1] < end {
				end = starts[i+1]
			}
			cells[i] = strings.TrimSpace(line[s:end])
			if strings.Contains(cells[i], "  ") {
				t.Fatalf("line %d: column %s holds two cells %q (not aligned):\n%s", n+1, cols[i], cells[i], out)
			}
		}
		if n > 0 {
			for i, col := range cols {
				cells[i] = opsNormalizeCell(t, col, cells[i], fences, clients)
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	var trimmed strings.Builder
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		trimmed.WriteString(strings.TrimRight(l, " ") + "\n")
	}
	return trimmed.String()
}

func opsNormalizeCell(t *testing.T, col, cell string, fences, clients map[string]string) string {
	t.Helper()
	dur := func(s, placeholder string) string {
		d, err := time.ParseDuration(s)
		if !opsDurationRE.MatchString(s) || err != nil || d < 0 || d > time.Minute {
			t.Errorf("column %s: %q is not a duration within a minute", col, s)
		}
		return placeholder
	}
	switch col {
	case "FENCE":
		if _, err := strconv.ParseUint(cell, 10, 64); err == nil {
			if l, ok := fences[cell]; ok {
				return l
			}
			t.Errorf("fence %s is none the test was granted", cell)
		}
	case "CLIENT":
		if l, ok := clients[cell]; ok {
			return l
		}
		if _, err := strconv.Atoi(cell); err == nil {
			t.Errorf("client id %s is none of the test's clients", cell)
		}
	case "TTL":
		if cell != "-" && cell != "" {
			return dur(cell, "<ttl>")
		}
	case "AGE":
		if rest, ok := strings.CutPrefix(cell, "waited "); ok {
			return "waited " + dur(rest, "<t>")
		}
		if cell != "-" && cell != "" {
			return dur(cell, "<age>")
		}
	}
	return cell
}

// TestLocksTool_Golden compares `relock locks` and `relock locks -w` for a
// known state with testdata/locks.golden (RELOCK_UPDATE_GOLDEN=1 rewrites
// it). Fences, client ids and durations vary from run to run and are
// replaced by labels; the columns must line up with the header.
func TestLocksTool_Golden(t *testing.T) {
	srv := startServer(t)
	fences, clients := opsLocksState(t, srv)

	var got strings.Builder
	for i, args := range [][]string{{"jobs:*"}, {"-w", "jobs:*"}} {
		out, errOut, code := relockTool(t, append([]string{"locks", "--addr", srv.Addr}, args...)...)
		if code != 0 {
			t.Fatalf("relock locks %v exited %d: %s", args, code, errOut)
		}
		if i > 0 {
			got.WriteString("\n")
		}
		shown := strings.Join(args[:len(args)-1], " ") + " '" + args[len(args)-1] + "'"
		fmt.Fprintf(&got, "$ relock locks %s\n%s", strings.TrimSpace(shown), opsNormalizeTable(t, out, fences, clients))
		if w := strings.Count(out, "waiter "); (args[0] == "-w") != (w == 2) {
			t.Errorf("relock locks %v lists %d waiter rows", args, w)
		}
		if strings.Contains(out, "misc") {
			t.Errorf("relock locks %v shows misc, which does not match", args)
		}
	}
	golden := filepath.Join("testdata", "locks.golden")
	if os.Getenv("RELOCK_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (RELOCK_UPDATE_GOLDEN=1 writes it)", err)
	}
	if got.String() != string(want) {
		t.Errorf("relock locks output differs from %s (RELOCK_UPDATE_GOLDEN=1 rewrites it)\ngot:\n%s\nwant:\n%s", golden, got.String(), want)
	}

	out, errOut, code := relockTool(t, "locks", "--addr", srv.Addr, "nothing:*")
	if code != 0 || out != "" || !strings.Contains(errOut, `no locks match "nothing:*"`) {
		t.Errorf("relock locks nothing:* = %d, %q, %q; want 0 and a note on stderr", code, out, errOut)
	}
}

// TestLocksTool_WatchRedrawsUntilInterrupted runs `relock locks --watch`,
// checks that a later frame shows a lock taken after the first one, and
// that SIGINT ends it with status 0.
func TestLocksTool_WatchRedrawsUntilInterrupted(t *testing.T) {
	srv := startServer(t)
	c := srv.client(t)
	mustLock(t, c, "LOCK", "watch:a")
	cmd := exec.Command(relockBin, "locks", "--addr", srv.Addr, "--watch", "100ms", "watch:*")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	const clear = "\x1b[H\x1b[2J"
	eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "watch:a") }, "no frame shows watch:a:\n%s", out)
	mustLock(t, c, "LOCK", "watch:b")
	eventually(t, 10*time.Second, func() bool {
		frames := strings.Split(out.String(), clear)
		last := frames[len(frames)-1]
		return strings.Contains(last, "watch:a") && strings.Contains(last, "watch:b")
	}, "no frame shows watch:b:\n%q", out)
	if n := strings.Count(out.String(), clear); n < 2 {
		t.Errorf("%d frames, want at least 2", n)
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Errorf("relock locks --watch after SIGINT: %v\n%s", err, out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relock locks --watch did not exit within 10s of SIGINT")
	}

	if _, errOut, code := relockTool(t, "locks", "--addr", srv.Addr, "--watch", "10ms"); code != 1 || !strings.Contains(errOut, "at least 100ms") {
		t.Errorf("--watch 10ms = %d, %q; want 1 and a message", code, errOut)
	}
}

// opsToolStdin runs a relock tool with stdin given.
func opsToolStdin(t *testing.T, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(relockBin, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("relock %v did not exit within 20s", args)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestLocksTool_UnlockForceAsksUnlessYes: without --yes and without a
// terminal `relock unlock --force` refuses (exit 1, a message naming
// --yes) and releases nothing, even when "y" is piped in; with --yes it
// releases every hold.
func TestLocksTool_UnlockForceAsksUnlessYes(t *testing.T) {
	srv := startServer(t)
	h := srv.client(t)
	key := mustLock(t, h, "LOCK", "jobs:stuck", "OWNER", "w")
	mustLock(t, h, "LOCK", "jobs:stuck", "OWNER", "w") // count 2: released as one hold

	for _, tc := range []struct {
		name  string
		stdin io.Reader
	}{
		{"stdin /dev/null", nil},
		{"y piped in", strings.NewReader("y\n")},
	} {
		out, errOut, code := opsToolStdin(t, tc.stdin, "unlock", "--addr", srv.Addr, "--force", "jobs:stuck")
		if code != 1 || !strings.Contains(errOut, "--yes") || strings.Contains(out, "released") {
			t.Errorf("%s: unlock --force = %d, stdout %q, stderr %q; want 1 and a message naming --yes", tc.name, code, out, errOut)
		}
		if ms := mustCheck(t, h, "jobs:stuck", key); ms != -1 {
			t.Fatalf("%s: CHECK = %d, want the hold kept (-1)", tc.name, ms)
		}
	}
	if n := infoField(t, h, "releases_forced"); n != "0" {
		t.Fatalf("releases_forced %s after refusals, want 0", n)
	}

	out, errOut, code := relockTool(t, "unlock", "--addr", srv.Addr, "--force", "--yes", "jobs:stuck")
	if code != 0 || out != "released 1 hold of lock \"jobs:stuck\"\n" {
		t.Fatalf("unlock --force --yes = %d, %q, %q", code, out, errOut)
	}
	if _, err := check(h, "jobs:stuck", key); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
		t.Fatalf("CHECK after unlock --force --yes = %v, want NOTHELD", err)
	}
	out, _, code = relockTool(t, "unlock", "--addr", srv.Addr, "--force", "-y", "jobs:stuck")
	if code != 0 || out != "lock \"jobs:stuck\" was not held\n" {
		t.Errorf("unlock --force -y on a free lock = %d, %q", code, out)
	}
}

// TestOps_PprofOnlyWhenAsked: /debug/pprof/ is served on --metrics-listen
// with --pprof and not without.
func TestOps_PprofOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  int
	}{
		{nil, http.StatusNotFound},
		{[]string{"--pprof"}, http.StatusOK},
	} {
		srv := startServer(t, append([]string{"--metrics-listen", "127.0.0.1:0"}, tc.flags...)...)
		addr := opsMetricsAddr(t, srv)
		if code, _ := opsGet(t, addr, "/debug/pprof/"); code != tc.want {
			t.Errorf("%v: /debug/pprof/ = %d, want %d", tc.flags, code, tc.want)
		}
		if code, _ := opsGet(t, addr, "/healthz"); code != http.StatusOK {
			t.Errorf("%v: /healthz = %d, want 200", tc.flags, code)
		}
		srv.Stop()
	}
}

// TestOps_DocsAndDeployNameRealMetrics checks that every relock_* metric
// the README's "Operating relock" section, the alert rules and the Grafana
// dashboard name exists on a live /metrics (with --data-dir, so that the
// persistence metrics are there), that the README's table lists every
// relock_* family served, and that the bucket bounds the alerts use exist.
func TestOps_DocsAndDeployNameRealMetrics(t *testing.T) {
	srv := startServer(t, "--metrics-listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	s := opsScrapeMetrics(t, opsMetricsAddr(t, srv))

	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Operating relock\n")
	if !ok {
		t.Fatal(`README has no "## Operating relock" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	// The metrics subsection; the INFO one has relock_version, a field.
	_, metricsDoc, _ := strings.Cut(section, "\n### Metrics")
	metricsDoc, _, _ = strings.Cut(metricsDoc, "\n### ")
	sources := map[string]string{"README": metricsDoc}
	for _, f := range []string{"prometheus-alerts.yml", "grafana-dashboard.json"} {
		b, err := os.ReadFile(filepath.Join("..", "deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		sources[f] = string(b)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(sources["grafana-dashboard.json"]), &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("grafana-dashboard.json: %v, %d panels", err, len(dash.Panels))
	}

	nameRE := regexp.MustCompile(`relock_[a-z_]+[a-z]`)
	served := func(name string) bool {
		if _, ok := s.fams[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if f, ok := s.fams[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
					return true
				}
			}
		}
		return false
	}
	for src, text := range sources {
		for _, name := range nameRE.FindAllString(text, -1) {
			if !served(name) {
				t.Errorf("%s names %s, which /metrics does not serve", src, name)
			}
		}
	}
	for name := range s.fams {
		if strings.HasPrefix(name, "relock_") && !strings.Contains(metricsDoc, "| `"+name+"` |") {
			t.Errorf("/metrics serves %s, which the README's metric table does not list", name)
		}
	}

	bounds := map[string]bool{}
	for _, m := range s.fams["relock_hold_seconds"].GetMetric() {
		for _, b := range m.GetHistogram().GetBucket() {
			bounds[strconv.FormatFloat(b.GetUpperBound(), 'f', -1, 64)] = true
		}
	}
	for _, m := range regexp.MustCompile(`relock_hold_seconds_bucket\{le="([^"]+)"\}`).FindAllStringSubmatch(sources["prometheus-alerts.yml"], -1) {
		if !bounds[m[1]] {
			t.Errorf("prometheus-alerts.yml uses bucket le=%q, which relock_hold_seconds does not have", m[1])
		}
	}
}

// TestMetrics_OldestHoldAgeAndBuildInfo: relock_oldest_hold_age_seconds is
// 0 with nothing held, grows while a lock stays held (so that an alert
// fires before the release), and follows the next-oldest hold when the
// oldest goes; relock_build_info says which build runs, as INFO does.
func TestMetrics_OldestHoldAgeAndBuildInfo(t *testing.T) {
	srv := startServer(t, "--metrics-listen", "127.0.0.1:0")
	addr := opsMetricsAddr(t, srv)
	a := srv.client(t)
	age := func() float64 { return opsScrapeMetrics(t, addr).value(t, "relock_oldest_hold_age_seconds") }
	if v := age(); v != 0 {
		t.Fatalf("relock_oldest_hold_age_seconds with nothing held = %v, want 0", v)
	}
	// ops:old is a second older than ops:young; each bound below is what
	// the client's clock brackets (the server stamps a grant between the
	// request and its reply, an age between a scrape's start and end),
	// so that a slow scrape widens a bound rather than failing it.
	const gap = time.Second
	kOld := mustLock(t, a, "LOCK", "ops:old")
	time.Sleep(gap)
	young0 := time.Now()
	mustLock(t, a, "LOCK", "ops:young")
	young1 := time.Now()
	if v := age(); v < gap.Seconds() || v > 30 {
		t.Fatalf("relock_oldest_hold_age_seconds while ops:old is held over %v = %v", gap, v)
	}
	time.Sleep(100 * time.Millisecond)
	if v1, v2 := age(), age(); v2 < v1 || v1 < (gap+100*time.Millisecond).Seconds() {
		t.Fatalf("relock_oldest_hold_age_seconds = %v then %v: not growing from %v", v1, v2, gap+100*time.Millisecond)
	}
	mustUnlock(t, a, "ops:old", kOld)
	s0 := time.Now()
	v := age()
	s1 := time.Now()
	const slack = 0.05 // clock readings' granularity
	if lo, hi := s0.Sub(young1).Seconds()-slack, s1.Sub(young0).Seconds()+slack; v < lo || v > hi {
		t.Fatalf("relock_oldest_hold_age_seconds after the oldest was released = %v, want ops:young's age, %.3f-%.3f s", v, lo, hi)
	}

	s := opsScrapeMetrics(t, addr)
	fam := s.fams["relock_build_info"]
	if fam == nil || len(fam.GetMetric()) != 1 {
		t.Fatalf("/metrics: relock_build_info missing or not one sample:\n%s", s.raw)
	}
	m := fam.GetMetric()[0]
	labels := map[string]string{}
	for _, lp := range m.GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	if m.GetGauge().GetValue() != 1 {
		t.Errorf("relock_build_info = %v, want 1", m.GetGauge().GetValue())
	}
	if want := opsInfo(t, a)["relock_version"]; labels["version"] != want || want == "" {
		t.Errorf("relock_build_info version=%q, INFO relock_version:%s", labels["version"], want)
	}
	if labels["goversion"] != runtime.Version() {
		t.Errorf("relock_build_info goversion=%q, want %q", labels["goversion"], runtime.Version())
	}
	if labels["commit"] == "" {
		t.Errorf("relock_build_info has no commit label: %v", labels)
	}
}
