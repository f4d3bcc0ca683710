package integration

import (
	"encoding/json"
	"testing"
	"time"
)

// A short smoke run of the multi-lock modes of the load generator: they
// complete, count operations, report no errors, and mlock-contend (the
// same names in opposite orders) reports no stall. (Speed is measured by
// `make bench`, never asserted here.)
func TestBench_SmokeRunsTheMultiLockModes(t *testing.T) {
	srv := startServer(t)
	for _, args := range [][]string{
		{"--mode", "mlock", "--names", "8", "-c", "2", "-d", "500ms"},
		{"--mode", "mlock-contend", "--names", "2", "-c", "4", "-d", "500ms"},
	} {
		full := append([]string{"bench", "--addr", srv.Addr, "--json", "-q"}, args...)
		out, errOut, code := relockTool(t, full...)
		if code != 0 {
			t.Fatalf("relock %v = exit %d, %q", full, code, errOut)
		}
		var res struct {
			Mode        string  `json:"mode"`
			Ops         int64   `json:"ops"`
			Names       int     `json:"names"`
			NamesPerSec float64 `json:"names_per_sec"`
			OpsPerSec   float64 `json:"ops_per_sec"`
			MinShare    float64 `json:"min_share"`
			Stalls      *int64  `json:"stalls"`
			Errors      int64   `json:"errors"`
			FirstError  string  `json:"first_error"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("relock %v printed %q: %v", full, out, err)
		}
		if res.Ops <= 0 || res.Errors != 0 {
			t.Fatalf("relock %v: %+v; want operations and no errors", full, res)
		}
		switch res.Mode {
		case "mlock":
			if res.Names != 8 || res.NamesPerSec != 8*res.OpsPerSec {
				t.Fatalf("mlock: %+v; want names 8 and names/s 8× cycles/s", res)
			}
		case "mlock-contend":
			if res.Stalls == nil || *res.Stalls != 0 || res.MinShare <= 0 {
				t.Fatalf("mlock-contend: %+v; want stalls 0 and a handoff for every client", res)
			}
		}
	}
	c := srv.client(t)
	eventually(t, 5*time.Second, func() bool { return dbsize(t, c) == 0 }, "locks left after the bench runs")
}
