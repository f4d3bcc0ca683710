package locktable

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A page of one lock after a name examines one name, not every name past
// it: LOCKS COUNT 1 AFTER x used to clone and sort them all.
func TestLocksPage_ExaminesOnlyThePage(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	holdMany(t, f.tb, s, "lock:", 2000, f.now)
	examined := 0
	counting := func(string) bool { examined++; return true }

	got := f.tb.Locks(Query{After: "lock:1", Count: 1, Match: counting}, f.now)
	if len(got) != 1 || got[0].Name != "lock:10" {
		t.Fatalf("Locks(After lock:1, Count 1) = %v; want lock:10", names(got))
	}
	wantEqual(t, "names examined for one lock", examined, 1)

	examined = 0
	got = f.tb.Locks(Query{After: "lock:1998", Count: 3, Match: counting}, f.now)
	wantSlice(t, "last page", names(got), []string{"lock:1999", "lock:2", "lock:20"})
	wantEqual(t, "names examined for three locks", examined, 3)
}

// With a Prefix, a page seeks to it and stops past it: the locks of other
// prefixes, before or after, cost nothing.
func TestLocksPage_PrefixSeeksAndStops(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	holdMany(t, f.tb, s, "a:", 1000, f.now)
	holdMany(t, f.tb, s, "billing:", 5, f.now)
	holdMany(t, f.tb, s, "c:", 1000, f.now)
	f.mustGrant(s, Request{Name: "billing"}) // not under the prefix "billing:"
	examined := 0
	counting := func(string) bool { examined++; return true }

	got := f.tb.LocksPage(Query{Prefix: "billing:", Match: counting}, f.now)
	wantSlice(t, "prefix", names(got.Locks), []string{"billing:0", "billing:1", "billing:2", "billing:3", "billing:4"})
	wantEqual(t, "names examined", examined, 5)
	wantEqual(t, "resume", got.Resume, "")

	examined = 0
	got = f.tb.LocksPage(Query{Prefix: "billing:", After: "billing:1", Count: 2, Match: counting}, f.now)
	wantSlice(t, "prefix after count", names(got.Locks), []string{"billing:2", "billing:3"})
	wantEqual(t, "names examined", examined, 2)
	got = f.tb.LocksPage(Query{Prefix: "billing:", After: "billing:4"}, f.now)
	wantEqual(t, "after the prefix's last", len(got.Locks), 0)
	got = f.tb.LocksPage(Query{Prefix: "b", After: "c"}, f.now)
	wantEqual(t, "after past the prefix", len(got.Locks), 0)
	got = f.tb.LocksPage(Query{Prefix: "zz"}, f.now)
	wantEqual(t, "prefix of no lock", len(got.Locks), 0)
}

// A Budget bounds the names one call examines; Resume says where it
// stopped, and going on from there finds what one unbounded call finds.
func TestLocksPage_BudgetStopsAndResumes(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	holdMany(t, f.tb, s, "n", 500, f.now)
	sevens := func(name string) bool { return strings.HasSuffix(name, "7") }
	want := names(f.tb.Locks(Query{Match: sevens, Count: 20}, f.now))
	wantEqual(t, "unbounded page size", len(want), 20)

	var got []string
	calls := 0
	for q := (Query{Match: sevens, Count: 20, Budget: 16}); ; calls++ {
		examined := 0
		q.Match = func(name string) bool { examined++; return sevens(name) }
		page := f.tb.LocksPage(q, f.now)
		if examined > 16 {
			t.Fatalf("call %d examined %d names; want at most the budget, 16", calls, examined)
		}
		got = append(got, names(page.Locks)...)
		q.Count -= len(page.Locks)
		if page.Resume == "" {
			break
		}
		if page.Resume <= q.After {
			t.Fatalf("call %d: Resume %q not past After %q", calls, page.Resume, q.After)
		}
		q.After = page.Resume
	}
	wantSlice(t, "names found over budgeted calls", got, want)
	if calls < 2 {
		t.Fatalf("took %d calls; want the budget to have stopped some", calls)
	}

	// A page that ends with Count locks, or with the last name, has no
	// Resume even when the budget runs out with it.
	page := f.tb.LocksPage(Query{Count: 3, Budget: 3}, f.now)
	wantEqual(t, "resume after a full page", page.Resume, "")
	page = f.tb.LocksPage(Query{After: "n97", Budget: 2}, f.now)
	wantSlice(t, "last names", names(page.Locks), []string{"n98", "n99"})
	wantEqual(t, "resume at the end", page.Resume, "")
}

// Every page is sorted across shards, whatever the shard count, and paging
// with After visits every lock once.
func TestLocksPage_SameOrderAtAnyShardCount(t *testing.T) {
	var want []string
	for _, shards := range []int{1, 8, 4096} {
		f := newFixture(t, Config{Shards: shards})
		s := f.session()
		holdMany(t, f.tb, s, "k/", 300, f.now)
		var got []string
		for after := ""; ; {
			page := names(f.tb.Locks(Query{After: after, Count: 7}, f.now))
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			after = page[len(page)-1]
		}
		if !slices.IsSorted(got) || len(got) != 300 {
			t.Fatalf("%d shards: paged %d names, sorted=%v; want 300 sorted", shards, len(got), slices.IsSorted(got))
		}
		if want != nil {
			wantSlice(t, strconv.Itoa(shards)+" shards", got, want)
		}
		want = got
	}
}

func names(ls []LockInfo) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Name)
	}
	return out
}

// Work bounds what one call does however long the names and costly the
// Match: with a MatchCost, a call over long names examines few of them,
// at least one, and going on from Resume finds what one unbounded call
// finds.
func TestLocksPage_WorkStopsAndResumes(t *testing.T) {
	f := newFixture(t, Config{Shards: 8})
	s := f.session()
	long := strings.Repeat("a", 1000)
	holdMany(t, f.tb, s, long, 40, f.now)
	nines := func(name string) bool { return strings.HasSuffix(name, "9") }
	want := names(f.tb.Locks(Query{Match: nines}, f.now))
	wantEqual(t, "unbounded page size", len(want), 4)

	// Each name costs WorkOfName + 1000·(1 + 500): a budget of 3 names'
	// work stops a call after 3 names (it checks before each name).
	per := WorkOfName + len(long) + 1 + (len(long)+1)*500
	var got []string
	calls := 0
	for q := (Query{Match: nines, MatchCost: 500, Work: 3 * per}); ; calls++ {
		examined := 0
		q.Match = func(name string) bool { examined++; return nines(name) }
		page := f.tb.LocksPage(q, f.now)
		if examined > 3 {
			t.Fatalf("call %d examined %d names; want at most 3", calls, examined)
		}
		got = append(got, names(page.Locks)...)
		if page.Resume == "" {
			break
		}
		q.After = page.Resume
	}
	wantSlice(t, "names found over budgeted calls", got, want)
	if calls < 13 {
		t.Fatalf("took %d calls; want the work to have stopped each after 3 names", calls)
	}
	// A budget smaller than one name's work still examines one name.
	page := f.tb.LocksPage(Query{Work: 1}, f.now)
	wantEqual(t, "one name under a tiny budget", len(page.Locks), 1)
	if page.Resume != page.Locks[0].Name {
		t.Fatalf("Resume %q; want the one name examined, %q", page.Resume, page.Locks[0].Name)
	}
}

// List bounds the holds and waiters described per lock; the others are
// counted, and they count as work.
func TestLocksPage_ListBoundsHoldsAndWaiters(t *testing.T) {
	f := newFixture(t, Config{Shards: 4})
	for range 10 {
		if _, out, err := f.acquire(f.session(), Request{Name: "sem", Size: 10}, false); err != nil || out != Granted {
			t.Fatalf("Acquire = %v, %v", out, err)
		}
	}
	for range 5 {
		if _, out, err := f.acquire(f.session(), Request{Name: "sem", Size: 10}, true); err != nil || out != Queued {
			t.Fatalf("Acquire(wait) = %v, %v", out, err)
		}
	}
	page := f.tb.LocksPage(Query{List: 3}, f.now)
	wantEqual(t, "locks", len(page.Locks), 1)
	l := page.Locks[0]
	wantEqual(t, "holds listed", len(l.Holds), 3)
	wantEqual(t, "holds left out", l.MoreHolds, 7)
	wantEqual(t, "waiters listed", len(l.Waiters), 3)
	wantEqual(t, "waiters left out", l.MoreWaiters, 2)
	all := f.tb.Locks(Query{}, f.now)[0]
	wantEqual(t, "holds without List", len(all.Holds), 10)
	wantEqual(t, "waiters without List", len(all.Waiters), 5)
	wantEqual(t, "none left out without List", all.MoreHolds+all.MoreWaiters, 0)
	for i := range l.Holds {
		wantEqual(t, "hold listed in grant order", l.Holds[i].Fence, all.Holds[i].Fence)
	}
}
