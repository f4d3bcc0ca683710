package persist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relock/relock/locktable"
	bolt "go.etcd.io/bbolt"
)

// storedFence reports whether the store's committed state holds the hold
// with this fence, as a reader of the file sees it.
func storedFence(t *testing.T, s *Store, fence uint64) bool {
	t.Helper()
	// The log's changes are newer than bbolt's state.
	if data, err := os.ReadFile(filepath.Join(filepath.Dir(s.path), walName)); err == nil {
		pending, _, _, err := parseWAL(data, walName)
		if err != nil {
			t.Errorf("parse log: %v", err)
		}
		if r, ok := pending[fence]; ok {
			return r != nil
		}
	}
	var found bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketHolds).Get(fenceKey(fence)) != nil
		return nil
	}); err != nil {
		t.Errorf("View: %v", err)
	}
	return found
}

func TestSync_GroupsConcurrentCallersIntoFewCommits(t *testing.T) {
	const (
		workers = 64
		rounds  = 10
	)
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)

	var calls atomic.Int64
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				sess := tb.NewSession(uint64(w+1), nil)
				var ev locktable.Events
				<-start
				for i := range rounds {
					req := locktable.Request{Name: fmt.Sprintf("w%02d-%02d", w, i), Rand: uint64(w*rounds + i + 1)}
					if i%2 == 0 {
						req.TTL, req.Detach = 60*sec, true
					}
					ev.Reset()
					k, out, err := tb.Acquire(&ev, sess, req, t0, false)
					if err != nil || out != locktable.Granted {
						return fmt.Errorf("Acquire %s: %v %v", req.Name, out, err)
					}
					calls.Add(1)
					if err := s.Sync(); err != nil {
						return fmt.Errorf("Sync after granting %s: %v", req.Name, err)
					}
					// The grant is committed when Sync returns.
					if !storedFence(t, s, k.Fence) {
						return fmt.Errorf("Sync returned before the grant of %s (fence %d) was committed", req.Name, k.Fence)
					}
					if i%3 != 0 {
						continue
					}
					ev.Reset()
					if err := tb.Unlock(&ev, req.Name, k, t0); err != nil {
						return fmt.Errorf("Unlock %s: %v", req.Name, err)
					}
					calls.Add(1)
					if err := s.Sync(); err != nil {
						return fmt.Errorf("Sync after releasing %s: %v", req.Name, err)
					}
					if storedFence(t, s, k.Fence) {
						return fmt.Errorf("Sync returned before the release of %s (fence %d) was committed", req.Name, k.Fence)
					}
				}
				return nil
			}()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}

	n, commits := calls.Load(), s.Stats().Commits
	t.Logf("%d Sync calls, %d commits (%.1f calls per commit)", n, commits, float64(n)/float64(commits))
	if commits == 0 || commits > n/4 {
		t.Errorf("%d concurrent Sync calls took %d commits; want grouping (at most a quarter as many)", n, commits)
	}

	// The file as a crash now would leave it, and after a clean Close,
	// holds exactly the table's holds.
	want := tb.Snapshot()
	if len(want) != workers*(rounds-4) {
		t.Fatalf("table has %d holds, want %d", len(want), workers*(rounds-4))
	}
	got, hw := loadDir(t, copyStoreFile(t, dir))
	wantRecords(t, "file before Close", got, want)
	if hw != tb.LastFence() {
		t.Fatalf("high-water %d, want %d", hw, tb.LastFence())
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got, _ = loadDir(t, dir)
	wantRecords(t, "file after Close", got, want)
}

// TestSync_RacingCloseNeverAcknowledgesALostChange: a Sync that returns nil
// while Close runs has its change in the final state; the others get
// ErrClosed.
func TestSync_RacingCloseNeverAcknowledgesALostChange(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			const workers = 16
			dir := t.TempDir()
			s := mustOpen(t, dir, Always)
			tb := mustAttach(t, s, t0)

			var (
				mu    sync.Mutex
				acked []locktable.Key // guarded by mu
			)
			var committed atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sess := tb.NewSession(uint64(w+1), nil)
					var ev locktable.Events
					for i := 0; i < 10_000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						ev.Reset()
						k, out, err := tb.Acquire(&ev, sess, locktable.Request{Name: fmt.Sprintf("w%d-%d", w, i), Rand: 1}, t0, false)
						if err != nil || out != locktable.Granted {
							t.Errorf("Acquire: %v %v", out, err)
							return
						}
						switch err := s.Sync(); {
						case err == nil:
							mu.Lock()
							acked = append(acked, k)
							mu.Unlock()
							committed.Add(1)
						case errors.Is(err, ErrClosed):
							return
						default:
							t.Errorf("Sync: %v", err)
							return
						}
					}
				}()
			}
			// Close once some commits have happened, while Syncs are in flight.
			deadline := time.Now().Add(5 * time.Second)
			for committed.Load() < int64(20*(round+1)) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			close(stop)
			wg.Wait()

			recs, _ := loadDir(t, dir)
			stored := make(map[locktable.Key]bool, len(recs))
			for _, r := range recs {
				stored[r.Key] = true
			}
			mu.Lock()
			defer mu.Unlock()
			if len(acked) == 0 {
				t.Fatal("no Sync was acknowledged before Close")
			}
			for _, k := range acked {
				if !stored[k] {
					t.Errorf("acknowledged grant %v is not in the final state", k)
				}
			}
			t.Logf("%d acknowledged, %d stored", len(acked), len(recs))
		})
	}
}

// TestSync_ErrClosedDoesNotMeanAbsent pins down ErrClosed's contract: a
// change journaled before Close but synced after it is refused, and still
// in the final state. (A server that undoes such a grant after the final
// state leaves a hold whose key nobody has: it must stop making changes
// before Close.)
func TestSync_ErrClosedDoesNotMeanAbsent(t *testing.T) {
	for _, mode := range []Mode{Always, EverySec, No} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, mode)
			tb := mustAttach(t, s, t0)
			k := grant(t, tb, tb.NewSession(1, nil), locktable.Request{Name: "late", TTL: 60 * sec, Detach: true}, t0)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(); !errors.Is(err, ErrClosed) {
				t.Fatalf("Sync after Close = %v, want ErrClosed", err)
			}
			recs, _ := loadDir(t, dir)
			if len(recs) != 1 || recs[0].Key != k {
				t.Fatalf("final state %+v; want the change journaled before Close (%v)", recs, k)
			}
		})
	}
}

// SyncHere (an event loop's commit) and Sync (the commit loop's) may run
// at once: each returns only once every change journaled before it is in
// the file, and after Close SyncHere refuses with ErrClosed.
func TestSyncHere_MixedWithSyncCommitsEveryCallersChange(t *testing.T) {
	const workers, rounds = 16, 20
	dir := t.TempDir()
	s := mustOpen(t, dir, Always)
	tb := mustAttach(t, s, t0)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			errs <- func() error {
				sync, how := s.Sync, "Sync"
				if w%2 == 0 {
					sync, how = s.SyncHere, "SyncHere"
				}
				sess := tb.NewSession(uint64(w+1), nil)
				var ev locktable.Events
				for i := range rounds {
					req := locktable.Request{Name: fmt.Sprintf("h%02d-%02d", w, i), Rand: uint64(w*rounds + i + 1)}
					ev.Reset()
					k, _, err := tb.Acquire(&ev, sess, req, t0, false)
					if err != nil {
						return err
					}
					if err := sync(); err != nil {
						return fmt.Errorf("%s: %v", how, err)
					}
					if !storedFence(t, s, k.Fence) {
						return fmt.Errorf("%s returned before the grant of %s was committed", how, req.Name)
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want := tb.Snapshot()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.SyncHere(); !errors.Is(err, ErrClosed) {
		t.Fatalf("SyncHere after Close = %v; want ErrClosed", err)
	}
	got, _ := loadDir(t, dir)
	wantRecords(t, "file after Close", got, want)
}
