package commands

import (
	"bytes"
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
		"LOCK s SHARED LOCKDELAY 10\r\nUPGRADE s 1-0000000000000000 WAIT 1\r\nDOWNGRADE s 1-0000000000000000\r\n",
		"MLOCK 2 a b TTL 100\r\nMTRYLOCK 3 a b c SHARED\r\nMLOCK 1 a WAIT 1\r\nLOCKS\r\n",
		"SUBSCRIBE __lock__:a\r\nPSUBSCRIBE __lock__:*\r\nUNSUBSCRIBE\r\nPUNSUBSCRIBE x\r\n",
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
				// No connection: a grant to it is released at once.
				var ev locktable.Events
				srv.table.CancelWaitAt(&ev, sess.lt, srv.now())
				srv.deliver(&ev)
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
