package integration

import (
	"encoding/json"
	"testing"
	"time"
)

// A short smoke run of the load generator in each mode against relock:
// it completes, counts operations and reports no errors. (Speed is
// measured by `make bench`, never asserted here.)
func TestBench_SmokeRunsEveryMode(t *testing.T) {
	srv := startServer(t)
	for _, args := range [][]string{
		{"--mode", "cycle", "-c", "2", "-d", "500ms"},
		{"--mode", "contend", "-c", "3", "-d", "500ms"},
		{"--mode", "pipeline", "-c", "2", "-P", "4", "-d", "500ms"},
		{"--mode", "ping", "-c", "1", "-d", "300ms"},
		{"--mode", "hold", "-c", "2", "--locks", "2000"},
	} {
		full := append([]string{"bench", "--addr", srv.Addr, "--json", "-q"}, args...)
		out, errOut, code := relockTool(t, full...)
		if code != 0 {
			t.Fatalf("relock %v = exit %d, %q", full, code, errOut)
		}
		var res struct {
			Mode         string  `json:"mode"`
			Ops          int64   `json:"ops"`
			Errors       int64   `json:"errors"`
			FirstError   string  `json:"first_error"`
			MinShare     float64 `json:"min_share"`
			BytesPerLock float64 `json:"rss_bytes_per_lock"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("relock %v printed %q: %v", full, out, err)
		}
		if res.Ops <= 0 || res.Errors != 0 {
			t.Fatalf("relock %v: %+v; want operations and no errors", full, res)
		}
		if res.Mode == "hold" && res.Ops != 2000 {
			t.Fatalf("hold mode held %d locks, want 2000", res.Ops)
		}
		if res.Mode == "contend" && res.MinShare <= 0 {
			t.Fatalf("contend mode: a client got no handoff: %+v", res)
		}
	}
	// Everything the runs took is released once their connections close.
	c := srv.client(t)
	eventually(t, 5*time.Second, func() bool { return dbsize(t, c) == 0 }, "locks left after the bench runs")
}
