package commands

import (
	"crypto/tls"
	"errors"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/resp"
)

// cmdPing: PING [message]
func (sess *session) cmdPing(args [][]byte) *pendingWait {
	if len(args) <= 2 && sess.w.Proto != 3 && sess.subscribed() {
		// In RESP2 subscribed mode, as in Redis: [pong, message].
		sess.w.Array(2)
		sess.w.BulkString("pong")
		if len(args) == 2 {
			sess.w.Bulk(args[1])
		} else {
			sess.w.BulkString("")
		}
		return nil
	}
	switch len(args) {
	case 1:
		sess.w.B = append(sess.w.B, "+PONG\r\n"...)
	case 2:
		sess.w.Bulk(args[1])
	default:
		sess.fail(resp.WrongArity("ping"))
	}
	return nil
}

// cmdEcho: ECHO message
func (sess *session) cmdEcho(args [][]byte) *pendingWait {
	sess.w.Bulk(args[1])
	return nil
}

// cmdQuit: QUIT — replies OK, then the connection closes.
func (sess *session) cmdQuit(args [][]byte) *pendingWait {
	sess.w.OK()
	sess.quit = true
	return nil
}

// cmdReset: RESET — the connection becomes as new: its non-detached holds
// are released, its name cleared, back to RESP2 (as in Redis). On a
// cluster member that is no longer the leader the holds cannot be
// released: RESET fails (-TRYAGAIN) and changes nothing; should leadership
// end in the middle of its release, it fails as well, its subscriptions
// already ended.
func (sess *session) cmdReset(args [][]byte) *pendingWait {
	srv := sess.srv
	if sess.clusterOpen.Load() && !srv.eng.leader() {
		sess.fail(errResetMoved)
		return nil
	}
	srv.hub.unsubscribeAll(sess.sub)
	sess.ev.Reset()
	if err := srv.eng.closeSession(&sess.ev, sess, locktable.ReasonReset, srv.now()); err != nil {
		if errors.Is(err, errMoved) {
			sess.fail(errResetMoved)
		} else {
			sess.tableError(err, "")
		}
		return nil
	}
	sess.commit(&sess.ev, true)
	sess.mu.Lock()
	if !sess.ended { // a killed session stays closed
		sess.lt = srv.eng.newSession(sess)
	}
	sess.name, sess.libName, sess.libVer = "", "", ""
	sess.user = ""
	sess.mu.Unlock()
	sess.setProto(2)
	sess.tlsSeen = false // logged in by its certificate again (--tls-auth-cn)
	sess.requireAuth()   // RESET makes the connection as new
	sess.w.Simple("RESET")
	return nil
}

// errResetMoved: RESET on a member that stopped leading.
const errResetMoved = "TRYAGAIN this node is no longer the cluster's leader: RESET did not release this connection's holds (the new leader releases them after --restore-grace unless they are renewed); reconnect"

// cmdAuth: AUTH [username] password. AUTH password means user "default".
// Without configured users, as in Redis: AUTH password is an error, and
// AUTH default <anything> succeeds.
func (sess *session) cmdAuth(args [][]byte) *pendingWait {
	reply := func(msg string) {
		if msg != "" {
			sess.fail(msg)
			return
		}
		sess.w.OK()
	}
	switch len(args) {
	case 2:
		if !sess.srv.authRequired() {
			sess.fail("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
			return nil
		}
		return sess.authenticate("default", string(args[1]), reply)
	case 3:
		return sess.authenticate(string(args[1]), string(args[2]), reply)
	default:
		sess.fail(resp.ErrSyntax)
	}
	return nil
}

// authenticate checks a user/password pair, logs the connection in as
// that user if it matches, and then calls done with the error reply ("" on
// success) on the connection's own thread. A failure changes nothing (an
// authenticated connection stays logged in as before, as in Redis).
// Without configured users only "default" exists, with no password
// (Redis's nopass).
//
// A password hash costs tens of milliseconds to check (bcrypt, argon2id),
// so the check never runs on an event loop's thread: it runs on a
// goroutine of its own and the connection waits for it as a blocked LOCK
// waits for its grant (the returned wait; nil when done already ran).
// At most maxChecks checks run at once, server-wide, and after a
// connection's first failures each further failure is answered later
// (authDelay), so that a flood of wrong passwords neither stalls other
// connections nor tries passwords quickly.
func (sess *session) authenticate(user, pass string, done func(msg string)) *pendingWait {
	srv := sess.srv
	if !srv.authRequired() {
		if user != "default" {
			srv.stats.authFailures.Add(1)
			done(resp.ErrWrongPass)
			return nil
		}
		sess.authed.Store(true)
		done("")
		return nil
	}
	pc := &passwordCheck{user: user, pass: pass, fails: sess.authFails}
	pc.done = func() {
		if pc.ok {
			sess.authFails = 0
			sess.login(pc.user)
			done("")
			return
		}
		sess.authFails++
		srv.stats.authFailures.Add(1)
		srv.logAuthFailure(user, sess.addr)
		done(resp.ErrWrongPass)
	}
	if sess.c == nil {
		// A session without a connection (tests): check here.
		srv.checkPassword(pc)
		pc.done()
		return nil
	}
	return &pendingWait{check: pc, since: time.Now()}
}

// authLogLimit is how many failed AUTHs are logged per second; the rest
// are counted (INFO auth_failures) and their number logged once the
// second is over, so that a flood of guesses cannot fill the disk.
const authLogLimit = 10

// authLog rate-limits the log of failed AUTHs. mu guards the fields.
type authLog struct {
	mu      sync.Mutex
	since   time.Time // start of the current second
	logged  int
	dropped int
}

// logAuthFailure logs a failed AUTH unless authLogLimit were logged in
// the last second.
func (s *Server) logAuthFailure(user, addr string) {
	l := &s.authLog
	now := time.Now()
	l.mu.Lock()
	dropped := 0
	if now.Sub(l.since) >= time.Second {
		dropped = l.dropped
		l.since, l.logged, l.dropped = now, 0, 0
	}
	log := l.logged < authLogLimit
	if log {
		l.logged++
	} else {
		l.dropped++
	}
	l.mu.Unlock()
	if dropped > 0 {
		s.log.Warn("authentication failures not logged (over the limit of a second)", "count", dropped)
	}
	if log {
		s.log.Warn("authentication failed", "user", user, "addr", addr)
	}
}

// passwordCheck is an AUTH (or HELLO ... AUTH) waiting for its password
// check.
type passwordCheck struct {
	user, pass string
	fails      int    // the connection's failed attempts before this one
	ok         bool   // the result: written by the check, read by done
	done       func() // finishes the command on the connection's thread
}

// maxChecks bounds the password checks that run at once, server-wide:
// half the CPUs (at least one), so that a flood of AUTHs cannot take
// every core from the connections being served.
var maxChecks = max(runtime.GOMAXPROCS(0)/2, 1)

// authDelay is how long the answer to a failed AUTH waits, given the
// connection's failures before it: none for the first few (typos), then
// doubling from 100 ms up to 3 s.
func authDelay(fails int) time.Duration {
	const free = 5
	if fails < free {
		return 0
	}
	return min(100*time.Millisecond<<min(fails-free, 5), 3*time.Second)
}

// checkPassword runs pc's check, waiting for a free checker first, then
// delays a failure as authDelay says (both cut short at shutdown). It
// may run on any goroutine but an event loop's.
func (s *Server) checkPassword(pc *passwordCheck) {
	select {
	case s.checks <- struct{}{}:
	case <-s.shutdown:
		return // pc.ok stays false
	}
	u := s.lookupUser(pc.user)
	if u == nil {
		// Spend what a real check costs, so that timing does not tell
		// which user names exist.
		if si := s.standIn(); si != nil {
			si.checkPassword(pc.pass) // its result is never used
		}
	}
	pc.ok = u != nil && u.checkPassword(pc.pass)
	if pc.ok {
		pc.user = u.Name
	}
	<-s.checks
	if d := authDelay(pc.fails); !pc.ok && d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.shutdown:
		}
	}
}

// login makes the connection act as user name.
func (sess *session) login(name string) {
	sess.mu.Lock()
	sess.user = name
	sess.mu.Unlock()
	sess.authed.Store(true)
}

// loginByCertificate logs the connection in as the user named by its
// verified TLS client certificate's common name, if there is one.
func (sess *session) loginByCertificate() {
	conn, ok := sess.netConn.(*tls.Conn)
	if !ok {
		return
	}
	st := conn.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	if u := sess.srv.lookupUser(cn); u != nil {
		sess.login(u.Name)
	}
}

// nobody is the user of a connection whose user no longer exists: no lock
// patterns, not admin. Never modified.
var nobody = &User{}

// currentUser returns the connection's user in the users now in force and
// whether it may act: (nil, true) when no authentication is configured
// (everything allowed, if authed); (nobody, false) when its user was
// removed by a reload, or authentication was turned on after it logged
// in (nothing allowed, nothing visible).
func (sess *session) currentUser() (*User, bool) {
	sess.mu.Lock()
	name := sess.user
	sess.mu.Unlock()
	if name == "" && !sess.srv.authRequired() {
		return nil, true
	}
	if u := sess.srv.lookupUser(name); u != nil {
		return u, true
	}
	return nobody, false
}

// isAdmin reports whether the connection may run admin commands.
func (sess *session) isAdmin() bool {
	u, ok := sess.currentUser()
	return ok && (u == nil || u.Admin)
}

// mayLock reports whether the connection may touch lock name.
func (sess *session) mayLock(name string) bool {
	u, ok := sess.currentUser()
	return ok && (u == nil || u.mayLock(name))
}

func errNoPermAdmin(cmd string) string {
	return "NOPERM this user has no permissions to run the '" + cmd + "' command"
}

// cmdHello: HELLO [protover [AUTH username password] [SETNAME clientname]]
func (sess *session) cmdHello(args [][]byte) *pendingWait {
	proto := sess.w.Proto
	if proto == 0 {
		proto = 2
	}
	i := 1
	if len(args) > 1 {
		v, ok := resp.ParseInt(args[1])
		if !ok {
			sess.fail("ERR Protocol version is not an integer or out of range")
			return nil
		}
		if v != 2 && v != 3 {
			sess.fail(resp.ErrNoProto)
			return nil
		}
		proto = int(v)
		i = 2
	}
	var user, pass, name string
	var hasAuth, hasName bool
	for ; i < len(args); i++ {
		switch {
		case resp.EqualFold(args[i], "AUTH") && i+2 < len(args) && !hasAuth:
			user, pass, hasAuth = string(args[i+1]), string(args[i+2]), true
			i += 2
		case resp.EqualFold(args[i], "SETNAME") && i+1 < len(args) && !hasName:
			name, hasName = string(args[i+1]), true
			i++
		default:
			sess.fail("ERR Syntax error in HELLO option '" + strings.ToUpper(string(args[i])) + "'")
			return nil
		}
	}
	if hasName && !validClientName(name) {
		sess.fail(errClientName) // before AUTH, as Redis checks it
		return nil
	}
	if hasAuth {
		return sess.authenticate(user, pass, func(msg string) {
			if msg != "" {
				sess.fail(msg)
				return
			}
			sess.hello(proto, hasName, name)
		})
	}
	if !sess.authed.Load() {
		sess.fail(resp.ErrNoAuth)
		return nil
	}
	sess.hello(proto, hasName, name)
	return nil
}

// hello finishes a HELLO once its AUTH (if any) succeeded.
func (sess *session) hello(proto int, hasName bool, name string) {
	if hasName && !sess.setName(name) {
		return
	}
	sess.setProto(proto)
	w := &sess.w
	w.Map(7)
	w.BulkString("server")
	w.BulkString("relock")
	w.BulkString("version")
	w.BulkString(Version)
	w.BulkString("proto")
	w.Int(int64(proto))
	w.BulkString("id")
	w.Int(int64(sess.id))
	w.BulkString("mode")
	w.BulkString("standalone")
	w.BulkString("role")
	if sess.srv.eng.leader() {
		w.BulkString("master")
	} else {
		w.BulkString("replica") // a follower (as Redis names it in HELLO)
	}
	w.BulkString("modules")
	w.Array(0)
}

// cmdSelect: SELECT index — only database 0 exists.
func (sess *session) cmdSelect(args [][]byte) *pendingWait {
	v, ok := resp.ParseInt(args[1])
	if !ok {
		sess.fail(resp.ErrNotInteger)
		return nil
	}
	if v != 0 {
		sess.fail(resp.ErrNoSuchDB)
		return nil
	}
	sess.w.OK()
	return nil
}

const errClientName = "ERR Client names cannot contain spaces, newlines or special characters."

// setName sets the connection's name, or writes the error and returns
// false if the name is not allowed.
func (sess *session) setName(name string) bool {
	if !validClientName(name) {
		sess.fail(errClientName)
		return false
	}
	sess.mu.Lock()
	sess.name = name
	sess.mu.Unlock()
	return true
}

func validClientName(name string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] < '!' || name[i] > '~' {
			return false
		}
	}
	return true
}

// clientArity is the exact argument count of the CLIENT subcommands that
// have one (CLIENT and the subcommand included).
var clientArity = map[string]int{"id": 2, "getname": 2, "info": 2, "setname": 3, "setinfo": 4, "no-evict": 3, "no-touch": 3}

// cmdClient: CLIENT subcommand [arguments]
func (sess *session) cmdClient(args [][]byte) *pendingWait {
	sub := strings.ToLower(string(args[1]))
	if n, ok := clientArity[sub]; ok && len(args) != n {
		sess.fail("ERR wrong number of arguments for 'client|" + sub + "' command")
		return nil
	}
	switch sub {
	case "id":
		sess.w.Int(int64(sess.id))
	case "getname":
		sess.mu.Lock()
		name := sess.name
		sess.mu.Unlock()
		sess.w.BulkOrNull(name, name != "")
	case "setname":
		if sess.setName(string(args[2])) {
			sess.w.OK()
		}
	case "setinfo":
		attr, val := strings.ToLower(string(args[2])), string(args[3])
		if !validClientName(val) && val != "" {
			sess.fail("ERR " + attr + " cannot contain spaces, newlines or special characters.")
			return nil
		}
		sess.mu.Lock()
		switch attr {
		case "lib-name":
			sess.libName = val
		case "lib-ver":
			sess.libVer = val
		default:
			sess.mu.Unlock()
			sess.fail("ERR Unrecognized option '" + string(args[2]) + "'")
			return nil
		}
		sess.mu.Unlock()
		sess.w.OK()
	case "info":
		sess.w.Verbatim(sess.clientInfo(time.Now()) + "\n")
	case "list":
		if !sess.isAdmin() {
			sess.fail(errNoPermAdmin("client|list"))
			return nil
		}
		sess.clientList(args[2:])
	case "kill":
		if !sess.isAdmin() {
			sess.fail(errNoPermAdmin("client|kill"))
			return nil
		}
		sess.clientKill(args[2:])
	case "unblock":
		sess.clientUnblock(args[2:])
	case "no-evict", "no-touch":
		if !resp.EqualFold(args[2], "ON") && !resp.EqualFold(args[2], "OFF") {
			sess.fail(resp.ErrSyntax)
			return nil
		}
		sess.w.OK()
	case "help":
		sess.w.Strings(
			"CLIENT <subcommand> [<arg> ...]. Subcommands are:",
			"ID", "GETNAME", "SETNAME <name>", "SETINFO <LIB-NAME|LIB-VER> <value>", "INFO",
			"LIST [ID id ...]", "KILL <ip:port> | KILL ID <id> | KILL ADDR <ip:port>",
			"UNBLOCK <client-id> [TIMEOUT|ERROR]",
			"NO-EVICT <ON|OFF>", "NO-TOUCH <ON|OFF>")
	case "maint_notifications":
		// go-redis asks this on every RESP3 connection and carries on
		// when told no: answer as Redis 7 does, without counting it as a
		// client error in the metrics.
		sess.w.Error(resp.UnknownSubcommand("CLIENT", string(args[1])))
	default:
		sess.fail(resp.UnknownSubcommand("CLIENT", string(args[1])))
	}
	return nil
}

// errUnblocked is the reply of a request CLIENT UNBLOCK ... ERROR ended,
// as Redis words it.
const errUnblocked = "UNBLOCKED client unblocked via CLIENT UNBLOCK"

// clientUnblock: CLIENT UNBLOCK client-id [TIMEOUT|ERROR], as in Redis: a
// connection's queued LOCK, TRYLOCK ... WAIT, MLOCK or UPGRADE ends as if
// its WAIT ran out (TIMEOUT, the default: a null; an UPGRADE keeps its
// shared hold) or with -UNBLOCKED (ERROR); :1 if it was waiting, else :0.
// The connection's holds and its later requests are untouched: a client
// can give up a wait without closing the connection that holds its other
// locks. An admin may unblock any connection, a user its own.
func (sess *session) clientUnblock(args [][]byte) {
	if len(args) < 1 || len(args) > 2 {
		sess.fail(resp.WrongArity("client|unblock"))
		return
	}
	id, ok := resp.ParseInt(args[0])
	if !ok {
		sess.fail(resp.ErrNotInteger)
		return
	}
	reply := ""
	if len(args) == 2 {
		switch {
		case resp.EqualFold(args[1], "TIMEOUT"):
		case resp.EqualFold(args[1], "ERROR"):
			reply = errUnblocked
		default:
			sess.fail("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
			return
		}
	}
	s := sess.srv
	s.mu.Lock()
	target := s.sessions[uint64(id)]
	s.mu.Unlock()
	if target == nil || (target != sess && !sess.isAdmin() && target.userName() != sess.userName()) {
		sess.w.Int(0) // as for a connection that does not exist
		return
	}
	if target.unblock(reply) {
		sess.w.Int(1)
		return
	}
	sess.w.Int(0)
}

// clientList: CLIENT LIST [TYPE normal] [ID id ...]
func (sess *session) clientList(args [][]byte) {
	srv := sess.srv
	var ids map[uint64]bool
	for i := 0; i < len(args); i++ {
		switch {
		case resp.EqualFold(args[i], "TYPE") && i+1 < len(args):
			i++ // every client is "normal"
		case resp.EqualFold(args[i], "ID") && i+1 < len(args):
			ids = map[uint64]bool{}
			for i++; i < len(args); i++ {
				v, ok := resp.ParseInt(args[i])
				if !ok || v <= 0 {
					sess.fail("ERR Invalid client ID")
					return
				}
				ids[uint64(v)] = true
			}
		default:
			sess.fail(resp.ErrSyntax)
			return
		}
	}
	now := time.Now()
	var b strings.Builder
	for _, c := range srv.sessionsSorted() {
		if ids != nil && !ids[c.id] {
			continue
		}
		b.WriteString(c.clientInfo(now))
		b.WriteByte('\n')
	}
	sess.w.Verbatim(b.String())
}

// clientKill: CLIENT KILL ip:port | KILL ID id | KILL ADDR ip:port. Killing
// a client closes its connection, which releases its non-detached holds.
func (sess *session) clientKill(args [][]byte) {
	if len(args) == 1 { // old form: reply OK or an error
		if n := sess.killWhere(func(c *session) bool { return c.addr == string(args[0]) }); n == 0 {
			sess.fail("ERR No such client")
			return
		}
		sess.w.OK()
		return
	}
	if len(args) == 0 || len(args)%2 != 0 {
		sess.fail(resp.ErrSyntax)
		return
	}
	var filters []func(*session) bool
	skipMe := true
	for i := 0; i < len(args); i += 2 {
		v := string(args[i+1])
		switch {
		case resp.EqualFold(args[i], "ID"):
			id, ok := resp.ParseInt(args[i+1])
			if !ok || id <= 0 {
				sess.fail("ERR client-id should be greater than 0")
				return
			}
			filters = append(filters, func(c *session) bool { return c.id == uint64(id) })
		case resp.EqualFold(args[i], "ADDR"):
			filters = append(filters, func(c *session) bool { return c.addr == v })
		case resp.EqualFold(args[i], "LADDR"):
			filters = append(filters, func(c *session) bool { return c.laddr == v })
		case resp.EqualFold(args[i], "SKIPME"):
			if resp.EqualFold(args[i+1], "NO") {
				skipMe = false
			} else if !resp.EqualFold(args[i+1], "YES") {
				sess.fail(resp.ErrSyntax)
				return
			}
		default:
			sess.fail(resp.ErrSyntax)
			return
		}
	}
	if skipMe { // the default, as in Redis
		filters = append(filters, func(c *session) bool { return c != sess })
	}
	n := sess.killWhere(func(c *session) bool {
		for _, f := range filters {
			if !f(c) {
				return false
			}
		}
		return true
	})
	sess.w.Int(int64(n))
}

// killWhere kills every session matching pred and returns how many.
// Their releases are committed with the caller's (killer's) reply.
func (sess *session) killWhere(pred func(*session) bool) int {
	s := sess.srv
	var victims []*session
	for _, c := range s.sessionsSorted() {
		if pred(c) {
			victims = append(victims, c)
		}
	}
	for _, c := range victims {
		s.log.Info("client killed", "client", c.id, "addr", c.addr)
		c.killed.Store(true)
		c.kill()
		// Release its holds now rather than when its goroutine notices:
		// the reply to CLIENT KILL then means "released".
		s.endSessionBy(c, locktable.ReasonKilled, func(ev *locktable.Events) { sess.commit(ev, false) })
	}
	return len(victims)
}
