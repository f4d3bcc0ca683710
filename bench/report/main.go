// Command report turns the JSON lines of `relock bench --json` written by
// bench/run.sh into bench/results.md (a table per scenario: Redis, relock,
// ratio, target) and bench/results.json; with -stall, the stall scenario's
// lines into bench/results-stall.md and .json (relock only: a bystander's
// PING latency under each attack); with -cluster, the cluster scenario's
// lines into bench/results-cluster.md and .json (relock's 3-node cluster
// against etcd's).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type result struct {
	Label        string  `json:"label"`
	Target       string  `json:"target"`
	Mode         string  `json:"mode"`
	Connections  int     `json:"connections"`
	OpsPerSec    float64 `json:"ops_per_sec"`
	Wasted       int64   `json:"wasted_requests"`
	Seconds      float64 `json:"seconds"`
	P50us        float64 `json:"p50_us"`
	P99us        float64 `json:"p99_us"`
	ServerCPUus  float64 `json:"server_cpu_us_per_op"`
	MinShare     float64 `json:"min_share"`
	MaxShare     float64 `json:"max_share"`
	BytesPerLock float64 `json:"rss_bytes_per_lock"`
	Errors       int64   `json:"errors"`
	Exclusive    int64   `json:"exclusive_ops"`
	Names        int     `json:"names"`
	NamesPerSec  float64 `json:"names_per_sec"`
	Stalls       *int64  `json:"stalls"`
	MaxGapMs     float64 `json:"max_gap_ms"`
}

type row struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Redis    float64 `json:"redis"`
	Relock   float64 `json:"relock"`
	Ratio    float64 `json:"ratio"`
	Target   string  `json:"target"`
	Met      bool    `json:"met"`
}

func main() {
	in := flag.String("in", "bench/tmp/results.jsonl", "JSON lines from relock bench")
	md := flag.String("md", "bench/results.md", "Markdown output")
	js := flag.String("json", "bench/results.json", "JSON output")
	redisVersion := flag.String("redis-version", "", "redis-server --version")
	stall := flag.Bool("stall", false, "the input is the stall scenario's (relock bench --mode stall-*)")
	cluster := flag.Bool("cluster", false, "the input is the cluster scenario's (relock bench and clusterbench)")
	etcdVersion := flag.String("etcd-version", "", "cluster: etcd's version")
	loadavg := flag.String("loadavg", "", "cluster: the load average at the start")
	settings := flag.String("settings", "", "cluster: the run's settings, in words")
	flag.Parse()
	if *stall {
		stallReport(*in, *md, *js)
		return
	}
	if *cluster {
		clusterReport(*in, *md, *js, *etcdVersion, *loadavg, *settings)
		return
	}

	f, err := os.Open(*in)
	if err != nil {
		log.Fatal(err)
	}
	byKey := map[string]result{}
	var order []string
	// prevBase: each subscribed run's baseline, the run without
	// subscribers just before it.
	prevBase := map[string]result{}
	var lastBase *result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			log.Fatalf("%s: %v", *in, err)
		}
		if strings.HasPrefix(r.Label, "subscribed base") {
			lastBase = &r
		} else if strings.HasPrefix(r.Label, "subscribed ") && lastBase != nil {
			prevBase[r.Label] = *lastBase
		}
		if _, ok := byKey[r.Label+"|redis"]; !ok {
			if _, ok := byKey[r.Label+"|relock"]; !ok {
				order = append(order, r.Label)
			}
		}
		byKey[r.Label+"|"+r.Target] = r
	}
	var rows []row
	add := func(scenario, metric string, redis, relock float64, target string, higherBetter bool, factor float64) {
		r := row{Scenario: scenario, Metric: metric, Redis: redis, Relock: relock, Target: target}
		if redis > 0 {
			r.Ratio = relock / redis
		}
		if higherBetter {
			r.Met = relock >= factor*redis
		} else {
			r.Met = relock <= factor*redis
		}
		rows = append(rows, r)
	}
	for _, label := range order {
		rd, rl := byKey[label+"|redis"], byKey[label+"|relock"]
		switch {
		case strings.HasPrefix(label, "shared cycle "):
			// "shared cycle c=16": relock's LOCK … SHARED cycles vs its
			// exclusive "cycle c=16", in the same run.
			b := byKey[strings.TrimPrefix(label, "shared ")+"|relock"]
			r := row{Scenario: label, Metric: "shared cycles/s vs relock exclusive (Redis column)", Redis: b.OpsPerSec, Relock: rl.OpsPerSec, Target: "(reported)", Met: true}
			if b.OpsPerSec > 0 {
				r.Ratio = rl.OpsPerSec / b.OpsPerSec
			}
			rows = append(rows, r)
			r = row{Scenario: label, Metric: "server CPU µs/cycle vs relock exclusive (Redis column)", Redis: b.ServerCPUus, Relock: rl.ServerCPUus, Target: "(reported)", Met: true}
			if b.ServerCPUus > 0 {
				r.Ratio = rl.ServerCPUus / b.ServerCPUus
			}
			rows = append(rows, r)
		case strings.HasPrefix(label, "mlock-contend "):
			// "mlock-contend c=16": MLOCKs of the same 2 names, half in
			// the opposite order; the Redis column is relock's single-lock
			// "contend c=16" for scale.
			conns := strings.TrimPrefix(label, "mlock-contend ")
			b := byKey["contend "+conns+"|relock"]
			r := row{Scenario: label, Metric: "handoffs/s vs relock contend handoffs/s (Redis column)", Redis: b.OpsPerSec, Relock: rl.OpsPerSec, Target: "(reported)", Met: true}
			if b.OpsPerSec > 0 {
				r.Ratio = rl.OpsPerSec / b.OpsPerSec
			}
			rows = append(rows, r)
			rows = append(rows, row{Scenario: label, Metric: "fairness (min–max share)", Relock: rl.MinShare,
				Ratio: rl.MaxShare, Target: "within ±10 %", Met: rl.MinShare >= 0.9 && rl.MaxShare <= 1.1})
			stalls := int64(-1) // missing: not met
			if rl.Stalls != nil {
				stalls = *rl.Stalls
			}
			rows = append(rows, row{Scenario: label, Metric: "stalls (1 s without a handoff; longest gap ms in Redis column)", Redis: rl.MaxGapMs, Relock: float64(stalls),
				Target: "0 (no deadlock)", Met: stalls == 0 && rl.Errors == 0 && rl.OpsPerSec > 0})
		case strings.HasPrefix(label, "mlock "):
			// "mlock c=16 names=N": MLOCK of N names and N UNLOCKs vs
			// relock's single "cycle c=16" (LOCK + UNLOCK), same run.
			conns, _, _ := strings.Cut(strings.TrimPrefix(label, "mlock "), " ")
			b := byKey["cycle "+conns+"|relock"]
			r := row{Scenario: label, Metric: "cycles/s vs relock single-lock cycles/s (Redis column)", Redis: b.OpsPerSec, Relock: rl.OpsPerSec, Target: "(reported)", Met: true}
			if b.OpsPerSec > 0 {
				r.Ratio = rl.OpsPerSec / b.OpsPerSec
			}
			rows = append(rows, r)
			r = row{Scenario: label, Metric: "names/s vs relock single-lock cycles/s (Redis column)", Redis: b.OpsPerSec, Relock: rl.NamesPerSec, Target: "(reported)", Met: true}
			if b.OpsPerSec > 0 {
				r.Ratio = rl.NamesPerSec / b.OpsPerSec
			}
			rows = append(rows, r)
			r = row{Scenario: label, Metric: "server CPU µs/name vs relock µs/cycle (Redis column)", Redis: b.ServerCPUus, Target: "(reported)", Met: true}
			if rl.Names > 0 {
				r.Relock = rl.ServerCPUus / float64(rl.Names)
			}
			if b.ServerCPUus > 0 {
				r.Ratio = r.Relock / b.ServerCPUus
			}
			rows = append(rows, r)
		case strings.HasPrefix(label, "rw "):
			// "rw c=16: 90 % readers": one lock, every 10th cycle of a
			// connection exclusive; the Redis column is relock's exclusive
			// handoffs/s on one lock ("contend c=16") for scale.
			conns, _, _ := strings.Cut(strings.TrimPrefix(label, "rw "), ":")
			b := byKey["contend "+conns+"|relock"]
			r := row{Scenario: label, Metric: fmt.Sprintf("cycles/s (%d exclusive) vs relock contend handoffs/s (Redis column)", rl.Exclusive),
				Redis: b.OpsPerSec, Relock: rl.OpsPerSec, Target: "(reported)", Met: true}
			if b.OpsPerSec > 0 {
				r.Ratio = rl.OpsPerSec / b.OpsPerSec
			}
			rows = append(rows, r)
			rows = append(rows, row{Scenario: label, Metric: "p99 µs (p50 in Redis column)", Redis: rl.P50us, Relock: rl.P99us, Target: "(reported)", Met: true})
		case strings.HasPrefix(label, "subscribed base"):
			// the baseline of the next subscribed row (see below)
		case strings.HasPrefix(label, "subscribed "):
			// "subscribed cycle c=16: …": relock with subscribers vs
			// relock without, in the same run.
			base, _, _ := strings.Cut(strings.TrimPrefix(label, "subscribed "), ":")
			b := byKey[base+"|relock"]
			if pb, ok := prevBase[label]; ok {
				b = pb // the run without subscribers just before this one
			}
			// The target is on what subscribers cost the lock path
			// (matching every change against 100 patterns); messages
			// actually delivered cost a write each, reported.
			r := row{Scenario: label, Metric: "cycles/s vs no subscribers", Redis: b.OpsPerSec, Relock: rl.OpsPerSec, Target: "≥ 0.8× (costs ≤ 20 %)"}
			if b.OpsPerSec > 0 {
				r.Ratio = rl.OpsPerSec / b.OpsPerSec
			}
			r.Met = r.Ratio >= 0.8
			if strings.Contains(label, "watching") {
				r.Target, r.Met = "(reported: 3 messages delivered per cycle)", true
			}
			rows = append(rows, r)
			r = row{Scenario: label, Metric: "server CPU µs/cycle vs no subscribers", Redis: b.ServerCPUus, Relock: rl.ServerCPUus, Target: "(reported)", Met: true}
			if b.ServerCPUus > 0 {
				r.Ratio = rl.ServerCPUus / b.ServerCPUus
			}
			rows = append(rows, r)
		case strings.HasPrefix(label, "events"):
			rows = append(rows, row{Scenario: label, Metric: "event delivery p99 µs (p50 in Redis column)", Redis: rl.P50us, Relock: rl.P99us,
				Target: "≤ 10 ms", Met: rl.P99us > 0 && rl.P99us <= 10_000})
		case strings.HasPrefix(label, "cycle") || strings.HasPrefix(label, "fsync"):
			add(label, "cycles/s", rd.OpsPerSec, rl.OpsPerSec, "≥ 1.0× Redis", true, 1)
			add(label, "server CPU µs/cycle", rd.ServerCPUus, rl.ServerCPUus, "≤ Redis", false, 1)
			add(label, "p99 µs", rd.P99us, rl.P99us, "≤ Redis", false, 1)
			if p, ok := byKey[strings.Replace(label, "cycle", "ping", 1)+"|relock"]; ok && strings.HasPrefix(label, "cycle") {
				r := row{Scenario: label, Metric: "cycles/s vs relock PING+PING", Redis: 0, Relock: rl.OpsPerSec, Target: "≥ 0.9× PING+PING"}
				if p.OpsPerSec > 0 {
					r.Ratio = rl.OpsPerSec / p.OpsPerSec
				}
				r.Met = r.Ratio >= 0.9
				rows = append(rows, r)
			}
		case strings.HasPrefix(label, "contend"):
			add(label, "handoffs/s", rd.OpsPerSec, rl.OpsPerSec, "≥ 5× Redis polling", true, 5)
			add(label, "wasted requests/s", float64(rd.Wasted)/rd.Seconds, float64(rl.Wasted)/rl.Seconds, "0", false, 0)
			rows = append(rows, row{Scenario: label, Metric: "fairness (min–max share)", Redis: rd.MinShare, Relock: rl.MinShare,
				Ratio: rl.MaxShare, Target: "within ±10 %", Met: rl.MinShare >= 0.9 && rl.MaxShare <= 1.1})
		case strings.HasPrefix(label, "hold"):
			add(label, "RSS bytes per held lock", rd.BytesPerLock, rl.BytesPerLock, "≤ Redis", false, 1)
		}
	}

	var b strings.Builder
	host, _ := os.Hostname()
	cpu := cpuModel()
	goVersion := runtime.Version()
	fmt.Fprintf(&b, "# relock vs Redis — benchmark results\n\n")
	fmt.Fprintf(&b, "Generated by `make bench` on %s. Machine: %s, %d cores (%s), %s; %s; Go %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), cpu, kernel(), *redisVersion, goVersion)
	fmt.Fprintf(&b, "Servers pinned to core 0, the load generator (`relock bench`, go-redis) to core 1; one run, side by side.\n")
	fmt.Fprintf(&b, "Ratio is relock ÷ Redis (for fairness: the most any relock client got relative to the mean).\n\n")
	fmt.Fprintf(&b, "| scenario | metric | Redis | relock | ratio | target | met |\n|---|---|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		met := "yes"
		if !r.Met {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | %s | %s |\n", r.Scenario, r.Metric, num(r.Redis), num(r.Relock), r.Ratio, r.Target, met)
	}
	if err := os.WriteFile(*md, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	out, _ := json.MarshalIndent(map[string]any{"rows": rows, "runs": byKey, "cpu": cpu, "cores": runtime.NumCPU()}, "", "  ")
	if err := os.WriteFile(*js, append(out, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Print(b.String())
}

func num(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	out, err := exec.Command("uname", "-sr").Output()
	if err != nil {
		return runtime.GOOS
	}
	return strings.TrimSpace(string(out))
}
