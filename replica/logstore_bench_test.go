package replica

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
)

// BenchmarkLogStore_Append appends entries of a lock command's size to
// each candidate log store, fsync on (as raft uses them), one StoreLogs
// call per op with batch entries: the cost of one Raft append on this
// machine's disk. It reports appends/s and latency percentiles.
//
//	go test -run '^$' -bench LogStore -benchtime 2000x ./replica/
func BenchmarkLogStore_Append(b *testing.B) {
	stores := []struct {
		name string
		open func(dir string) (raft.LogStore, func() error, error)
	}{
		{"boltdb", func(dir string) (raft.LogStore, func() error, error) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
			if err != nil {
				return nil, nil, err
			}
			return s, s.Close, nil
		}},
		{"wal", func(dir string) (raft.LogStore, func() error, error) {
			w, err := wal.Open(dir)
			if err != nil {
				return nil, nil, err
			}
			return w, w.Close, nil
		}},
	}
	payload := make([]byte, 160) // a JSON acquire op is ~150 bytes
	for _, st := range stores {
		for _, batch := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/batch=%d", st.name, batch), func(b *testing.B) {
				s, closeFn, err := st.open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer closeFn()
				lat := make([]time.Duration, 0, b.N)
				next := uint64(1)
				logs := make([]*raft.Log, batch)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j := range logs {
						logs[j] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: payload}
						next++
					}
					t0 := time.Now()
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "appends/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
