package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Security (README "Security"): authentication, per-lock-name ACLs,
// reloading users, protected mode, and keys never leaking.

// userEntry is one user of a --users-file.
type userEntry struct {
	name, hash string
	locks      []string
	admin      bool
}

// writeUsersFile writes a --users-file (YAML) to path.
func writeUsersFile(t testing.TB, path string, users ...userEntry) {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for _, u := range users {
		fmt.Fprintf(&b, "  - name: %q\n", u.name)
		if u.hash != "" {
			fmt.Fprintf(&b, "    password_hash: %q\n", u.hash)
		}
		if len(u.locks) > 0 {
			q := make([]string, len(u.locks))
			for i, l := range u.locks {
				q[i] = strconv.Quote(l)
			}
			fmt.Fprintf(&b, "    locks: [%s]\n", strings.Join(q, ", "))
		}
		fmt.Fprintf(&b, "    admin: %v\n", u.admin)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// bcryptHash hashes pass at bcrypt's lowest cost, so that a test can AUTH
// many times (a deployment uses cost 10 or more).
func bcryptHash(t testing.TB, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// argon2Hash hashes pass with argon2id at cheap parameters, in PHC form.
func argon2Hash(t testing.TB, pass string) string {
	t.Helper()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	key := argon2.IDKey([]byte(pass), salt, 1, 64, 1, 32)
	enc := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s", enc(salt), enc(key))
}

// startACLServer starts a server with the users "app" (locks app:*,
// bcrypt, password app-pass) and "root" (admin, argon2id, root-pass) and
// returns it with the users file's path.
func startACLServer(t testing.TB, args ...string) (*server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.yaml")
	writeUsersFile(t, path,
		userEntry{name: "app", hash: bcryptHash(t, "app-pass"), locks: []string{"app:*"}},
		userEntry{name: "root", hash: argon2Hash(t, "root-pass"), admin: true})
	return startServer(t, append([]string{"--users-file", path}, args...)...), path
}

// asUser is a client option that authenticates (HELLO 3 AUTH user pass).
func asUser(user, pass string) func(*redis.Options) {
	return func(o *redis.Options) { o.Username, o.Password = user, pass }
}

// countLogs returns how many log lines have that msg.
func countLogs(srv *server, msg string) int {
	n := 0
	for _, m := range srv.Logs() {
		if m["msg"] == msg {
			n++
		}
	}
	return n
}

// Reply patterns of the ACL matrix (whole RESP2 replies).
const (
	rNoAuth   = `-NOAUTH Authentication required\.\r\n`
	rNoPerm   = `-NOPERM this user has no permissions to .*\r\n`
	rWrong    = `-WRONGPASS invalid username-password pair or user is disabled\.\r\n`
	rKey      = `\$\d+\r\n\d+-[0-9a-f]{16}\r\n`
	rOne      = `:1\r\n`
	rInt      = `:\d+\r\n`
	rPong     = `\+PONG\r\n`
	rEmpty    = `\*0\r\n`
	rInfo     = `\$\d+\r\n# Server\r\n(?s:.*)`
	rList     = `\$\d+\r\nid=\d+ addr=(?s:.*)`
	rHello    = `\*14\r\n\$6\r\nserver\r\n\$6\r\nrelock\r\n(?s:.*)`
	rRenewed  = `:90000\r\n`
	rHasName  = `(?s:.*)\$\d+\r\n$NAME\r\n(?s:.*)` // $NAME: the cell's lock name
	stFree    = "free"
	stAdmin   = "held by admin"
	stVictim  = "held by victim"
	stOther   = "held by the cell's connection"
	stRenewed = "held by admin, renewed"
)

// TestACL_Matrix runs each command as each kind of client and checks the
// reply code and that a refused command changed nothing. Every cell uses
// its own lock name and connection; the admin prepares the lock's state.
func TestACL_Matrix(t *testing.T) {
	t.Parallel()
	srv, _ := startACLServer(t)
	admin := srv.client(t, asUser("root", "root-pass"))
	adminID := clientID(t, admin)

	// The kinds of client, in the column order of the table. Each cell's
	// lock name starts with the prefix: app:* is app's, other:* is not.
	type identity struct {
		name, prefix string
		prep         []string // AUTH commands and their expected replies, in pairs
	}
	identities := []identity{
		{"no auth", "app:", nil},
		{"wrong password", "app:", []string{"AUTH app nope", rWrong, "AUTH nobody app-pass", rWrong, "AUTH app-pass", rWrong}},
		{"allowed pattern", "app:", []string{"AUTH app app-pass", `\+OK\r\n`}},
		{"denied pattern", "other:", []string{"AUTH app app-pass", `\+OK\r\n`}},
		{"admin", "other:", []string{"AUTH root root-pass", `\+OK\r\n`}},
	}
	const (
		free   = iota // the lock does not exist
		held          // the admin holds it (key in $KEY)
		victim        // another connection holds it (its id in $VICTIM)
	)
	rows := []struct {
		cmd   string // $NAME, $KEY, $VICTIM are replaced
		setup int
		want  [5]string // reply per identity
		after string    // the lock's state after an accepted command
	}{
		{"LOCK $NAME TTL 60000", free, [5]string{rNoAuth, rNoAuth, rKey, rNoPerm, rKey}, stOther},
		{"TRYLOCK $NAME TTL 60000", free, [5]string{rNoAuth, rNoAuth, rKey, rNoPerm, rKey}, stOther},
		{"UNLOCK $NAME $KEY", held, [5]string{rNoAuth, rNoAuth, rOne, rNoPerm, rOne}, stFree},
		{"RENEW $NAME $KEY TTL 90000", held, [5]string{rNoAuth, rNoAuth, rRenewed, rNoPerm, rRenewed}, stRenewed},
		{"CHECK $NAME $KEY", held, [5]string{rNoAuth, rNoAuth, rInt, rNoPerm, rInt}, stAdmin},
		{"LOCKS MATCH $NAME", held, [5]string{rNoAuth, rNoAuth, rHasName, rEmpty, rHasName}, stAdmin},
		{"FORCEUNLOCK $NAME", held, [5]string{rNoAuth, rNoAuth, rNoPerm, rNoPerm, rOne}, stFree},
		{"CLIENT LIST", held, [5]string{rNoAuth, rNoAuth, rNoPerm, rNoPerm, rList}, stAdmin},
		{"CLIENT KILL ID $VICTIM", victim, [5]string{rNoAuth, rNoAuth, rNoPerm, rNoPerm, rOne}, stFree},
		{"INFO", held, [5]string{rNoAuth, rNoAuth, rInfo, rInfo, rInfo}, stAdmin},
		{"PING", held, [5]string{rPong, rPong, rPong, rPong, rPong}, stAdmin},
		{"HELLO 2", held, [5]string{rNoAuth, rNoAuth, rHello, rHello, rHello}, stAdmin},
	}

	wrongAuths := 0
	for r, row := range rows {
		for col, id := range identities {
			cell := row.cmd + " as " + id.name
			name := id.prefix + "r" + strconv.Itoa(r) + "-" + strings.ReplaceAll(id.name, " ", "-")
			vars := map[string]string{"NAME": name}

			var victimID int64
			switch row.setup {
			case held:
				vars["KEY"] = mustLock(t, admin, "LOCK", name, "TTL", 60000)
			case victim:
				v := srv.client(t, asUser("root", "root-pass"))
				mustLock(t, v, "LOCK", name)
				victimID = clientID(t, v)
				vars["VICTIM"] = strconv.FormatInt(victimID, 10)
			}
			// state describes the cell's lock as the admin sees it.
			state := func() string {
				l, ok := lockOf(t, admin, name)
				switch {
				case !ok:
					return stFree
				case len(l.Holders) != 1:
					return fmt.Sprintf("%d holders", len(l.Holders))
				case l.Holders[0].ClientID == adminID && l.Holders[0].TTL > 60000:
					return stRenewed
				case l.Holders[0].ClientID == adminID:
					return stAdmin
				case l.Holders[0].ClientID == victimID:
					return stVictim
				}
				return stOther
			}
			before := state()
			locks := dbsize(t, admin)

			c := dialRaw(t, srv)
			for i := 0; i < len(id.prep); i += 2 {
				got := c.do(t, splitCommand(id.prep[i])...)
				if !regexp.MustCompile(`^` + id.prep[i+1] + `$`).MatchString(got) {
					t.Fatalf("%s: %s = %q; want %s", cell, id.prep[i], got, id.prep[i+1])
				}
				if strings.HasPrefix(got, "-WRONGPASS") {
					wrongAuths++
				}
			}
			cmd := expand(row.cmd, vars, false)
			got := c.do(t, splitCommand(cmd)...)
			want := expand(row.want[col], vars, true)
			if !regexp.MustCompile(`^` + want + `$`).MatchString(got) {
				t.Errorf("%s: %s = %.120q; want %s", cell, cmd, got, want)
				continue
			}
			after := state()
			refused := strings.HasPrefix(got, "-")
			switch {
			case refused && after != before:
				t.Errorf("%s: refused %s changed the lock: %s → %s", cell, cmd, before, after)
			case refused && dbsize(t, admin) != locks:
				t.Errorf("%s: refused %s changed the number of locks", cell, cmd)
			case !refused && after != row.after:
				t.Errorf("%s: after %s the lock is %s; want %s", cell, cmd, after, row.after)
			}
			// c stays open (until the test ends): closing it would release
			// its holds while the next cell counts the locks.
		}
	}
	if got := infoField(t, admin, "auth_failures"); got != strconv.Itoa(wrongAuths) {
		t.Errorf("INFO auth_failures = %s; want %d (the WRONGPASS replies)", got, wrongAuths)
	}
}

// TestAuth_RequirepassWithStockClients: --requirepass is the password of
// user "default" (AUTH pass, AUTH default pass, HELLO 3 AUTH default pass
// as go-redis sends it, redis-cli -a); wrong passwords get -WRONGPASS and
// count in INFO; nothing else works before AUTH.
func TestAuth_RequirepassWithStockClients(t *testing.T) {
	t.Parallel()
	const pass = "s3cret pass"
	srv := startServer(t, "--requirepass", pass)
	runExchanges(t, srv, []exchange{
		{send: "TRYLOCK a", reply: "-NOAUTH Authentication required.\r\n"},
		{send: "AUTH wrong", reply: "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{send: "AUTH default wrong", reply: "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{send: `AUTH "s3cret pass"`, reply: ok},
		{send: "TRYLOCK a", match: keyReply, save: "KEY FENCE"},
		{conn: "b", send: `AUTH default "s3cret pass"`, reply: ok},
		{conn: "b", send: "FORCEUNLOCK a", reply: ":1\r\n"}, // the default user is admin
		{conn: "c", send: `HELLO 3 AUTH default wrong`, reply: "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{conn: "c", send: `HELLO 3 AUTH default "s3cret pass"`, match: `%7\r\n(?s:.*)`},
		{conn: "c", send: "INFO stats", match: `(?s:.*auth_failures:3\r\n.*)`},
	})

	// go-redis with and without the password.
	good := srv.client(t, func(o *redis.Options) { o.Password = pass })
	mustUnlock(t, good, "x", mustLock(t, good, "TRYLOCK", "x"))
	bad := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: "nope", MaxRetries: -1})
	defer bad.Close()
	if err := bad.Ping(ctxFor(t, 5*time.Second)).Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
		t.Errorf("go-redis with a wrong password: %v; want WRONGPASS", err)
	}
	none := srv.client(t)
	if err := none.Do(ctxFor(t, 5*time.Second), "TRYLOCK", "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("go-redis without a password: %v; want NOAUTH", err)
	}

	// redis-cli -a.
	bin := needTool(t, "redis-cli")
	out, err := runBounded(exec.Command(bin, "--no-auth-warning", "-a", pass, "-h", "127.0.0.1", "-p", srv.Port(), "TRYLOCK", "cli"), 10*time.Second)
	if err != nil || !plainKey.MatchString(strings.TrimSpace(out)) {
		t.Errorf("redis-cli -a TRYLOCK = %q, %v; want a key", out, err)
	}
	out, _ = runBounded(exec.Command(bin, "--no-auth-warning", "-a", "nope", "-h", "127.0.0.1", "-p", srv.Port(), "TRYLOCK", "cli"), 10*time.Second)
	if !strings.Contains(out, "WRONGPASS") && !strings.Contains(out, "NOAUTH") {
		t.Errorf("redis-cli -a nope printed %q; want WRONGPASS or NOAUTH", out)
	}
	for _, m := range srv.Logs() {
		if line := fmt.Sprint(m); strings.Contains(line, pass) || strings.Contains(line, "s3cret") {
			t.Errorf("a log line shows the password: %s", line)
		}
	}
}

// TestAuth_TimeoutClosesUnauthenticatedConnections: a connection that
// has not authenticated within --auth-timeout is closed, also in the
// middle of a frame; one that has stays open past it.
func TestAuth_TimeoutClosesUnauthenticatedConnections(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--requirepass", "pw", "--auth-timeout", "300ms")
	early := dialRaw(t, srv)
	if got := early.do(t, "AUTH", "pw"); got != ok {
		t.Fatalf("AUTH = %q", got)
	}
	start := time.Now()
	idle := dialRaw(t, srv)
	partial := dialRaw(t, srv)
	if _, err := partial.Write([]byte("*2\r\n$4\r\nAUTH\r\n$2\r\np")); err != nil {
		t.Fatal(err)
	}
	pinging := dialRaw(t, srv)
	if got := pinging.do(t, "PING"); got != "+PONG\r\n" { // PING does not count as authenticating
		t.Fatalf("PING = %q", got)
	}
	idle.expectClosed(t)
	partial.expectClosed(t)
	pinging.expectClosed(t)
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("closed after %v; want about the 300ms auth timeout", took)
	}
	// early was opened before the others, so its own timeout has passed.
	if got := early.do(t, "DBSIZE"); got != ":0\r\n" {
		t.Errorf("authenticated connection after the timeout: DBSIZE = %q", got)
	}
	if got := early.do(t, "INFO", "stats"); !strings.Contains(got, "auth_timeouts:3\r\n") {
		t.Errorf("INFO stats lacks auth_timeouts:3:\n%s", got)
	}
}

// TestAuth_TimeoutCountsOnlyConnectionsItCloses: a client that leaves by
// itself before the timeout is not an auth timeout.
func TestAuth_TimeoutCountsOnlyConnectionsItCloses(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--requirepass", "pw", "--auth-timeout", "300ms")
	gone := dialRaw(t, srv)
	gone.Close()
	stays := dialRaw(t, srv)
	stays.expectClosed(t) // its timer fires after gone's
	c := srv.client(t, func(o *redis.Options) { o.Password = "pw" })
	if got := infoField(t, c, "auth_timeouts"); got != "1" {
		t.Errorf("auth_timeouts = %s; want 1 (only the connection the timeout closed)", got)
	}
}

// TestReload_SIGHUPAppliesNewUsersKeepsConnectionsAndHolds.
func TestReload_SIGHUPAppliesNewUsersKeepsConnectionsAndHolds(t *testing.T) {
	t.Parallel()
	srv, path := startACLServer(t)
	admin := srv.client(t, asUser("root", "root-pass"))
	app := srv.client(t, asUser("app", "app-pass"))
	appID := clientID(t, app)
	key := mustLock(t, app, "LOCK", "app:held")
	waiter := srv.client(t, asUser("app", "app-pass"))
	waited := lockAsync(ctxFor(t, 20*time.Second), waiter, "app:held", "WAIT", 15000)
	waitForWaiters(t, admin, "app:held", 1)

	reload := func(msg string) {
		t.Helper()
		n := countLogs(srv, msg)
		if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() bool { return countLogs(srv, msg) > n }, "no %q log line after SIGHUP", msg)
	}

	// app: new password, and jobs:* instead of app:*.
	writeUsersFile(t, path,
		userEntry{name: "app", hash: bcryptHash(t, "new-pass"), locks: []string{"jobs:*"}},
		userEntry{name: "root", hash: argon2Hash(t, "root-pass"), admin: true})
	reload("users reloaded")

	// The connection and its hold survive; its permissions are the new ones.
	if l, _ := lockOf(t, admin, "app:held"); len(l.Holders) != 1 || l.Holders[0].ClientID != appID || len(l.Waiters) != 1 {
		t.Fatalf("after the reload app:held = %+v; want still held by %d with its waiter", l, appID)
	}
	ctx := ctxFor(t, 10*time.Second)
	if err := app.Do(ctx, "CHECK", "app:held", key).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("CHECK app:held after the reload: %v; want NOPERM", err)
	}
	if err := app.Do(ctx, "TRYLOCK", "app:other").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("TRYLOCK app:other after the reload: %v; want NOPERM", err)
	}
	jobKey := mustLock(t, app, "TRYLOCK", "jobs:1")
	if ls, err := readLocks(ctx, app); err != nil || len(ls) != 1 || ls[0].Name != "jobs:1" {
		t.Errorf("LOCKS by app after the reload = %+v, %v; want jobs:1 only", ls, err)
	}
	// New connections need the new password.
	c := dialRaw(t, srv)
	if got := c.do(t, "AUTH", "app", "app-pass"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Errorf("AUTH with the old password = %q; want -WRONGPASS", got)
	}
	if got := c.do(t, "AUTH", "app", "new-pass"); got != ok {
		t.Errorf("AUTH with the new password = %q", got)
	}

	// A broken file keeps the users in force.
	for _, broken := range []string{
		"users: [ {name: app", // not YAML
		"users:\n  - name: app\n    password_hash: plain\n    locks: [\"*\"]\n", // not a hash
		"users: []\n", // nobody
		"users:\n  - name: app\n    pasword_hash: x\n", // unknown field
	} {
		if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		reload("reloading users failed; keeping the users in force")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	reload("reloading users failed; keeping the users in force")
	c2 := dialRaw(t, srv)
	if got := c2.do(t, "AUTH", "app", "new-pass"); got != ok {
		t.Errorf("AUTH after failed reloads = %q; want +OK (the users in force)", got)
	}
	if got := c2.do(t, "TRYLOCK", "app:x"); !strings.HasPrefix(got, "-NOPERM") {
		t.Errorf("TRYLOCK app:x after failed reloads = %q; want -NOPERM", got)
	}
	mustUnlock(t, app, "jobs:1", jobKey)

	// The hold and the wait went through all of it. The waiter's LOCK was
	// admitted before the reload; when the admin releases the hold it is
	// answered (today with the key: a queued wait is not re-checked).
	if n, err := admin.Do(ctx, "FORCEUNLOCK", "app:held").Int(); err != nil || n != 1 {
		t.Fatalf("FORCEUNLOCK = %d, %v", n, err)
	}
	select {
	case g := <-waited:
		if g.err != nil && !strings.HasPrefix(g.err.Error(), "NOPERM") {
			t.Errorf("the waiter got %v; want a key or NOPERM", g.err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the waiter queued before the reload got no reply after FORCEUNLOCK")
	}
}

// TestSecurity_KeysNeverShown: keys are bearer tokens; LOCKS, CLIENT
// LIST/INFO, INFO, errors and the debug log never show one.
func TestSecurity_KeysNeverShown(t *testing.T) {
	t.Parallel()
	srv, _ := startACLServer(t)
	admin := srv.client(t, asUser("root", "root-pass"))
	app := srv.client(t, asUser("app", "app-pass"))
	ctx := ctxFor(t, 20*time.Second)

	var keys []string
	take := func(c *redis.Client, args ...any) string {
		k := mustLock(t, c, "LOCK", args...)
		keys = append(keys, k)
		return k
	}
	k1 := take(app, "app:plain")
	take(app, "app:ttl", "TTL", 60000, "OWNER", "me")
	take(app, "app:ttl", "TTL", 60000, "OWNER", "me") // re-entry: same key
	k3 := take(app, "app:det", "TTL", 60000, "DETACH")
	take(app, "app:sem", "SIZE", 3)
	take(admin, "app:sem", "SIZE", 3)
	take(admin, "app:short", "TTL", 1) // expires: a debug log line
	waiter := srv.client(t, asUser("app", "app-pass"))
	w := lockAsync(ctx, waiter, "app:plain", "WAIT", 10000)
	waitForWaiters(t, admin, "app:plain", 1)

	var replies []string
	record := func(v any, err error) {
		replies = append(replies, fmt.Sprintf("%v %v", v, err))
	}
	record(app.Do(ctx, "CHECK", "app:plain", k1).Result())
	record(app.Do(ctx, "RENEW", "app:det", k3, "TTL", 50000).Result())
	record(app.Do(ctx, "UNLOCK", "app:det", k1).Result()) // wrong key: NOTHELD
	record(app.Do(ctx, "CHECK", "other:x", k1).Result())  // NOPERM
	for _, c := range []*redis.Client{admin, app} {
		record(c.Do(ctx, "LOCKS").Result())
		record(c.Do(ctx, "INFO", "all").Result())
		record(c.Do(ctx, "CLIENT", "INFO").Result())
		record(c.Do(ctx, "CLIENT", "LIST").Result())
		record(c.Do(ctx, "CONFIG", "GET", "*").Result())
	}
	record(admin.Do(ctx, "FORCEUNLOCK", "app:sem").Result())
	mustUnlock(t, app, "app:plain", k1) // hands over to the waiter
	g := awaitGrant(t, w, 5*time.Second)
	keys = append(keys, g.key)
	eventually(t, 2*time.Second, func() bool { _, held := lockOf(t, admin, "app:short"); return !held }, "app:short did not expire")
	record(admin.Do(ctx, "CLIENT", "KILL", "ID", clientID(t, waiter)).Result()) // releases by kill
	record(admin.Do(ctx, "LOCKS").Result())

	var logs []string
	for _, m := range srv.Logs() {
		l := fmt.Sprint(m)
		logs = append(logs, l)
		if strings.Contains(l, "app-pass") || strings.Contains(l, "root-pass") {
			t.Errorf("a log line shows a password: %s", l)
		}
	}
	if countLogs(srv, "released") == 0 {
		t.Fatalf("no debug log line about releases; is --log-level debug in force?\n%s", srv.logText())
	}
	for _, k := range keys {
		_, random, _ := strings.Cut(k, "-")
		if len(random) != 16 {
			t.Fatalf("key %q has no 16-hex random part", k)
		}
		for _, r := range replies {
			if strings.Contains(r, random) {
				t.Errorf("a reply shows the key %s: %.300s", k, r)
			}
		}
		for _, l := range logs {
			if strings.Contains(l, random) {
				t.Errorf("a log line shows the key %s: %s", k, l)
			}
		}
	}
}

// TestProtected_NonLoopbackWithoutAuthIsRefused: protected mode. The
// server binds 0.0.0.0 at most, and only loopback is ever connected to.
func TestProtected_NonLoopbackWithoutAuthIsRefused(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		code, stderr := runServerToExit(t, "--listen", listen)
		if code == 0 {
			t.Fatalf("--listen %s without authentication exited 0", listen)
		}
		for _, want := range []string{"protected mode", listen, "--requirepass", "--users-file", "--insecure-no-auth"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("--listen %s: the error does not mention %q:\n%s", listen, want, stderr)
			}
		}
	}
	// Loopback needs no authentication; the others start with it, or with
	// --insecure-no-auth, or with mutual TLS.
	certs := makeTestCerts(t)
	for _, args := range [][]string{
		{"--listen", "0.0.0.0:0", "--insecure-no-auth"},
		{"--listen", "0.0.0.0:0", "--requirepass", "pw"},
		{"--listen", "0.0.0.0:0", "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey, "--tls-client-ca", certs.caCert},
		{"--listen", "[::1]:0"},
		{"--listen", "localhost:0"},
	} {
		startServer(t, args...).Stop() // startServer fails the test unless it listens
	}
}

// runServerToExit runs `relock server` with args, which must exit within
// 10 s on its own, and returns its exit code and stderr.
func runServerToExit(t testing.TB, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relockBin, append([]string{"server", "--log-format", "json"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("relock server %v did not exit within 10s", args)
	}
	if ee, okExit := err.(*exec.ExitError); okExit {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

// vmRSS returns the resident set size in kB of the process whose INFO
// server section c reads.
func vmRSS(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	pid := infoField(t, c, "process_id")
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%s/status", pid)
	return 0
}

// randomHex returns n random bytes in hex.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
