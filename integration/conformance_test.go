package integration

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The conformance tables below are the wire contract of docs/protocol.md written as
// data: each row sends one command on a raw TCP connection and states the
// exact reply (RESP bytes) or a regexp the whole reply must match.
//
// Keys, fences and client ids are not known in advance: a row's regexp
// groups can be saved under names (save), and later rows use them as
// $NAME in their command, reply or regexp (quoted there).

// exchange is one row of a conformance table.
type exchange struct {
	conn string // connection label ("" is the first); opened on first use, reopened after a close
	// send is the command, its words separated by spaces ("" is an empty
	// argument, "a b" one argument with a space). An empty send sends
	// nothing and reads the reply still owed on conn (see later).
	send  string
	raw   string // bytes to write as they are, instead of send (inline commands, protocol errors)
	reply string // the exact reply
	match string // or: a regexp the whole reply must match (anchored)
	save  string // names for match's groups, separated by spaces
	// later: do not read the reply now; a later row on conn with an empty
	// send reads it (for a LOCK that blocks while other rows run).
	later bool
	// until: resend until the reply is as expected (at most 2 s), for
	// observing what another connection did.
	until bool
	// closed: after the reply (if any) the server closes the connection.
	closed bool
}

// Reply patterns used by many rows.
const (
	// keyReply is a granted key; it saves the key and its fence.
	keyReply   = `\$\d+\r\n((\d+)-[0-9a-f]{16})\r\n`
	notHeld    = "-NOTHELD the key does not hold the lock\r\n"
	syntaxErr  = "-ERR syntax error\r\n"
	notInteger = "-ERR value is not an integer or out of range\r\n"
	nullBulk   = "$-1\r\n"
	ok         = "+OK\r\n"
)

// keyRE matches a whole reply that is a granted key.
var keyRE = regexp.MustCompile(`^` + keyReply + `$`)

func wrongArity(cmd string) string {
	return "-ERR wrong number of arguments for '" + cmd + "' command\r\n"
}

func TestConformance_RESP2(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	runExchanges(t, srv, []exchange{
		// PING, ECHO, inline commands.
		{send: "PING", reply: "+PONG\r\n"},
		{send: "ping", reply: "+PONG\r\n"},
		{send: "PING hello", reply: "$5\r\nhello\r\n"},
		{send: "PING a b", reply: wrongArity("ping")},
		{send: "ECHO hi", reply: "$2\r\nhi\r\n"},
		{send: `ECHO "two words"`, reply: "$9\r\ntwo words\r\n"},
		{send: `ECHO ""`, reply: "$0\r\n\r\n"},
		{send: "ECHO", reply: wrongArity("echo")},
		{raw: "PING\r\n", reply: "+PONG\r\n"},
		{raw: "ECHO inline\r\n", reply: "$6\r\ninline\r\n"},

		// SELECT: only database 0.
		{send: "SELECT 0", reply: ok},
		{send: "SELECT 1", reply: "-ERR DB index is out of range\r\n"},
		{send: "SELECT x", reply: notInteger},
		{send: "SELECT", reply: wrongArity("select")},

		// AUTH without a configured password, as in Redis.
		{send: "AUTH secret", match: `-ERR AUTH <password> called without any password configured for the default user\..*\r\n`},
		{send: "AUTH default x", reply: ok},
		{send: "AUTH bob x", match: `-WRONGPASS .*\r\n`},
		{send: "AUTH a b c", reply: syntaxErr},
		{send: "AUTH", reply: wrongArity("auth")},

		// HELLO: a flat field/value array under RESP2.
		{send: "HELLO", match: `\*14\r\n\$6\r\nserver\r\n\$6\r\nrelock\r\n\$7\r\nversion\r\n\$\d+\r\n[0-9A-Za-z.+-]+\r\n` +
			`\$5\r\nproto\r\n:2\r\n\$2\r\nid\r\n:(\d+)\r\n\$4\r\nmode\r\n\$10\r\nstandalone\r\n` +
			`\$4\r\nrole\r\n\$6\r\nmaster\r\n\$7\r\nmodules\r\n\*0\r\n`, save: "ID"},
		{send: "HELLO 2 AUTH default x SETNAME conf", match: `\*14\r\n(?s:.*)\$5\r\nproto\r\n:2\r\n\$2\r\nid\r\n:$ID\r\n(?s:.*)`},
		{send: "CLIENT GETNAME", reply: "$4\r\nconf\r\n"},
		{send: "HELLO 4", match: `-NOPROTO .*\r\n`},
		{send: "HELLO 1", match: `-NOPROTO .*\r\n`},
		{send: "HELLO x", match: `-ERR Protocol version is not an integer or out of range\r\n`},
		{send: "HELLO 2 AUTH bob x", match: `-WRONGPASS .*\r\n`},
		{send: "HELLO 3 AUTH bob x", match: `-WRONGPASS .*\r\n`},
		{send: `HELLO 3 SETNAME "a b"`, match: `-ERR Client names cannot contain spaces.*\r\n`},
		{send: "COMMAND INFO nosuch", reply: "*1\r\n$-1\r\n"}, // failed HELLO 3s left RESP2
		{send: "HELLO 2 AUTH default", match: `-ERR Syntax error in HELLO option 'AUTH'\r\n`},
		{send: "HELLO 2 SETNAME a SETNAME b", match: `-ERR Syntax error in HELLO option 'SETNAME'\r\n`},
		{send: "HELLO 2 FOO", match: `-ERR Syntax error in HELLO option 'FOO'\r\n`},
		{send: "CLIENT GETNAME", reply: "$4\r\nconf\r\n"}, // failed HELLOs changed nothing

		// CLIENT.
		{send: "CLIENT ID", reply: ":$ID\r\n"},
		{send: "CLIENT SETNAME conformance", reply: ok},
		{send: "CLIENT GETNAME", reply: "$11\r\nconformance\r\n"},
		{send: `CLIENT SETNAME "a b"`, match: `-ERR Client names cannot contain spaces.*\r\n`},
		{send: "CLIENT SETNAME", reply: "-ERR wrong number of arguments for 'client|setname' command\r\n"},
		{send: "CLIENT SETINFO lib-name relock-it", reply: ok},
		{send: "CLIENT SETINFO LIB-VER 1.2.3", reply: ok},
		{send: "CLIENT SETINFO colour blue", match: `-ERR Unrecognized option 'colour'\r\n`},
		{send: "CLIENT INFO", match: `\$\d+\r\nid=$ID addr=127\.0\.0\.1:\d+ laddr=127\.0\.0\.1:\d+ fd=-1 name=conformance .* resp=2 lib-name=relock-it lib-ver=1\.2\.3 holds=0 waits=0\n\r\n`},
		{send: "CLIENT LIST", match: `\$\d+\r\n(?s:.*)id=$ID addr=\S+ .* name=conformance .*\n\r\n`},
		{send: "CLIENT LIST ID $ID", match: `\$\d+\r\nid=$ID [^\n]*\n\r\n`},
		{send: "CLIENT NO-EVICT on", reply: ok},
		{send: "CLIENT NO-TOUCH OFF", reply: ok},
		{send: "CLIENT NO-EVICT maybe", reply: syntaxErr},
		{send: "CLIENT KILL ID 999999", reply: ":0\r\n"},
		{send: "CLIENT KILL ADDR 127.0.0.1:1", reply: ":0\r\n"},
		{send: "CLIENT KILL 127.0.0.1:1", reply: "-ERR No such client\r\n"},
		{send: "CLIENT KILL ID x", match: `-ERR client-id should be greater than 0\r\n`},
		{send: "CLIENT KILL ID", reply: "-ERR No such client\r\n"}, // the old form, with address "ID"
		{send: "CLIENT FROB", match: `-ERR unknown subcommand 'FROB'\. Try CLIENT HELP\.\r\n`},
		{send: "CLIENT", reply: wrongArity("client")},

		// INFO: every section, what ready checks read (loading:0).
		{send: "INFO", match: `\$\d+\r\n# Server\r\nredis_version:[0-9.]+\r\n(?s:.*)` +
			`\r\n# Clients\r\nconnected_clients:1\r\n(?s:.*)` +
			`\r\n# Stats\r\n(?s:.*)` +
			`\r\n# Persistence\r\nloading:0\r\n(?s:.*)` +
			`\r\n# Locks\r\nlocks:0\r\nholds:0\r\nwaiters:0\r\n(?s:.*)` +
			`\r\n# Replication\r\nrole:master\r\n(?s:.*)\r\n`},
		{send: "INFO persistence", match: `\$\d+\r\n# Persistence\r\nloading:0\r\n[^#]*\r\n`},
		{send: "INFO LOCKS", match: `\$\d+\r\n# Locks\r\nlocks:0\r\nholds:0\r\nwaiters:0\r\ndelayed:0\r\nlast_fence:\d+\r\ngrants:0\r\n[^#]*\r\n`},
		{send: "INFO server clients", match: `\$\d+\r\n# Server\r\n[^#]*tcp_port:\d+\r\n[^#]*\r\n# Clients\r\n[^#]*\r\n`},
		{send: "INFO nosuchsection", reply: "$0\r\n\r\n"},

		// COMMAND: real entries for relock's commands.
		{send: "COMMAND COUNT", reply: ":29\r\n"},
		{send: "COMMAND LIST", reply: bulkArray("auth", "check", "client", "cluster", "command", "config", "dbsize", "downgrade", "echo",
			"forceunlock", "hello", "info", "lock", "locks", "mlock", "mtrylock", "ping", "psubscribe", "punsubscribe", "quit", "renew", "reset",
			"select", "subscribe", "time", "trylock", "unlock", "unsubscribe", "upgrade")},
		{send: "COMMAND INFO lock", reply: "*1\r\n*10\r\n$4\r\nlock\r\n:-2\r\n*2\r\n+write\r\n+blocking\r\n" +
			":1\r\n:1\r\n:1\r\n*1\r\n+@lock\r\n*0\r\n*0\r\n*0\r\n"},
		{send: "COMMAND INFO unlock nosuch", match: `\*2\r\n\*10\r\n\$6\r\nunlock\r\n:3\r\n(?s:.*)\$-1\r\n`},
		{send: "COMMAND DOCS unlock", match: `\*2\r\n\$6\r\nunlock\r\n\*8\r\n\$7\r\nsummary\r\n\$\d+\r\n[^\r]+\r\n` +
			`\$5\r\nsince\r\n\$\d+\r\n[0-9.]+\r\n\$5\r\ngroup\r\n\$4\r\nlock\r\n\$6\r\nsyntax\r\n\$15\r\nUNLOCK name key\r\n`},
		{send: "COMMAND", match: `\*29\r\n(?s:.*)`},
		{send: "COMMAND FROB", match: `-ERR unknown subcommand 'FROB'\. Try COMMAND HELP\.\r\n`},

		// CONFIG GET: a minimal set; DBSIZE; TIME.
		{send: "CONFIG GET maxclients", reply: "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"},
		{send: "CONFIG GET save appendonly", reply: "*4\r\n$10\r\nappendonly\r\n$2\r\nno\r\n$4\r\nsave\r\n$0\r\n\r\n"},
		{send: "CONFIG GET nosuch", reply: "*0\r\n"},
		{send: "CONFIG GET *", match: `\*10\r\n(?s:.*)`},
		{send: "CONFIG GET max*", reply: "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"},
		{send: "CONFIG GET", reply: "-ERR wrong number of arguments for 'config|get' command\r\n"},
		{send: "CONFIG SET save x", match: `-ERR unknown subcommand 'SET'\. Try CONFIG HELP\.\r\n`},
		{send: "DBSIZE", reply: ":0\r\n"},
		{send: "DBSIZE x", reply: wrongArity("dbsize")},
		{send: "TIME", match: `\*2\r\n\$10\r\n\d{10}\r\n\$\d\r\n\d{1,6}\r\n`},

		// Unknown commands.
		{send: "GET a", match: `-ERR unknown command 'GET', with args beginning with: 'a'\s*\r\n`},
		{send: "SET a b", match: `-ERR unknown command 'SET', with args beginning with: 'a' 'b'\s*\r\n`},
		{send: "FLUSHALL", match: `-ERR unknown command 'FLUSHALL', with args beginning with:\s*\r\n`},

		// LOCK, CHECK, RENEW, UNLOCK on one hold.
		{send: "LOCK a", match: keyReply, save: "KEY FENCE"},
		{send: "DBSIZE", reply: ":1\r\n"},
		{send: "TRYLOCK a", reply: nullBulk},
		// Waiting on its own hold (a cycle of one) is not reported as a
		// deadlock: its WAIT ends it.
		{send: "LOCK a WAIT 1", reply: nullBulk},
		{conn: "b", send: "LOCK a WAIT 1", reply: nullBulk},
		{send: "CHECK a $KEY", reply: ":-1\r\n"},
		{send: "RENEW a $KEY", reply: ":-1\r\n"},
		{send: "RENEW a $KEY TTL 60000", reply: ":60000\r\n"},
		{send: "CHECK a $KEY", match: `:(59\d\d\d|60000)\r\n`},
		{send: "RENEW a $KEY", reply: ":60000\r\n"},
		{send: "RENEW a $KEY ttl 30000", reply: ":30000\r\n"},
		{send: "LOCKS", match: `\*1\r\n` +
			`\*10\r\n\$4\r\nname\r\n\$1\r\na\r\n\$4\r\nsize\r\n:1\r\n` +
			`\$7\r\nholders\r\n\*1\r\n` +
			`\*20\r\n\$5\r\nfence\r\n:$FENCE\r\n\$5\r\nowner\r\n\$-1\r\n\$9\r\nclient-id\r\n:$ID\r\n` +
			`\$3\r\nttl\r\n:(29\d\d\d|30000)\r\n\$3\r\nage\r\n:\d+\r\n\$8\r\ndetached\r\n:0\r\n\$5\r\ncount\r\n:1\r\n` +
			`\$11\r\nclient-name\r\n\$11\r\nconformance\r\n\$11\r\nclient-addr\r\n\$\d+\r\n127\.0\.0\.1:\d+\r\n` +
			`\$4\r\nmode\r\n\$9\r\nexclusive\r\n\$7\r\nwaiters\r\n\*0\r\n\$7\r\ndelayed\r\n:0\r\n`},
		{send: "CHECK A $KEY", reply: notHeld}, // names are case-sensitive
		{send: "CHECK a 1-0000000000000000", reply: notHeld},
		{send: "UNLOCK a $KEY", reply: ":1\r\n"},
		{send: "UNLOCK a $KEY", reply: notHeld},
		{send: "CHECK a $KEY", reply: notHeld},
		{send: "RENEW a $KEY", reply: notHeld}, // never re-acquires
		{send: "UNLOCK a not-a-key", reply: notHeld},
		{send: "DBSIZE", reply: ":0\r\n"}, // free locks are deleted at once
		{send: "LOCKS", reply: "*0\r\n"},
		{send: "lock a ttl 60000", match: keyReply, save: "KEY2"}, // keywords in any case
		{send: "unlock a $KEY2", reply: ":1\r\n"},

		// LOCKS options: MATCH, COUNT, AFTER.
		{send: "TRYLOCK x1", match: keyReply},
		{send: "TRYLOCK x2", match: keyReply},
		{send: "TRYLOCK y1", match: keyReply},
		{send: "LOCKS MATCH x*", match: `\*2\r\n\*10\r\n\$4\r\nname\r\n\$2\r\nx1\r\n(?s:.*)\$4\r\nname\r\n\$2\r\nx2\r\n(?s:.*)`},
		{send: "LOCKS COUNT 1", match: `\*1\r\n\*10\r\n\$4\r\nname\r\n\$2\r\nx1\r\n(?s:.*)`},
		{send: "LOCKS AFTER x1 COUNT 1", match: `\*1\r\n\*10\r\n\$4\r\nname\r\n\$2\r\nx2\r\n(?s:.*)`},
		{send: "LOCKS MATCH ?1 AFTER x1", match: `\*1\r\n\*10\r\n\$4\r\nname\r\n\$2\r\ny1\r\n(?s:.*)`},
		{send: "LOCKS MATCH z*", reply: "*0\r\n"},
		{send: "LOCKS MATCH [xz]2", match: `\*1\r\n\*10\r\n\$4\r\nname\r\n\$2\r\nx2\r\n(?s:.*)`},
		{send: "LOCKS MATCH x? COUNT 100000", match: `\*2\r\n(?s:.*)`},
		{send: "RESET", reply: "+RESET\r\n"}, // releases x1, x2, y1
		{send: "DBSIZE", reply: ":0\r\n"},
		{send: "CLIENT GETNAME", reply: nullBulk},

		// OWNER: re-entry returns the same key and counts.
		{send: "TRYLOCK r TTL 60000 OWNER me", match: keyReply, save: "RKEY RFENCE"},
		{send: "LOCK r OWNER me", match: `\$\d+\r\n$RKEY\r\n`},
		{send: "LOCKS MATCH r", match: `(?s).*\$5\r\nowner\r\n\$2\r\nme\r\n.*\$5\r\ncount\r\n:2\r\n.*`},
		{conn: "b", send: "TRYLOCK r OWNER other", reply: nullBulk},
		{conn: "b", send: "TRYLOCK r OWNER me", match: `\$\d+\r\n$RKEY\r\n`}, // re-entry from any connection
		{send: "LOCK r OWNER me TTL 1000 DETACH", reply: "-ERR DETACH must match the hold being re-entered\r\n"},
		{send: "LOCK r OWNER me SIZE 2", reply: "-SIZEMISMATCH lock 'r' has size 1, requested 2\r\n"},
		{send: "UNLOCK r $RKEY", reply: ":1\r\n"},
		{send: "UNLOCK r $RKEY", reply: ":1\r\n"},
		{conn: "b", send: "TRYLOCK r OWNER other", reply: nullBulk}, // still held once
		{send: "UNLOCK r $RKEY", reply: ":1\r\n"},
		{send: "UNLOCK r $RKEY", reply: notHeld},
		{send: "DBSIZE", reply: ":0\r\n"},

		// SIZE: a counting semaphore; FORCEUNLOCK releases every hold.
		{send: "LOCK s SIZE 2", match: keyReply, save: "S1"},
		{conn: "b", send: "TRYLOCK s SIZE 2", match: keyReply},
		{send: "TRYLOCK s SIZE 2", reply: nullBulk},
		{send: "TRYLOCK s", reply: "-SIZEMISMATCH lock 's' has size 2, requested 1\r\n"},
		{send: "LOCK s SIZE 3 WAIT 1", reply: "-SIZEMISMATCH lock 's' has size 2, requested 3\r\n"},
		{send: "LOCKS MATCH s", match: `\*1\r\n\*10\r\n\$4\r\nname\r\n\$1\r\ns\r\n\$4\r\nsize\r\n:2\r\n\$7\r\nholders\r\n\*2\r\n(?s:.*)`},
		{send: "FORCEUNLOCK s", reply: ":2\r\n"},
		{send: "FORCEUNLOCK s", reply: ":0\r\n"},
		{send: "UNLOCK s $S1", reply: notHeld},
		{send: "DBSIZE", reply: ":0\r\n"},

		// DETACH: needs a TTL; the hold survives its connection.
		{send: "LOCK d DETACH", reply: "-ERR DETACH requires a TTL\r\n"},
		{send: "TRYLOCK d DETACH", reply: "-ERR DETACH requires a TTL\r\n"},
		{conn: "b", send: "LOCK d TTL 60000 DETACH", match: keyReply, save: "DKEY DFENCE"},
		{conn: "b", send: "QUIT", reply: ok, closed: true},
		{send: "LOCKS MATCH d", match: `\*1\r\n(?s:.*)fence\r\n:$DFENCE\r\n\$5\r\nowner\r\n\$-1\r\n\$9\r\nclient-id\r\n:-1\r\n` +
			`(?s:.*)\$8\r\ndetached\r\n:1\r\n(?s:.*)`},
		{send: "CHECK d $DKEY", match: `:(59\d\d\d|60000)\r\n`},
		{send: "UNLOCK d $DKEY", reply: ":1\r\n"}, // the key is the capability
		{send: "DBSIZE", reply: ":0\r\n"},

		// A blocked LOCK, seen from other connections, granted in turn.
		{conn: "b", send: "LOCK w", match: keyReply, save: "WKEY"},
		{conn: "c", send: "CLIENT ID", match: `:(\d+)\r\n`, save: "CID"},
		{conn: "c", send: "LOCK w WAIT 0", later: true}, // WAIT 0: no limit
		{send: "LOCKS MATCH w", until: true, match: `(?s).*\$7\r\nwaiters\r\n\*1\r\n\*16\r\n\$9\r\nclient-id\r\n:$CID\r\n` +
			`\$5\r\nowner\r\n\$-1\r\n\$6\r\nwaited\r\n:\d+\r\n` +
			`\$11\r\nclient-name\r\n\$-1\r\n\$11\r\nclient-addr\r\n\$\d+\r\n127\.0\.0\.1:\d+\r\n\$4\r\nmode\r\n\$9\r\nexclusive\r\n\$7\r\nupgrade\r\n:0\r\n\$5\r\nmulti\r\n:0\r\n\$7\r\ndelayed\r\n:0\r\n`},
		{send: "CLIENT LIST ID $CID", match: `\$\d+\r\nid=$CID .* flags=b .* cmd=lock .*\n\r\n`},
		{send: "INFO clients", match: `(?s).*blocked_clients:1\r\n.*`},
		{conn: "b", send: "UNLOCK w $WKEY", reply: ":1\r\n"},
		{conn: "c", match: keyReply, save: "WKEY2"},
		{conn: "c", send: "PING", reply: "+PONG\r\n"},
		{send: "CHECK w $WKEY2", reply: ":-1\r\n"},

		// CLIENT KILL releases the victim's holds before it replies.
		{send: "CLIENT KILL ID $CID", reply: ":1\r\n"},
		{conn: "c", closed: true},
		{send: "LOCKS MATCH w", reply: "*0\r\n"},
		{conn: "c", send: "TRYLOCK k", match: keyReply},
		{conn: "c", send: "CLIENT INFO", match: `\$\d+\r\nid=\d+ addr=(\S+) .*\n\r\n`, save: "CADDR"},
		{send: "CLIENT KILL $CADDR", reply: ok}, // the old form
		{conn: "c", closed: true},
		{conn: "c", send: "TRYLOCK k", match: keyReply},
		{conn: "c", send: "CLIENT INFO", match: `\$\d+\r\nid=\d+ addr=(\S+) .*\n\r\n`, save: "CADDR2"},
		{send: "CLIENT KILL ADDR $CADDR2 SKIPME yes", reply: ":1\r\n"},
		{conn: "c", closed: true},
		{send: "DBSIZE", reply: ":0\r\n"},
		// The filter form spares its sender unless SKIPME no (as Redis).
		{send: "CLIENT KILL ID $ID", reply: ":0\r\n"},

		// RESET: holds released, name cleared, RESP2.
		{send: "TRYLOCK rs", match: keyReply, save: "RSKEY"},
		{send: "CLIENT SETNAME named", reply: ok},
		{send: "RESET", reply: "+RESET\r\n"},
		{send: "CHECK rs $RSKEY", reply: notHeld},
		{send: "CLIENT GETNAME", reply: nullBulk},
		{send: "RESET x", reply: wrongArity("reset")},
		{send: "TRYLOCK rs TTL 60000 DETACH", match: keyReply, save: "RSKEY2"},
		{send: "RESET", reply: "+RESET\r\n"},
		{send: "UNLOCK rs $RSKEY2", reply: ":1\r\n"}, // RESET keeps detached holds

		// QUIT replies OK and closes.
		{conn: "q", send: "TRYLOCK q", match: keyReply},
		{conn: "q", send: "QUIT", reply: ok, closed: true},
		{send: "LOCKS MATCH q", until: true, reply: "*0\r\n"},
	})
}

// TestConformance_MalformedRequests: every malformed request gets its error,
// keeps the connection open, and changes no state.
func TestConformance_MalformedRequests(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	runExchanges(t, srv, []exchange{
		{send: "LOCK held TTL 60000", match: keyReply, save: "KEY FENCE"},
		{send: "INFO locks", match: `((?s).*)`, save: "BEFORE"},

		// Arity.
		{send: "LOCK", reply: wrongArity("lock")},
		{send: "TRYLOCK", reply: wrongArity("trylock")},
		{send: "UNLOCK held", reply: wrongArity("unlock")},
		{send: "UNLOCK held $KEY extra", reply: wrongArity("unlock")},
		{send: "RENEW held", reply: wrongArity("renew")},
		{send: "CHECK held", reply: wrongArity("check")},
		{send: "CHECK held $KEY extra", reply: wrongArity("check")},
		{send: "FORCEUNLOCK", reply: wrongArity("forceunlock")},
		{send: "FORCEUNLOCK held extra", reply: wrongArity("forceunlock")},

		// Syntax: unknown, misplaced, valueless and repeated options.
		{send: "LOCK e TTL", reply: syntaxErr},
		{send: "LOCK e NOPE", reply: syntaxErr},
		{send: "LOCK e MATCH x", reply: syntaxErr},
		{send: "LOCK e TTL 1000 TTL 1000", reply: syntaxErr},
		{send: "LOCK e WAIT 1 WAIT 1", reply: syntaxErr},
		{send: "LOCK e SIZE 1 SIZE 1", reply: syntaxErr},
		{send: "LOCK e OWNER o OWNER o", reply: syntaxErr},
		{send: "LOCK e TTL 1000 DETACH detach", reply: syntaxErr},
		{send: "TRYLOCK e WAIT 10", reply: syntaxErr},
		{send: "TRYLOCK e TTL 5 TTL 5", reply: syntaxErr},
		{send: "RENEW held $KEY TTL 1000 TTL 1000", reply: syntaxErr},
		{send: "RENEW held $KEY WAIT 1", reply: syntaxErr},
		{send: "RENEW held $KEY TTL", reply: syntaxErr},
		{send: "LOCKS COUNT 1 COUNT 1", reply: syntaxErr},
		{send: "LOCKS MATCH", reply: syntaxErr},
		{send: "LOCKS TTL 5", reply: syntaxErr},

		// Numbers.
		{send: "LOCK e TTL x", reply: notInteger},
		{send: "LOCK e TTL 1.5", reply: notInteger},
		{send: "LOCK e TTL +5", reply: notInteger},
		{send: "LOCK e TTL 99999999999999999999", reply: notInteger},
		{send: "LOCK e WAIT x", reply: notInteger},
		{send: "LOCK e SIZE x", reply: notInteger},
		{send: "RENEW held $KEY TTL x", reply: notInteger},
		{send: "LOCKS COUNT x", reply: notInteger},
		{send: "LOCK e TTL 0", reply: "-ERR TTL must be between 1 and 3153600000000 ms\r\n"},
		{send: "LOCK e TTL -1", reply: "-ERR TTL must be between 1 and 3153600000000 ms\r\n"},
		{send: "LOCK e WAIT -1", reply: "-ERR WAIT must be between 0 and 3153600000000 ms\r\n"},
		{send: "LOCK e SIZE 0", reply: "-ERR SIZE must be between 1 and 1000000\r\n"},
		{send: "LOCK e SIZE 1000001", reply: "-ERR SIZE must be between 1 and 1000000\r\n"},
		{send: "RENEW held $KEY TTL 0", reply: "-ERR TTL must be between 1 and 3153600000000 ms\r\n"},
		{send: "LOCKS COUNT 0", reply: "-ERR COUNT must be between 1 and 100000\r\n"},
		{send: "LOCKS COUNT 100001", reply: "-ERR COUNT must be between 1 and 100000\r\n"},

		// Other invalid requests.
		{send: `LOCK ""`, reply: "-ERR lock name must not be empty\r\n"},
		{send: `LOCK e OWNER ""`, reply: "-ERR OWNER must not be empty\r\n"},
		{send: "LOCK e DETACH", reply: "-ERR DETACH requires a TTL\r\n"},
		{send: "LOCK held SIZE 2 WAIT 0", reply: "-SIZEMISMATCH lock 'held' has size 1, requested 2\r\n"},
		{send: "UNLOCK held 1-0000000000000000", reply: notHeld},
		{send: "UNLOCK held $FENCE-0000000000000000", reply: notHeld},
		{send: "UNLOCK held 0$KEY", reply: notHeld},
		{send: "RENEW held 1-0000000000000000 TTL 5", reply: notHeld},
		{send: "UNLOCK e $KEY", reply: notHeld},
		{send: "GETSET held x", match: `-ERR unknown command .*\r\n`},

		// Nothing changed, and the connection is still open.
		{send: "INFO locks", reply: "$BEFORE"},
		{send: "DBSIZE", reply: ":1\r\n"},
		{send: "LOCKS", match: `\*1\r\n\*10\r\n\$4\r\nname\r\n\$4\r\nheld\r\n\$4\r\nsize\r\n:1\r\n\$7\r\nholders\r\n\*1\r\n` +
			`\*20\r\n\$5\r\nfence\r\n:$FENCE\r\n(?s:.*)\$5\r\ncount\r\n:1\r\n(?s:.*)\$7\r\nwaiters\r\n\*0\r\n\$7\r\ndelayed\r\n:0\r\n`},
		{send: "CHECK held $KEY", match: `:\d+\r\n`},
		{send: "PING", reply: "+PONG\r\n"},

		// A protocol error is the one malformed request that closes the
		// connection; it changes nothing either.
		{conn: "p", raw: "*1\r\n$abc\r\n", match: `-ERR Protocol error.*\r\n`, closed: true},
		{send: "INFO locks", reply: "$BEFORE"},
		{send: "UNLOCK held $KEY", reply: ":1\r\n"},
	})
}

// TestConformance_Limits: the server limits of docs/protocol.md give -LIMIT, never a
// silent clamp.
func TestConformance_Limits(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-ttl", "1m", "--max-name-len", "16", "--max-waiters", "1",
		"--max-holds-per-client", "2", "--max-clients", "3")
	runExchanges(t, srv, []exchange{
		// max-ttl, for LOCK and RENEW.
		{send: "LOCK l TTL 60001", reply: "-LIMIT TTL 60001 ms exceeds max-ttl 60000 ms\r\n"},
		{send: "TRYLOCK l TTL 60001", reply: "-LIMIT TTL 60001 ms exceeds max-ttl 60000 ms\r\n"},
		{send: "LOCK l TTL 60000 OWNER o", match: keyReply, save: "LKEY"},
		{send: "RENEW l $LKEY TTL 60001", reply: "-LIMIT TTL 60001 ms exceeds max-ttl 60000 ms\r\n"},
		{send: "RENEW l $LKEY TTL 60000", reply: ":60000\r\n"},

		// max-name-len, for names and owners.
		{send: "LOCK 12345678901234567", reply: "-LIMIT lock name longer than max-name-len (16 bytes)\r\n"},
		{send: "FORCEUNLOCK 12345678901234567", reply: "-LIMIT lock name longer than max-name-len (16 bytes)\r\n"},
		{send: "LOCK n OWNER 12345678901234567", reply: "-LIMIT OWNER longer than max-name-len (16 bytes)\r\n"},
		{send: "LOCK 1234567890123456", match: keyReply, save: "NKEY"},

		// max-holds-per-client: re-entries and detached holds add none.
		{send: "LOCK third", reply: "-LIMIT too many holds and waits on this connection (max-holds-per-client 2)\r\n"},
		{send: "TRYLOCK third", reply: "-LIMIT too many holds and waits on this connection (max-holds-per-client 2)\r\n"},
		{send: "LOCK l OWNER o", match: `\$\d+\r\n$LKEY\r\n`},
		{send: "LOCK third TTL 60000 DETACH", match: keyReply, save: "TKEY"},
		{send: "UNLOCK 1234567890123456 $NKEY", reply: ":1\r\n"},
		{send: "TRYLOCK third", reply: nullBulk},

		// max-waiters (per lock).
		{conn: "b", send: "CLIENT ID", match: `:(\d+)\r\n`, save: "BID"},
		{conn: "b", send: "LOCK l WAIT 10000", later: true},
		{send: "LOCKS MATCH l", until: true, match: `(?s).*\$7\r\nwaiters\r\n\*1\r\n\*16\r\n\$9\r\nclient-id\r\n:$BID\r\n.*`},
		{conn: "c", send: "LOCK l WAIT 10000", reply: "-LIMIT too many waiters on this lock (max-waiters 1)\r\n"},
		{conn: "c", send: "TRYLOCK l", reply: nullBulk},

		// max-clients: a connection over it gets -LIMIT and is closed.
		{conn: "d", reply: "-LIMIT max number of clients reached\r\n", closed: true},
		{send: "INFO stats", match: `(?s).*rejected_connections:1\r\n.*`},

		{send: "UNLOCK l $LKEY", reply: ":1\r\n"}, // count 2 → 1
		{send: "UNLOCK l $LKEY", reply: ":1\r\n"},
		{conn: "b", match: keyReply},
		{send: "UNLOCK third $TKEY", reply: ":1\r\n"},
	})
}

// TestConformance_Defaults: --default-ttl applies to holds without TTL
// (so DETACH alone is allowed) and --default-wait to LOCK without WAIT.
func TestConformance_Defaults(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--default-ttl", "30s", "--default-wait", "30ms")
	runExchanges(t, srv, []exchange{
		{send: "LOCK d DETACH", match: keyReply, save: "KEY"},
		{send: "CHECK d $KEY", match: `:(29\d\d\d|30000)\r\n`},
		{send: "RENEW d $KEY", reply: ":30000\r\n"},
		{conn: "b", send: "LOCK d", reply: nullBulk}, // default-wait ran out
		{send: "INFO locks", match: `(?s).*wait_timeouts:1\r\n.*`},
		{send: "UNLOCK d $KEY", reply: ":1\r\n"},
	})
}

// TestConformance_RESP3: after HELLO 3, nil is _, field/value arrays are
// maps and INFO is a verbatim string; RESET goes back to RESP2.
func TestConformance_RESP3(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	runExchanges(t, srv, []exchange{
		{send: "HELLO 3", match: `%7\r\n\$6\r\nserver\r\n\$6\r\nrelock\r\n\$7\r\nversion\r\n\$\d+\r\n[0-9A-Za-z.+-]+\r\n` +
			`\$5\r\nproto\r\n:3\r\n\$2\r\nid\r\n:(\d+)\r\n\$4\r\nmode\r\n\$10\r\nstandalone\r\n` +
			`\$4\r\nrole\r\n\$6\r\nmaster\r\n\$7\r\nmodules\r\n\*0\r\n`, save: "ID"},
		{send: "HELLO", match: `%7\r\n(?s:.*)\$5\r\nproto\r\n:3\r\n(?s:.*)`}, // no version: stays RESP3
		{conn: "b", send: "HELLO 3 AUTH default x SETNAME other", match: `%7\r\n(?s:.*)`},
		{conn: "b", send: "CLIENT GETNAME", reply: "$5\r\nother\r\n"},

		{send: "LOCK a", match: keyReply, save: "KEY FENCE"},
		{send: "TRYLOCK a", reply: "_\r\n"},
		{send: "LOCK a WAIT 1", reply: "_\r\n"},
		{send: "CHECK a $KEY", reply: ":-1\r\n"},
		{send: "UNLOCK a 1-0000000000000000", reply: notHeld},
		{conn: "b", send: "CLIENT ID", match: `:(\d+)\r\n`, save: "BID"},
		{conn: "b", send: "LOCK a OWNER waiter WAIT 10000", later: true},
		{send: "LOCKS", until: true, match: `\*1\r\n` +
			`%5\r\n\$4\r\nname\r\n\$1\r\na\r\n\$4\r\nsize\r\n:1\r\n` +
			`\$7\r\nholders\r\n\*1\r\n` +
			`%10\r\n\$5\r\nfence\r\n:$FENCE\r\n\$5\r\nowner\r\n_\r\n\$9\r\nclient-id\r\n:$ID\r\n` +
			`\$3\r\nttl\r\n:-1\r\n\$3\r\nage\r\n:\d+\r\n\$8\r\ndetached\r\n:0\r\n\$5\r\ncount\r\n:1\r\n` +
			`\$11\r\nclient-name\r\n_\r\n\$11\r\nclient-addr\r\n\$\d+\r\n127\.0\.0\.1:\d+\r\n` +
			`\$4\r\nmode\r\n\$9\r\nexclusive\r\n\$7\r\nwaiters\r\n\*1\r\n` +
			`%8\r\n\$9\r\nclient-id\r\n:$BID\r\n\$5\r\nowner\r\n\$6\r\nwaiter\r\n\$6\r\nwaited\r\n:\d+\r\n` +
			`\$11\r\nclient-name\r\n\$5\r\nother\r\n\$11\r\nclient-addr\r\n\$\d+\r\n127\.0\.0\.1:\d+\r\n` +
			`\$4\r\nmode\r\n\$9\r\nexclusive\r\n\$7\r\nupgrade\r\n:0\r\n\$5\r\nmulti\r\n:0\r\n\$7\r\ndelayed\r\n:0\r\n`},
		{send: "UNLOCK a $KEY", reply: ":1\r\n"},
		{conn: "b", match: keyReply, save: "BKEY"},

		{send: "CLIENT GETNAME", reply: "_\r\n"},
		{send: "CLIENT INFO", match: `=\d+\r\ntxt:id=$ID .* resp=3 .*\n\r\n`},
		{send: "CLIENT LIST", match: `=\d+\r\ntxt:id=$ID (?s:.*)\n\r\n`},
		{send: "INFO", match: `=\d+\r\ntxt:# Server\r\n(?s:.*)\r\n# Persistence\r\nloading:0\r\n(?s:.*)\r\n# Locks\r\nlocks:1\r\n(?s:.*)\r\n`},
		{send: "INFO nosuchsection", reply: "=4\r\ntxt:\r\n"},
		{send: "CONFIG GET maxclients", reply: "%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"},
		{send: "CONFIG GET nosuch", reply: "%0\r\n"},
		{send: "COMMAND DOCS check", match: `%1\r\n\$5\r\ncheck\r\n%4\r\n\$7\r\nsummary\r\n(?s:.*)\$14\r\nCHECK name key\r\n`},
		{send: "COMMAND INFO nosuch", reply: "*1\r\n_\r\n"},
		{send: "COMMAND COUNT", reply: ":29\r\n"},
		{send: "DBSIZE", reply: ":1\r\n"},
		{send: "TIME", match: `\*2\r\n\$10\r\n\d{10}\r\n\$\d\r\n\d{1,6}\r\n`},
		{send: "PING", reply: "+PONG\r\n"},
		{send: "LOCK", reply: wrongArity("lock")},
		{send: "HELLO 4", match: `-NOPROTO .*\r\n`},
		{send: "CLIENT GETNAME", reply: "_\r\n"}, // still RESP3 after a failed HELLO

		// HELLO 2 and RESET go back to RESP2.
		{send: "HELLO 2", match: `\*14\r\n(?s:.*)\$5\r\nproto\r\n:2\r\n(?s:.*)`},
		{send: "TRYLOCK a", reply: nullBulk},
		{send: "HELLO 3", match: `%7\r\n(?s:.*)`},
		{send: "TRYLOCK a", reply: "_\r\n"},
		{send: "RESET", reply: "+RESET\r\n"},
		{send: "TRYLOCK a", reply: nullBulk},
		{send: "CONFIG GET maxclients", reply: "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"},
		{conn: "b", send: "UNLOCK a $BKEY", reply: ":1\r\n"},
		{send: "DBSIZE", reply: ":0\r\n"},
	})
}

func bulkArray(items ...string) string {
	var b strings.Builder
	b.WriteString("*" + itoa(len(items)) + "\r\n")
	for _, s := range items {
		b.WriteString("$" + itoa(len(s)) + "\r\n" + s + "\r\n")
	}
	return b.String()
}

// runExchanges runs the rows in order against srv and, at the end, checks
// that every connection not expected to be closed still answers PING.
func runExchanges(t *testing.T, srv *server, rows []exchange) {
	t.Helper()
	conns := map[string]*rawConn{}
	owed := map[string]string{} // conn → the command whose reply is owed
	vars := map[string]string{}
	for i, ex := range rows {
		c := conns[ex.conn]
		if c == nil {
			c = dialRaw(t, srv)
			conns[ex.conn] = c
		}
		args := splitCommand(expand(ex.send, vars, false))
		what := ex.send
		if ex.raw != "" {
			what = strings.TrimSpace(ex.raw)
		}
		where := "row " + itoa(i) + " [" + ex.conn + "] " + what
		if what == "" {
			what = owed[ex.conn]
			where += "(reply to " + what + ")"
		}
		var got string
		var err error
		deadline := time.Now().Add(2 * time.Second)
		for attempt := 0; ; attempt++ {
			switch {
			case ex.raw != "":
				_, err = c.Write([]byte(ex.raw))
			case len(args) > 0:
				err = c.send(args...)
			}
			if err != nil {
				t.Fatalf("%s: send: %v", where, err)
			}
			if ex.later {
				owed[ex.conn] = ex.send
				break
			}
			delete(owed, ex.conn)
			if ex.reply == "" && ex.match == "" {
				break // only closed
			}
			got, err = c.read()
			if err != nil {
				t.Fatalf("%s: reading reply: %v", where, err)
			}
			if !ex.until || matches(ex, got, vars) || time.Now().After(deadline) || attempt >= 200 {
				break
			}
			time.Sleep(5 * time.Millisecond) // polling another connection's effect
		}
		if !ex.later && (ex.reply != "" || ex.match != "") {
			if !matches(ex, got, vars) {
				want := expand(ex.reply, vars, false)
				if ex.match != "" {
					want = "/" + expand(ex.match, vars, true) + "/"
				}
				t.Fatalf("%s:\n got: %q\nwant: %q", where, got, want)
			}
			if ex.save != "" {
				groups := regexp.MustCompile(`^(?:` + expand(ex.match, vars, true) + `)$`).FindStringSubmatch(got)
				for j, name := range strings.Fields(ex.save) {
					vars[name] = groups[j+1]
				}
			}
		}
		if ex.closed {
			c.expectClosed(t)
			delete(conns, ex.conn)
		}
	}
	for label, c := range conns {
		if _, ok := owed[label]; ok {
			t.Errorf("connection %q: a reply is still owed to %q", label, owed[label])
			continue
		}
		if got := c.do(t, "PING"); got != "+PONG\r\n" {
			t.Errorf("connection %q: PING after the table = %q", label, got)
		}
	}
}

// matches reports whether got is the reply ex wants: the exact reply, or,
// if there is none, a whole match of the regexp.
func matches(ex exchange, got string, vars map[string]string) bool {
	if ex.reply != "" && ex.match == "" {
		return got == expand(ex.reply, vars, false)
	}
	re, err := regexp.Compile(`^(?:` + expand(ex.match, vars, true) + `)$`)
	if err != nil {
		panic(err)
	}
	return re.MatchString(got)
}

// expand replaces $NAME by the saved value of NAME (regexp-quoted if
// quote), longest names first. Other $ signs are left alone.
func expand(s string, vars map[string]string, quote bool) string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		v := vars[n]
		if quote {
			v = regexp.QuoteMeta(v)
		}
		s = strings.ReplaceAll(s, "$"+n, v)
	}
	return s
}

// splitCommand splits a command on spaces; "…" is one argument (possibly
// empty or with spaces).
func splitCommand(s string) []string {
	var args []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			args = append(args, s[1:1+end])
			s = s[end+2:]
			continue
		}
		end := strings.IndexByte(s, ' ')
		if end < 0 {
			end = len(s)
		}
		args = append(args, s[:end])
		s = s[end:]
	}
	return args
}

func itoa(n int) string { return strconv.Itoa(n) }
