package commands

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/relock/relock/locktable"
	"github.com/tidwall/redcon"
)

// testSession returns a session of srv on one end of a pipe, as accept
// would create it, without a listener.
func testSession(t testing.TB, srv *Server) *session {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.newSession(a.RemoteAddr(), a.LocalAddr(), func(sess *session) {
		sess.netConn = a
		sess.grant = make(chan locktable.Grant, 1)
	})
}

func newTestServer(t testing.TB) *Server {
	t.Helper()
	srv, err := New(Config{Listen: "127.0.0.1:0", MaxTTL: 60_000_000_000, MaxWaiters: 4, MaxHolds: 8})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// FuzzExec feeds arbitrary RESP input through redcon's parser and the
// command table. Whatever the input, exec must not panic, must write a
// reply for every command that does not wait, and the table must be empty
// once the session ends (no leaked hold).
func FuzzExec(f *testing.F) {
	seeds := []string{
		"*2\r\n$4\r\nLOCK\r\n$1\r\na\r\n",
		"*4\r\n$4\r\nLOCK\r\n$1\r\na\r\n$3\r\nTTL\r\n$3\r\n100\r\n",
		"*3\r\n$6\r\nUNLOCK\r\n$1\r\na\r\n$21\r\n1-0000000000000000000\r\n",
		"LOCK a SIZE 3 OWNER me\r\nLOCK a SIZE 3 OWNER me\r\nLOCKS\r\n",
		"TRYLOCK b DETACH TTL 5\r\nFORCEUNLOCK b\r\n",
		"HELLO 3\r\nLOCKS MATCH * COUNT 5\r\nINFO\r\nCOMMAND DOCS lock\r\n",
		"CLIENT SETNAME x\r\nCLIENT LIST\r\nCLIENT KILL ID 999\r\nRESET\r\n",
		"RENEW a 1-0000000000000000 TTL 10\r\nCHECK a 1-0000000000000000\r\n",
		"CONFIG GET *\r\nDBSIZE\r\nTIME\r\nPING\r\nECHO x\r\nSELECT 0\r\nAUTH x\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		srv := newTestServer(t)
		sess := testSession(t, srv)
		rd := redcon.NewReader(bytes.NewReader(raw))
		for i := 0; i < 64; i++ {
			cmd, err := rd.ReadCommand()
			if err != nil || len(cmd.Args) == 0 {
				break
			}
			before := len(sess.w.B)
			wait := sess.exec(cmd.Args)
			if wait != nil {
				srv.table.CancelWait(sess.lt)
				select {
				case <-sess.grant:
				default:
				}
				continue
			}
			if len(sess.w.B) == before {
				t.Fatalf("no reply to %q", cmd.Args)
			}
			if sess.quit {
				break
			}
		}
		srv.endSession(sess)
		// Only detached holds (with a TTL) may outlive the session.
		for _, l := range srv.table.Locks(locktableQueryAll(), srv.now()) {
			for _, h := range l.Holds {
				if !h.Detached {
					t.Fatalf("hold on %q outlived its session", l.Name)
				}
			}
			if len(l.Waiters) > 0 {
				t.Fatalf("waiter on %q outlived its session", l.Name)
			}
		}
	})
}

func locktableQueryAll() locktable.Query { return locktable.Query{} }

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
		scan := newFrameScanner(defaultMaxArgs, defaultMaxBulk)
		if scan.feed(in) != "" {
			t.Skip()
		}
		want, wantErr := redconCommands(in)
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
			a, n, err := parseRequest(buf, args)
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
