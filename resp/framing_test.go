package resp

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/redcon"
)

// Small bounds so that the tests and the fuzzer reach them with short
// inputs.
const (
	testMaxArgs    = 8
	testMaxBulk    = 32
	testMaxRequest = 16 * testMaxBulk
)

func newTestScanner() *FrameScanner {
	return &FrameScanner{maxArgs: testMaxArgs, maxBulk: testMaxBulk, maxRequest: testMaxRequest}
}

// bulks encodes a multibulk request of args.
func bulks(args ...string) string {
	var b strings.Builder
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	return b.String()
}

func TestFrameScanner_Verdicts(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // "" accepted, else a substring of the verdict
	}{
		{"empty", "", ""},
		{"one command", bulks("PING"), ""},
		{"pipelined commands", bulks("PING") + bulks("LOCK", "a", "TTL", "10") + bulks("ECHO", "x"), ""},
		{"args at the limit", bulks("1", "2", "3", "4", "5", "6", "7", "8"), ""},
		{"bulk at the limit", bulks("ECHO", strings.Repeat("x", testMaxBulk)), ""},
		{"empty bulk", bulks("ECHO", ""), ""},
		{"empty multibulk", "*0\r\n*-1\r\n" + bulks("PING"), ""},
		{"bare LF headers", "*1\n$4\nPING\r\n", ""},
		{"inline", "PING\r\nLOCK a TTL 10\nECHO \"a b\"\r\n", ""},
		{"blank lines", "\n\n\n" + bulks("PING"), ""},
		{"partial frame", "*2\r\n$4\r\nLOCK\r\n$3\r\nab", ""},
		{"partial header", "*2\r\n$1", ""},

		{"too many args", bulks("1", "2", "3", "4", "5", "6", "7", "8", "9"), "too many arguments (9)"},
		{"2 billion args", "*2000000000\r\n", "too many arguments (2000000000)"},
		{"bulk over the limit", bulks("ECHO", strings.Repeat("x", testMaxBulk+1)), "argument of 33 bytes is too large"},
		{"512 MB bulk header", "*2\r\n$4\r\nECHO\r\n$536870912\r\n", "argument of 536870912 bytes is too large"},
		{"huge bulk after valid commands", bulks("PING") + "*1\r\n$99999999999\r\n", "too large"},
		{"bulk length overflow", "*1\r\n$99999999999999999999\r\n", "invalid"},
		{"negative bulk", "*1\r\n$-1\r\n", "invalid bulk length"},
		{"not a number", "*x\r\n", "invalid multibulk length"},
		{"bulk not a number", "*1\r\n$x\r\n", "invalid bulk length"},
		{"missing $", "*1\r\n:4\r\n", "expected '$'"},
		{"endless header", "*" + strings.Repeat("1", 30), "invalid length header"},
		{"endless bulk header", "*1\r\n$" + strings.Repeat("0", 30), "invalid length header"},
		{"request over the limit", bulks(strings.Repeat("x", testMaxBulk), strings.Repeat("x", testMaxBulk),
			strings.Repeat("x", testMaxBulk), strings.Repeat("x", testMaxBulk), strings.Repeat("x", testMaxBulk),
			strings.Repeat("x", testMaxBulk), strings.Repeat("x", testMaxBulk), strings.Repeat("x", testMaxBulk)) +
			bulks("PING"), ""}, // 8 × 32 bytes fit in 512
		{"inline too long", strings.Repeat("a", MaxInlineLength+1), "too big inline request"},
		{"inline too many words", "ECHO" + strings.Repeat(" a", testMaxArgs) + "\r\n", "too many arguments in inline request"},
		{"inline words at the limit", "ECHO" + strings.Repeat(" a", testMaxArgs-1) + "\r\n", ""},
		// redcon allocates the rest of the line for every separator: few
		// words on a long line cost as much as many words.
		{"inline costly to split", "ECHO a b c d " + strings.Repeat("x", testMaxRequest/4) + "\r\n", "too big inline request"},
		// A CR at the start of a request begins an inline line for redcon,
		// so the bulk that follows is inline text, not a body to skip.
		{"CR then multibulk", "\r*1\r\n$" + strconv.Itoa(testMaxBulk) + "\r\n" + strings.Repeat("a ", testMaxBulk/2) + "\r\n", "inline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newTestScanner().Feed([]byte(tt.in))
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("feed(%.60q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFrameScanner_RequestBytesBounded(t *testing.T) {
	f := &FrameScanner{maxArgs: 1024, maxBulk: 100, maxRequest: 1000}
	arg := strings.Repeat("x", 100)
	args := make([]string, 20)
	for i := range args {
		args[i] = arg
	}
	got := f.Feed([]byte(bulks(args...)))
	if !strings.Contains(got, "request too large") {
		t.Fatalf("a 2 kB request with max-request 1000 = %q; want request too large", got)
	}
	// The verdict comes with the bulk header that crosses the bound, before
	// the body is read.
	f = &FrameScanner{maxArgs: 1024, maxBulk: 100, maxRequest: 1000}
	in := "*20\r\n" + strings.Repeat("$100\r\n"+arg+"\r\n", 9) // 977 bytes
	if got := f.Feed([]byte(in)); got != "" {
		t.Fatalf("9 bulks of 100 = %q; want accepted", got)
	}
	if got := f.Feed([]byte("$100\r\n")); !strings.Contains(got, "request too large") {
		t.Fatalf("10th bulk header = %q; want request too large", got)
	}
}

// TestFrameScanner_SplitAnywhereSameVerdict: the verdict does not depend on
// how the stream is cut into reads.
func TestFrameScanner_SplitAnywhereSameVerdict(t *testing.T) {
	for _, in := range frameSeeds() {
		want := newTestScanner().Feed(in)
		for cut := 0; cut <= len(in); cut++ {
			if got := feedPieces(newTestScanner(), in, []int{cut}); got != want {
				t.Fatalf("%q cut at %d: %q; whole: %q", in, cut, got, want)
			}
		}
		if got := feedPieces(newTestScanner(), in, everyByte(len(in))); got != want {
			t.Fatalf("%q a byte at a time: %q; whole: %q", in, got, want)
		}
	}
}

// FuzzFrameScanner: feeding the bytes whole or cut at random points gives
// the same verdict, the scanner never panics nor buffers more than a
// header, and whatever it accepts redcon parses into commands within the
// bounds (so redcon never sees a request the scanner did not measure).
func FuzzFrameScanner(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s, uint64(len(s)))
	}
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		whole := newTestScanner()
		want := whole.Feed(in)
		if len(whole.header) > 24 {
			t.Fatalf("header buffer grew to %d bytes", len(whole.header))
		}
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		var cuts []int
		for i := 0; i < len(in); i++ {
			if rng.IntN(4) == 0 {
				cuts = append(cuts, i)
			}
		}
		if got := feedPieces(newTestScanner(), in, cuts); got != want {
			t.Fatalf("cut at %v: %q; whole: %q", cuts, got, want)
		}
		if want != "" {
			return
		}
		rd := redcon.NewReader(bytes.NewReader(in))
		for i := 0; i < 1000; i++ {
			cmd, err := rd.ReadCommand()
			if err != nil {
				break
			}
			if len(cmd.Args) > testMaxArgs {
				t.Fatalf("accepted a command of %d arguments: %q", len(cmd.Args), cmd.Args)
			}
			// Raw is the request as sent, or an inline line re-encoded
			// (at most 16 bytes of framing per argument).
			if len(cmd.Raw) > testMaxRequest+16*(testMaxArgs+1) {
				t.Fatalf("accepted a request of %d bytes", len(cmd.Raw))
			}
		}
	})
}

// feedPieces feeds in cut at the given offsets (ascending) and returns the
// first verdict, as limitedConn does (it stops reading at the first one).
func feedPieces(f *FrameScanner, in []byte, cuts []int) string {
	prev := 0
	for _, c := range append(cuts, len(in)) {
		if c < prev {
			continue
		}
		if msg := f.Feed(in[prev:c]); msg != "" {
			return msg
		}
		prev = c
	}
	return ""
}

func everyByte(n int) []int {
	cuts := make([]int, n)
	for i := range cuts {
		cuts[i] = i
	}
	return cuts
}

func frameSeeds() [][]byte {
	big := strings.Repeat("x", testMaxBulk)
	seeds := []string{
		bulks("PING"),
		bulks("LOCK", "a", "TTL", "100") + bulks("UNLOCK", "a", "1-0000000000000000"),
		bulks("ECHO", big) + bulks("ECHO", big+"y"),
		bulks("1", "2", "3", "4", "5", "6", "7", "8", "9"),
		"*2\r\n$4\r\nECHO\r\n$536870912\r\n",
		"*1\r\n$-1\r\n*x\r\n",
		"*0\r\n*-1\r\n\n\n*1\n$4\nPING\n",
		"PING\r\nLOCK a TTL 10\r\nECHO 'a b' \"c\\n\"\r\n",
		"ECHO" + strings.Repeat(" a", testMaxArgs) + "\r\n",
		"ECHO a b c d " + strings.Repeat("x", testMaxRequest/4) + "\r\n",
		"\r*1\r\n$8\r\na a a a \r\n",
		"*" + strings.Repeat("9", 30),
		"*2\r\n$4\r\nLOCK\r\n$3\r\nab",
		"\x00\x01\xff*\r\n$\r\n",
	}
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = []byte(s)
	}
	return out
}
