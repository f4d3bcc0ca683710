package commands

import (
	"bufio"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/relock/relock/locktable"
)

// The bounds of a LOCKS page (review h7): a step is bounded by its work,
// not only by its names; a reply by its bytes; a MATCH glob by
// max-name-len.

// holdNames takes n exclusive holds of names prefix + i (i zero-padded)
// for one table session.
func holdNames(t *testing.T, srv *Server, prefix string, n int) {
	t.Helper()
	holder := srv.table.NewSession(1<<40, nil)
	var ev locktable.Events
	for i := range n {
		ev.Reset()
		name := prefix + strconv.Itoa(100000+i)
		if _, _, err := srv.table.Acquire(&ev, holder, locktable.Request{Name: name, Size: 1, Rand: uint64(i) + 1}, srv.now(), false); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { srv.table.CloseSession(&ev, holder, srv.now()) })
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// dialCounting is dialWire, counting the reply bytes read.
func dialCounting(t *testing.T, addr string) (*wireConn, func() int) {
	c := dialWire(t, addr)
	cr := &countingReader{r: c.Conn}
	c.r = bufio.NewReader(cr)
	return c, func() int { return cr.n - c.r.Buffered() }
}

var recordName = regexp.MustCompile(`\$name \$(\S+)`)

// A page whose records would pass locksReplyBytes stops before the one
// that would, and paging on with AFTER its last name lists every lock
// once; no reply passes the bound.
func TestLocks_PageStopsAtTheByteBound(t *testing.T) {
	srv, addr := tcpServerOn(t, Config{})
	const n = 1500 // records of about 1.4 KB: about 2 MB in all
	holdNames(t, srv, strings.Repeat("n", 990), n)
	c, read := dialCounting(t, addr)
	var got []string
	pages, after, done := 0, "", 0
	for {
		args := []string{"LOCKS", "COUNT", "100000"}
		if after != "" {
			args = append(args, "AFTER", after)
		}
		reply := c.do(t, args...)
		size := read() - done
		done += size
		if size > locksReplyBytes {
			t.Fatalf("page %d: reply of %d bytes; want at most %d", pages, size, locksReplyBytes)
		}
		if reply == "*0[]" {
			break
		}
		names := recordName.FindAllStringSubmatch(reply, -1)
		if len(names) == 0 {
			t.Fatalf("page %d: %.80q", pages, reply)
		}
		if pages == 0 && (len(names) == n || size < locksReplyBytes-16<<10) {
			t.Fatalf("first page: %d locks in %d bytes; want it stopped near %d bytes", len(names), size, locksReplyBytes)
		}
		for _, m := range names {
			got = append(got, m[1])
		}
		after = got[len(got)-1]
		pages++
	}
	if len(got) != n || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != n {
		t.Fatalf("paged %d names (sorted %v); want each of %d once", len(got), slices.IsSorted(got), n)
	}
	if pages < 2 {
		t.Fatalf("%d pages; want the byte bound to have split the listing", pages)
	}
}

// One lock's record lists the holders that fit in the bound and counts
// the others in more-holders (and more-waiters); a record that is not
// cut has neither field.
func TestLocks_ManyHoldersRecordIsBounded(t *testing.T) {
	srv, addr := tcpServerOn(t, Config{})
	const holds = 7000 // at least 178 bytes each: more than 1 MiB
	holder := srv.table.NewSession(1<<40, nil)
	var ev locktable.Events
	for i := range holds {
		ev.Reset()
		if _, _, err := srv.table.Acquire(&ev, holder, locktable.Request{Name: "big", Size: 1, Shared: true, Rand: uint64(i) + 1}, srv.now(), false); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { srv.table.CloseSession(&ev, holder, srv.now()) })
	holdNames(t, srv, "small", 1)

	c, read := dialCounting(t, addr)
	reply := c.do(t, "LOCKS", "MATCH", "big")
	if size := read(); size > locksReplyBytes {
		t.Fatalf("reply of %d bytes; want at most %d", size, locksReplyBytes)
	}
	m := regexp.MustCompile(`\$holders \*(\d+)\[.* \$more-holders :(\d+) \$more-waiters :(\d+)\]\]$`).FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("no more-holders in %.200q", reply[max(0, len(reply)-200):])
	}
	listed, _ := strconv.Atoi(m[1])
	more, _ := strconv.Atoi(m[2])
	if listed == 0 || more == 0 || listed+more != holds || m[3] != "0" {
		t.Fatalf("listed %d, more-holders %d, more-waiters %s; want %d holders in all, some of each", listed, more, m[3], holds)
	}
	if got := strings.Count(reply, "$fence "); got != listed {
		t.Fatalf("%d holder records; want %d", got, listed)
	}
	// RESP3: a map of 7.
	if got := c.do(t, "HELLO", "3"); !strings.HasPrefix(got, "%") {
		t.Fatalf("HELLO 3 = %.40q", got)
	}
	if got := c.do(t, "LOCKS", "MATCH", "big"); !strings.HasPrefix(got, "*1[%14[$name $big") {
		t.Fatalf("RESP3 record = %.40q", got)
	}
	if got := c.do(t, "LOCKS", "MATCH", "small*"); !strings.HasPrefix(got, "*1[%10[") || strings.Contains(got, "more-holders") {
		t.Fatalf("a record not cut = %.80q", got)
	}
}

// A MATCH longer than max-name-len is refused; one as long is served.
func TestLocks_MatchLongerThanMaxNameLenIsRefused(t *testing.T) {
	addr := tcpServer(t, Config{MaxNameLen: 64})
	c := dialWire(t, addr)
	if got, want := c.do(t, "LOCKS", "MATCH", strings.Repeat("a", 65)), "-LIMIT MATCH pattern longer than max-name-len (64 bytes)"; got != want {
		t.Fatalf("LOCKS MATCH of 65 bytes = %q; want %q", got, want)
	}
	if got := c.do(t, "LOCKS", "MATCH", "*"+strings.Repeat("a", 63)); got != "*0[]" {
		t.Fatalf("LOCKS MATCH of 64 bytes = %q; want *0[]", got)
	}
}

// A costly MATCH over long names ends each step after a few names, the
// owner serving other connections between steps, and the page completes:
// over TCP the reply is right.
func TestLocks_StepIsBoundedByWork(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestOwner(t, srv, false)
	const names = 64
	holdNames(t, srv, strings.Repeat("a", 994), names) // 1000 bytes
	pattern := "*" + strings.Repeat("a", 500) + "b"
	b, d := h.connect(), h.connect()
	h.send(b, "LOCKS MATCH "+pattern, "PING")
	if b.wait == nil || b.wait.resume == nil {
		t.Fatal("LOCKS did not stop after its first step")
	}
	steps := 1
	for b.wait != nil {
		h.send(d, "PING")
		h.round()
		if got := h.replies(d); !slices.Equal(got, []string{"+PONG"}) {
			t.Fatalf("between steps: %q", got)
		}
		if steps++; steps > names {
			t.Fatal("more steps than names")
		}
	}
	if got, want := h.replies(b), []string{"*0", "+PONG"}; !slices.Equal(got, want) {
		t.Fatalf("LOCKS, PING = %q; want %q", got, want)
	}
	// A step's work, locksWork, is spent by about 4 such names.
	if steps < names/8 {
		t.Fatalf("%d steps for %d names of 1000 bytes; want a few names a step", steps, names)
	}

	addr := runClusterServer(t, srv)
	c := dialWire(t, addr)
	if got := c.do(t, "LOCKS", "MATCH", pattern); got != "*0[]" {
		t.Fatalf("over TCP: %q", got)
	}
	if got := c.do(t, "LOCKS", "MATCH", "*"+strings.Repeat("a", 500)+"10006?", "COUNT", "5"); len(recordName.FindAllString(got, -1)) != 4 {
		t.Fatalf("over TCP, a matching glob: %.80q", got)
	}
}

// An open '[' is a literal: LOCKS matches as globMatch does, written so
// that the match costs O(len(pattern)·len(name)).
func TestLocks_OpenClassIsLiteral(t *testing.T) {
	patterns := []string{"[", "[[[", "*[abc", "a[b]c[", "\\[x[", "[^]x[", "[]]", "*[a-\\]*[", "\\", "x\\", "[a\\", "*?[*"}
	names := []string{"", "[", "[[[", "x[abc", "abc[", "[x[", "]x[", "]", "a]b[", "\\", "x\\", "[a\\", "zz[q"}
	for _, p := range patterns {
		q := literalOpenClasses(p)
		for _, n := range names {
			if globMatch(p, n) != globMatch(q, n) {
				t.Errorf("globMatch(%q, %q) = %v, but of %q = %v", p, n, globMatch(p, n), q, globMatch(q, n))
			}
		}
	}
	if got := literalOpenClasses("*[ab"); got != "*\\[ab" {
		t.Errorf("literalOpenClasses(*[ab) = %q", got)
	}
	if p := "a[bc]d*"; literalOpenClasses(p) != p {
		t.Errorf("a pattern without an open class changed: %q", literalOpenClasses(p))
	}
}

// A connection that does not read stops running requests once its output
// passes maxReplyBuf: pipelined LOCKS of the largest COUNT leave at most
// that plus one reply unsent.
func TestLocks_UnreadRepliesAreBounded(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestOwner(t, srv, false)
	h.drv.stalled = true
	holdNames(t, srv, "p:", 20_000)
	c := h.connect()
	var reqs []string
	for range 20 {
		reqs = append(reqs, "LOCKS COUNT 100000")
	}
	h.send(c, reqs...)
	// Each round runs a step; no message comes between them.
	stopped := func() bool { return c.wait == nil && len(c.sess.w.B) >= maxReplyBuf }
	for i := 0; !stopped(); i++ {
		if i == 10_000 {
			t.Fatal("the connection did not stop in 10000 rounds")
		}
		h.round()
	}
	for range 3 {
		h.round()
	}
	if n := len(c.sess.w.B); n > maxReplyBuf+locksReplyBytes {
		t.Fatalf("%d bytes unsent; want at most %d", n, maxReplyBuf+locksReplyBytes)
	}
	if len(c.src) == 0 {
		t.Fatal("every request ran; want the rest held back")
	}
}
