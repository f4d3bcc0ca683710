package resp

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/redcon"
)

// FuzzParseRequest checks the event loop's request parser against redcon's
// reader: the same commands with the same arguments, then the same
// protocol error (or none), whatever the input and however it is split.
// This test is Linux-independent; the parser serves the event loop.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"*2\r\n$4\r\nLOCK\r\n$1\r\na\r\n",
		"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
		"PING\r\nECHO \"a b\" 'c'\r\n\r\n  \r\n",
		"*0\r\n", "*-1\r\n", "*1\r\n$-1\r\n", "*1\r\nx", "*1\n", "*1\r\n$1\nx\r\n",
		"*1\r\n$1\r\nxy\r\n", "*+1\r\n$01\r\nx\r\n", "ECHO \"a\r\n", "*2\r\n$1\r\na\r\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		// The server bounds requests as it reads them, before parsing
		// (redcon would loop over a multibulk of 10^15 arguments).
		scan := NewFrameScanner(1024, 64<<10)
		if scan.Feed(in) != "" {
			t.Skip()
		}
		// Redis ignores an empty multibulk (*0, *-1); redcon calls it a
		// protocol error: the oracle reads the input without them.
		want, wantErr := redconCommands(dropEmptyMultibulks(in))
		// Feed it in two parts, as reads may split it.
		cut := 0
		if len(in) > 0 {
			cut = int(split) % (len(in) + 1)
		}
		var got [][]string
		var gotErr error
		buf := append([]byte(nil), in[:cut]...)
		rest := in[cut:]
		var args [][]byte
		for {
			a, n, err := ParseRequest(buf, args)
			if err != nil {
				gotErr = err
				break
			}
			if n == 0 {
				if len(rest) == 0 {
					break
				}
				buf = append(buf, rest...)
				rest = nil
				continue
			}
			if len(a) > 0 {
				var cmd []string
				for _, x := range a {
					cmd = append(cmd, string(x))
				}
				got = append(got, cmd)
			}
			buf = buf[n:]
			args = a
		}
		// redcon drops the commands it parsed in the same read as a
		// protocol error; the loop runs them (as Redis does) before it
		// answers the error.
		if wantErr != nil && len(got) > len(want) {
			got = got[:len(want)]
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("input %q: commands %q; redcon %q", in, got, want)
		}
		if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
			t.Fatalf("input %q: error %v; redcon %v", in, gotErr, wantErr)
		}
	})
}

// dropEmptyMultibulks returns in without its empty multibulk frames (*0,
// *-1 at a frame's start), up to the first frame it cannot walk.
func dropEmptyMultibulks(in []byte) []byte {
	var out []byte
	pos := 0
	for pos < len(in) {
		lf := bytes.IndexByte(in[pos:], '\n')
		if lf < 0 {
			break
		}
		head := in[pos : pos+lf+1]
		if in[pos] != '*' {
			out = append(out, head...) // an inline command
			pos += lf + 1
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(string(head[1:len(head)-1]), "\r"))
		if err != nil || !bytes.HasSuffix(head, []byte("\r\n")) {
			break
		}
		if n <= 0 {
			pos += lf + 1
			continue
		}
		end := pos + lf + 1
		for range n {
			j := bytes.IndexByte(in[end:], '\n')
			if j < 0 || in[end] != '$' {
				return append(out, in[pos:]...)
			}
			l, err := strconv.Atoi(strings.TrimSuffix(string(in[end+1:end+j]), "\r"))
			if err != nil || l < 0 {
				return append(out, in[pos:]...)
			}
			end += j + 1 + l + 2
			if end > len(in) {
				return append(out, in[pos:]...)
			}
		}
		out = append(out, in[pos:end]...)
		pos = end
	}
	return append(out, in[pos:]...)
}

// redconCommands reads every command redcon's reader finds in in, and the
// protocol error it stops at (nil at the end of the input).
func redconCommands(in []byte) ([][]string, error) {
	rd := redcon.NewReader(bytes.NewReader(in))
	var out [][]string
	for {
		cmd, err := rd.ReadCommand()
		if err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		var c []string
		for _, x := range cmd.Args {
			c = append(c, string(x))
		}
		out = append(out, c)
	}
}
