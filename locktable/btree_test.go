package locktable

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The name order stays a valid B-tree listing exactly the live locks, in
// order, and seeks like a sorted list, while it grows (splits, in
// increasing and random order) and shrinks (rotations, merges, a shrinking
// root) under random creates and deletes.
func TestNameOrder_RandomOpsMatchSortedList(t *testing.T) {
	steps := 30_000
	if raceEnabled || testing.Short() {
		steps = 8_000
	}
	tb := New(Config{Shards: 1})
	sh := &tb.shards[0]
	s := tb.NewSession(1, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	held := map[string]Key{}
	var sorted []string
	var ev Events
	tallest := 0
	name := func(step int) string {
		switch rng.IntN(10) {
		case 0: // long: in longNames, not the arena
			return strings.Repeat("L", maxArenaName) + strconv.Itoa(rng.IntN(50))
		case 1, 2, 3: // increasing, as counters in names are
			return "seq:" + strconv.Itoa(step)
		}
		return "r:" + strconv.Itoa(rng.IntN(4000))
	}
	for step := range steps {
		n := name(step)
		// Grow for the first 60%, then mostly shrink.
		_, ok := held[n]
		del := rng.IntN(10) < 3
		if step > steps*6/10 {
			del = rng.IntN(10) < 8
		}
		switch {
		case del && len(sorted) > 0:
			victim := sorted[rng.IntN(len(sorted))]
			if err := tb.Unlock(&ev, victim, held[victim], 1); err != nil {
				t.Fatalf("step %d: Unlock(%s) = %v", step, victim, err)
			}
			delete(held, victim)
			i, _ := slices.BinarySearch(sorted, victim)
			sorted = slices.Delete(sorted, i, i+1)
		case !ok && !del:
			k, out, err := tb.Acquire(&ev, s, Request{Name: n, Rand: uint64(step)}, 1, false)
			if err != nil || out != Granted {
				t.Fatalf("step %d: Acquire(%s) = %v, %v", step, n, out, err)
			}
			held[n] = k
			i, _ := slices.BinarySearch(sorted, n)
			sorted = slices.Insert(sorted, i, n)
		}
		ev.Reset()
		// Seek from a random point, on and between names.
		from := name(step + 1)
		if rng.IntN(2) == 0 && len(sorted) > 0 {
			from = sorted[rng.IntN(len(sorted))]
		}
		for _, inclusive := range []bool{false, true} {
			i, found := slices.BinarySearch(sorted, from)
			if found && !inclusive {
				i++
			}
			want := ""
			if i < len(sorted) {
				want = sorted[i]
			}
			got := ""
			if id := sh.order.seek(sh, from, inclusive); id != 0 {
				got = sh.name(id)
			}
			if got != want {
				t.Fatalf("step %d: seek(%.20q, inclusive=%v) = %.20q; want %.20q", step, from, inclusive, got, want)
			}
		}
		tallest = max(tallest, sh.order.height)
		if step%500 == 0 || step == steps-1 {
			checkInvariants(t, tb, s)
		}
	}
	if tallest < 2 {
		t.Fatalf("order height at most %d; want the test to grow a deeper tree", tallest)
	}
	for n, k := range held {
		if err := tb.Unlock(&ev, n, k, 1); err != nil {
			t.Fatalf("Unlock(%s) = %v", n, err)
		}
	}
	checkInvariants(t, tb, s)
	if sh.order.root != 0 {
		t.Fatalf("order root %d when empty; want none", sh.order.root)
	}
}
