package commands

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Hashes of "correct horse" made by other implementations, so that the
// formats users paste from their tools are the ones we read:
// `htpasswd -bnBC 4 "" 'correct horse'` (Apache, $2y$) and
// `argon2 relocksalt16byte -id -t 2 -m 8 -p 1 -l 32 -e` (the reference
// implementation's CLI).
const (
	htpasswdBcrypt   = "$2y$04$Diq2vUoSGYxxpcMQ3yaOzugA326SJ1gIhBTET6PCXWYGzmtpJOG56"
	referenceArgon2  = "$argon2id$v=19$m=256,t=2,p=1$cmVsb2Nrc2FsdDE2Ynl0ZQ$9iP6wztjE2uVcE8/wnaM4O3yD4JJtSvqXTVBdFPjq+I"
	referenceArgon2b = "$argon2id$v=19$m=64,t=1,p=2$cmVsb2Nrc2FsdDE2Ynl0ZQ$XXUrBpIaTFLvyoqtxMv+Iw"
	horse            = "correct horse"
)

// bcryptHash hashes pass at bcrypt's lowest cost (tests only).
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
	const m, iters, p = 64, 1, 1
	key := argon2.IDKey([]byte(pass), salt, iters, m, p, 32)
	enc := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, iters, p, enc(salt), enc(key))
}

func TestUser_CheckPassword(t *testing.T) {
	users := map[string]User{
		"htpasswd bcrypt $2y$":  {Name: "a", PasswordHash: htpasswdBcrypt, Locks: []string{"*"}},
		"go bcrypt $2a$":        {Name: "b", PasswordHash: bcryptHash(t, horse), Locks: []string{"*"}},
		"reference argon2id":    {Name: "c", PasswordHash: referenceArgon2, Locks: []string{"*"}},
		"reference argon2id p2": {Name: "d", PasswordHash: referenceArgon2b, Locks: []string{"*"}},
		"go argon2id":           {Name: "e", PasswordHash: argon2Hash(t, horse), Locks: []string{"*"}},
		"requirepass":           NewRequirePassUser(horse),
	}
	attempts := []struct {
		pass string
		want bool
	}{
		{horse, true},
		{"correct horsf", false},
		{"correct hors", false},
		{horse + " ", false},
		{"Correct horse", false},
		{"", false},
	}
	for name, u := range users {
		if err := u.Validate(); err != nil {
			t.Fatalf("%s: Validate: %v", name, err)
		}
		for _, a := range attempts {
			if got := u.checkPassword(a.pass); got != a.want {
				t.Errorf("%s: checkPassword(%q) = %v; want %v", name, a.pass, got, a.want)
			}
		}
	}
}

func TestUser_CertificateOnlyUserHasNoPassword(t *testing.T) {
	u := User{Name: "svc", Locks: []string{"svc:*"}}
	if err := u.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, pass := range []string{"", "svc", "x"} {
		if u.checkPassword(pass) {
			t.Errorf("a user without a hash accepted password %q", pass)
		}
	}
}

func TestUser_Validate(t *testing.T) {
	good := bcryptHash(t, "x")
	tests := []struct {
		name string
		u    User
		want string // "" valid, else a substring of the error
	}{
		{"bcrypt", User{Name: "a", PasswordHash: good, Locks: []string{"a:*"}}, ""},
		{"argon2id", User{Name: "a", PasswordHash: referenceArgon2, Locks: []string{"*"}}, ""},
		{"admin without patterns", User{Name: "root", PasswordHash: good, Admin: true}, ""},
		{"no name", User{PasswordHash: good, Locks: []string{"*"}}, "without a name"},
		{"space in name", User{Name: "a b", PasswordHash: good, Locks: []string{"*"}}, "may not contain spaces"},
		{"newline in name", User{Name: "a\nb", PasswordHash: good, Locks: []string{"*"}}, "may not contain spaces"},
		{"plain text password", User{Name: "a", PasswordHash: "hunter2", Locks: []string{"*"}}, "must be bcrypt"},
		{"md5 crypt", User{Name: "a", PasswordHash: "$1$salt$hash", Locks: []string{"*"}}, "must be bcrypt"},
		{"argon2i", User{Name: "a", PasswordHash: strings.Replace(referenceArgon2, "argon2id", "argon2i", 1), Locks: []string{"*"}}, "must be bcrypt"},
		{"truncated bcrypt", User{Name: "a", PasswordHash: good[:20], Locks: []string{"*"}}, "bad bcrypt hash"},
		{"bad argon2id", User{Name: "a", PasswordHash: "$argon2id$v=19$m=64$x$y", Locks: []string{"*"}}, "bad argon2id hash"},
		{"no patterns", User{Name: "a", PasswordHash: good}, "no lock patterns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.u.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseArgon2_RejectsMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"$argon2id$",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdA$" + strings.Repeat("A", 22), // old version
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=0,t=1,p=1$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=64,t=1,p=0$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=64,t=1,p=256$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=64,t=1$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=x,t=1,p=1$c2FsdA$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=64,t=1,p=1$!!$" + strings.Repeat("A", 22),
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdA$QUJD", // hash too short
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + strings.Repeat("A", 22) + "$extra",
	} {
		if _, _, _, err := parseArgon2(s); err == nil {
			t.Errorf("parseArgon2(%q) accepted", s)
		}
	}
	p, salt, hash, err := parseArgon2(referenceArgon2)
	if err != nil || p != (argon2Params{m: 256, t: 2, p: 1}) || string(salt) != "relocksalt16byte" || len(hash) != 32 {
		t.Errorf("parseArgon2(reference) = %+v, %q, %d bytes, %v", p, salt, len(hash), err)
	}
}

func TestUser_MayLock(t *testing.T) {
	app := User{Name: "app", Locks: []string{"billing:*", "jobs:billing-?", `lit\*`}}
	admin := User{Name: "root", Admin: true}
	tests := []struct {
		u    User
		name string
		want bool
	}{
		{app, "billing:invoice", true},
		{app, "billing:", true},
		{app, "billing", false},
		{app, "Billing:x", false},
		{app, "xbilling:x", false},
		{app, "jobs:billing-1", true},
		{app, "jobs:billing-12", false},
		{app, "lit*", true},
		{app, "litx", false},
		{app, "other", false},
		{app, "billing:\x00\xff", true},
		{admin, "anything", true},
		{admin, "\x00", true},
	}
	for _, tt := range tests {
		if got := tt.u.mayLock(tt.name); got != tt.want {
			t.Errorf("%s.mayLock(%q) = %v; want %v", tt.u.Name, tt.name, got, tt.want)
		}
	}
}

// TestUsers_SetIsAllOrNothing: a reload with an invalid user keeps the
// users in force (SIGHUP with a broken file must not lock everyone out).
func TestUsers_SetIsAllOrNothing(t *testing.T) {
	srv := newAuthServer(t)
	if err := srv.SetUsers([]User{{Name: "x", PasswordHash: "plain", Locks: []string{"*"}}}); err == nil {
		t.Fatal("SetUsers accepted an invalid hash")
	}
	if err := srv.SetUsers([]User{
		{Name: "dup", PasswordHash: bcryptHash(t, "a"), Locks: []string{"*"}},
		{Name: "dup", PasswordHash: bcryptHash(t, "b"), Locks: []string{"*"}},
	}); err == nil || !strings.Contains(err.Error(), "defined twice") {
		t.Fatalf("SetUsers with a duplicate = %v; want an error", err)
	}
	if srv.lookupUser("app") == nil || srv.lookupUser("x") != nil || srv.lookupUser("dup") != nil {
		t.Fatal("a failed SetUsers changed the users in force")
	}
	if err := srv.SetUsers(nil); err != nil || srv.authRequired() {
		t.Fatalf("SetUsers(nil) = %v, authRequired %v; want authentication off", err, srv.authRequired())
	}
}

// newAuthServer returns a server (not listening) with users "app"
// (app:* locks, password "app-pass"), "root" (admin, "root-pass").
func newAuthServer(t testing.TB) *Server {
	t.Helper()
	srv, err := New(Config{Listen: "127.0.0.1:0", Users: []User{
		{Name: "app", PasswordHash: bcryptHash(t, "app-pass"), Locks: []string{"app:*"}},
		{Name: "root", PasswordHash: argon2Hash(t, "root-pass"), Admin: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// do runs one command on sess and returns its reply.
func do(t testing.TB, sess *session, args ...string) string {
	t.Helper()
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	if wait := sess.exec(bs); wait != nil {
		t.Fatalf("%q waits", args)
	}
	out := string(sess.w.B)
	sess.w.Reset()
	return out
}

// TestSession_OnlyHandshakeCommandsBeforeAuth: every command of the table
// except PING, AUTH, HELLO (with AUTH), QUIT and RESET answers -NOAUTH
// before authentication, and changes nothing.
func TestSession_OnlyHandshakeCommandsBeforeAuth(t *testing.T) {
	srv := newAuthServer(t)
	var open []string
	for _, c := range sortedCommands() {
		if c.noAuth {
			open = append(open, c.name)
		}
	}
	if got := strings.Join(open, " "); got != "auth hello ping quit reset" {
		t.Errorf("commands allowed before AUTH: %s; want auth hello ping quit reset", got)
	}
	for _, c := range sortedCommands() {
		if c.noAuth {
			continue
		}
		sess := testSession(t, srv)
		args := []string{strings.ToUpper(c.name), "app:x", "1-0000000000000000"}
		if got := do(t, sess, args...); got != "-"+"NOAUTH Authentication required.\r\n" {
			t.Errorf("%s before AUTH = %q; want -NOAUTH", c.name, got)
		}
	}
	sess := testSession(t, srv)
	if got := do(t, sess, "HELLO", "3"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Errorf("HELLO 3 without AUTH = %q; want -NOAUTH", got)
	}
	if got := do(t, sess, "PING"); got != "+PONG\r\n" {
		t.Errorf("PING before AUTH = %q", got)
	}
	if n := srv.table.Stats().Locks; n != 0 {
		t.Errorf("%d locks after unauthenticated commands; want 0", n)
	}
}

func TestSession_AuthAndWrongPass(t *testing.T) {
	srv := newAuthServer(t)
	sess := testSession(t, srv)
	const wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"AUTH", "app-pass"}, wrong}, // user "default" does not exist
		{[]string{"AUTH", "app", "nope"}, wrong},
		{[]string{"AUTH", "nobody", "app-pass"}, wrong},
		{[]string{"HELLO", "3", "AUTH", "app", "nope"}, wrong},
		// A bad SETNAME fails HELLO before its AUTH is tried (as in Redis).
		{[]string{"HELLO", "3", "AUTH", "app", "app-pass", "SETNAME", "bad name"}, "-" + errClientName + "\r\n"},
		{[]string{"TRYLOCK", "app:x"}, "-NOAUTH Authentication required.\r\n"},
		{[]string{"AUTH", "app", "app-pass"}, "+OK\r\n"},
		{[]string{"TRYLOCK", "other:x"}, "-NOPERM this user has no permissions to access the 'other:x' lock\r\n"},
		// A failed AUTH keeps the login in force (as in Redis).
		{[]string{"AUTH", "root", "nope"}, wrong},
		{[]string{"FORCEUNLOCK", "app:x"}, "-NOPERM this user has no permissions to run the 'forceunlock' command\r\n"},
		{[]string{"AUTH", "root", "root-pass"}, "+OK\r\n"},
		{[]string{"FORCEUNLOCK", "app:x"}, ":0\r\n"},
		// RESET logs out.
		{[]string{"RESET"}, "+RESET\r\n"},
		{[]string{"DBSIZE"}, "-NOAUTH Authentication required.\r\n"},
	}
	for _, s := range steps {
		if got := do(t, sess, s.args...); got != s.want {
			t.Errorf("%q = %q; want %q", s.args, got, s.want)
		}
	}
	if got := srv.stats.authFailures.Load(); got != 5 {
		t.Errorf("authFailures = %d; want 5", got)
	}
}

// TestSession_ReloadAppliesToLoggedInConnections: after SetUsers a logged
// in connection has its user's new permissions; a removed user has none,
// and sees no locks.
func TestSession_ReloadAppliesToLoggedInConnections(t *testing.T) {
	srv := newAuthServer(t)
	root := testSession(t, srv)
	do(t, root, "AUTH", "root", "root-pass")
	if got := do(t, root, "TRYLOCK", "app:held", "TTL", "60000", "DETACH"); !strings.HasPrefix(got, "$") {
		t.Fatalf("TRYLOCK app:held = %q", got)
	}
	sess := testSession(t, srv)
	do(t, sess, "AUTH", "app", "app-pass")
	if got := do(t, sess, "LOCKS"); !strings.Contains(got, "app:held") {
		t.Fatalf("LOCKS before the reload = %q; want app:held", got)
	}

	// app may now touch new:* only.
	if err := srv.SetUsers([]User{
		{Name: "app", PasswordHash: bcryptHash(t, "app-pass"), Locks: []string{"new:*"}},
		{Name: "root", PasswordHash: bcryptHash(t, "root-pass"), Admin: true},
	}); err != nil {
		t.Fatal(err)
	}
	if got := do(t, sess, "TRYLOCK", "app:y"); !strings.HasPrefix(got, "-NOPERM") {
		t.Errorf("TRYLOCK app:y after the reload = %q; want -NOPERM", got)
	}
	if got := do(t, sess, "LOCKS"); got != "*0\r\n" {
		t.Errorf("LOCKS after the reload = %q; want none", got)
	}
	if got := do(t, sess, "TRYLOCK", "new:y"); !strings.HasPrefix(got, "$") {
		t.Errorf("TRYLOCK new:y after the reload = %q; want a key", got)
	}

	// app removed: nothing but the handshake commands.
	if err := srv.SetUsers([]User{{Name: "root", PasswordHash: bcryptHash(t, "root-pass"), Admin: true}}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"TRYLOCK", "new:z"},
		{"FORCEUNLOCK", "app:held"},
		{"CLIENT", "LIST"},
	} {
		if got := do(t, sess, args...); !strings.HasPrefix(got, "-NOPERM") {
			t.Errorf("%q by a removed user = %q; want -NOPERM", args, got)
		}
	}
	if got := do(t, sess, "LOCKS"); got != "*0\r\n" {
		t.Errorf("LOCKS by a removed user = %q; want no locks", got)
	}
	if got := do(t, sess, "PING"); got != "+PONG\r\n" {
		t.Errorf("PING by a removed user = %q", got)
	}
	// Its hold on new:y is still there, bound to its connection.
	if got := do(t, root, "LOCKS", "MATCH", "new:*"); !strings.Contains(got, "new:y") {
		t.Errorf("the removed user's hold is gone: %q", got)
	}
}

// TestSession_AuthTurnedOnAfterLogin: a connection that was let in while
// no users existed has no permissions once users are set.
func TestSession_AuthTurnedOnAfterLogin(t *testing.T) {
	srv := newTestServer(t)
	sess := testSession(t, srv)
	if got := do(t, sess, "TRYLOCK", "a", "TTL", "60000", "DETACH"); !strings.HasPrefix(got, "$") {
		t.Fatalf("TRYLOCK without authentication = %q; want a key", got)
	}
	if err := srv.SetUsers([]User{{Name: "root", PasswordHash: bcryptHash(t, "root-pass"), Admin: true}}); err != nil {
		t.Fatal(err)
	}
	if got := do(t, sess, "TRYLOCK", "b"); !strings.HasPrefix(got, "-NOPERM") {
		t.Errorf("TRYLOCK = %q; want -NOPERM", got)
	}
	if got := do(t, sess, "LOCKS"); got != "*0\r\n" {
		t.Errorf("LOCKS = %q; want no locks", got)
	}
	if got := do(t, sess, "CLIENT", "KILL", "ID", "1"); !strings.HasPrefix(got, "-NOPERM") {
		t.Errorf("CLIENT KILL = %q; want -NOPERM", got)
	}
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestAuth_FailuresLoggedAtMostTenASecond: a flood of wrong passwords
// (each on a connection of its own, so no per-connection slowdown) is
// counted whole but logged at most authLogLimit times a second.
func TestAuth_FailuresLoggedAtMostTenASecond(t *testing.T) {
	h := &countingHandler{n: map[string]int{}}
	srv, err := New(Config{Listen: "127.0.0.1:0", Logger: slog.New(h), Users: []User{
		{Name: "app", PasswordHash: bcryptHash(t, "app-pass"), Locks: []string{"app:*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const n = 50
	for range n {
		if got := do(t, testSession(t, srv), "AUTH", "app", "wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
			t.Fatalf("AUTH = %q", got)
		}
	}
	if got := srv.stats.authFailures.Load(); got != n {
		t.Errorf("auth_failures = %d; want %d", got, n)
	}
	h.mu.Lock()
	logged := h.n["authentication failed"]
	h.mu.Unlock()
	seconds := int(time.Since(start)/time.Second) + 1
	if logged > authLogLimit*seconds || logged == 0 {
		t.Errorf("%d failures logged in %d s; want 1 to %d", logged, seconds, authLogLimit*seconds)
	}
}
