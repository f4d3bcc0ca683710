package commands

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/resp"
)

// session is one client connection.
type session struct {
	srv *Server
	id  uint64
	// c is the connection's lifecycle (conn.go); nil for a session made
	// without one (tests). netConn is the socket of a goroutine-served
	// connection (TLS state), else nil.
	c       *conn
	netConn net.Conn
	addr    string
	laddr   string
	created time.Time

	// Owned by the connection's owner (its event loop or goroutine): no
	// lock needed.
	w    resp.Writer
	ev   locktable.Events
	lt   *locktable.Session
	quit bool // close after flushing the reply
	// sub is the connection's lock-event subscriptions (pubsub.go); nil
	// until it first subscribes.
	sub *subscriber
	// nch and npat count its channel and pattern subscriptions, for
	// CLIENT LIST (other goroutines).
	nch, npat atomic.Int32
	// killed: CLIENT KILL chose it; its holds are released as killed,
	// whoever ends the session first (the killer or its owner).
	killed atomic.Bool
	// uncommitted are the holds granted at once to this connection's
	// commands of the loop's current round, until the round's commit
	// (see commitGrant).
	uncommitted []heldRef
	tlsSeen     bool // the TLS client certificate was looked at (--tls-auth-cn)
	// authFails counts failed AUTHs since the last success (authDelay).
	authFails int
	// clusterOpen: the session has been opened in the Raft FSM. closeMu
	// serializes closing it (engine.go).
	clusterOpen atomic.Bool
	closeMu     sync.Mutex

	// authed: the connection may run commands (always true without
	// authentication). Read by the auth timeout's goroutine.
	authed atomic.Bool
	// authTimer closes the connection if it has not authenticated in time;
	// stopped when the session ends, restarted by RESET (requireAuth).
	// Guarded by mu.
	authTimer *time.Timer

	// lastCmd (index in commandList, -1: none) and lastAt (unix ns) are
	// written by the serving goroutine and read by CLIENT LIST: atomics,
	// so that the per-command bookkeeping takes no lock.
	lastCmd atomic.Int32
	lastAt  atomic.Int64

	// mu guards the fields below, which CLIENT LIST/INFO read from other
	// connections.
	mu      sync.Mutex
	name    string
	libName string
	libVer  string
	proto   int
	user    string // authenticated user; "": none (no authentication configured)
	waiting string // lock name of the blocked LOCK, if any
	waitSeq uint32 // its conn.waitSeq
	ended   bool   // endSession ran: lt is closed for good
	// lt is written by the serving goroutine only (RESET) and then under
	// mu; other goroutines read it under mu.
}

// refuseMaxClients is the reply to a connection over --max-clients.
var refuseMaxClients = "-" + resp.Limit("max number of clients reached") + "\r\n"

// admit creates and registers the session of a new connection, with bind
// setting its transport, or refuses it when the server is closing or at
// max-clients: then it returns nil and what to tell the client (if
// anything) before closing.
func (s *Server) admit(raddr, laddr net.Addr, bind func(*session)) (*session, string) {
	s.mu.Lock()
	if s.closing || (s.cfg.MaxClients > 0 && len(s.sessions) >= s.cfg.MaxClients) {
		closing := s.closing
		s.mu.Unlock()
		s.stats.rejected.Add(1)
		if closing {
			return nil, ""
		}
		return nil, refuseMaxClients
	}
	sess := s.newSession(raddr, laddr, bind)
	s.mu.Unlock()
	s.stats.connections.Add(1)
	return sess, ""
}

// newSession creates and registers a session for a connection. Caller
// holds s.mu.
func (s *Server) newSession(raddr, laddr net.Addr, bind func(*session)) *session {
	id := s.nextID.Add(1)
	now := time.Now()
	sess := &session{
		srv:     s,
		id:      id,
		laddr:   laddr.String(),
		created: now,
		proto:   2,
	}
	bind(sess)
	sess.requireAuth()
	sess.addr = raddr.String()
	if raddr.Network() == "unix" || sess.addr == "" || sess.addr == "@" {
		sess.addr = "/unix:" + sess.laddr
	}
	sess.lastCmd.Store(-1)
	sess.lastAt.Store(now.UnixNano())
	sess.lt = s.eng.newSession(sess)
	s.sessions[id] = sess
	return sess
}

// requireAuth makes sess authenticated where the server needs no
// authentication; elsewhere it starts (at accept) or restarts (RESET of an
// authenticated connection) the auth timeout: a connection that does not
// authenticate in time is closed, so that idle unauthenticated sockets
// cannot pile up. A RESET of a connection not yet authenticated leaves its
// timer running (else RESET would keep it open for ever).
func (sess *session) requireAuth() {
	s := sess.srv
	if !s.authRequired() {
		sess.authed.Store(true)
		return
	}
	wasAuthed := sess.authed.Swap(false)
	sess.mu.Lock() // authTimer: a RESET off the owner (a cluster) races a close
	defer sess.mu.Unlock()
	switch {
	case sess.ended:
	case sess.authTimer == nil:
		sess.authTimer = time.AfterFunc(s.cfg.AuthTimeout, func() {
			sess.mu.Lock()
			ended := sess.ended
			sess.mu.Unlock()
			if !ended && !sess.authed.Load() {
				s.stats.authTimeouts.Add(1)
				sess.kill()
			}
		})
	case wasAuthed:
		sess.authTimer.Reset(s.cfg.AuthTimeout)
	}
}

// endSession releases the session's bound holds, drops its wait and
// forgets it. It is idempotent and may run on any goroutine.
func (s *Server) endSession(sess *session) {
	s.endSessionBy(sess, locktable.ReasonDisconnect, s.commitQuietly)
}

// endSessionBy is endSession with the releases' commit left to commit (an
// event loop defers it to its round).
func (s *Server) endSessionBy(sess *session, why locktable.Reason, commit func(*locktable.Events)) {
	sess.mu.Lock()
	sess.ended = true
	if sess.authTimer != nil {
		sess.authTimer.Stop()
	}
	sess.mu.Unlock()
	if why == locktable.ReasonDisconnect && sess.killed.Load() {
		why = locktable.ReasonKilled
	}
	var ev locktable.Events
	s.eng.closeSession(&ev, sess, why, s.now()) // idempotent
	commit(&ev)
	s.mu.Lock()
	delete(s.sessions, sess.id)
	s.gone.Broadcast()
	s.mu.Unlock()
}

// exec runs one command, appending its reply to sess.w. It returns a
// pendingWait when the command is a LOCK that must wait for its grant.
func (sess *session) exec(args [][]byte) *pendingWait {
	srv := sess.srv
	srv.stats.commands.Add(1)
	cmd := lookup(args[0])
	if cmd == nil {
		sess.fail(resp.UnknownCommand(string(args[0]), args[1:]))
		return nil
	}
	start := time.Now()
	sess.lastCmd.Store(int32(cmd.idx))
	sess.lastAt.Store(start.UnixNano())
	if !sess.tlsSeen && srv.cfg.TLSAuthCN {
		sess.tlsSeen = true
		sess.loginByCertificate()
	}
	if !cmd.noAuth && !sess.authed.Load() {
		sess.fail(resp.ErrNoAuth)
		return nil
	}
	if cmd.admin && !sess.isAdmin() {
		sess.fail(errNoPermAdmin(cmd.name))
		return nil
	}
	if sess.w.Proto != 3 && sess.subscribed() && !subscribedModeOK(cmd.name) {
		sess.fail("ERR Can't execute '" + cmd.name + "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
		return nil
	}
	if (cmd.arity > 0 && len(args) != cmd.arity) || (cmd.arity < 0 && len(args) < -cmd.arity) {
		sess.fail(resp.WrongArity(cmd.name))
		return nil
	}
	if cmd.group == "lock" && !srv.eng.leader() {
		sess.fail(srv.eng.moved())
		return nil
	}
	if cmd.blocks && srv.eng.blocking() && sess.c != nil {
		// Off the owner: the input args point into is reused.
		own := make([][]byte, len(args))
		for i, a := range args {
			own[i] = append([]byte(nil), a...)
		}
		return &pendingWait{since: start, run: func() *pendingWait { return sess.run(cmd, own, start) }}
	}
	return sess.run(cmd, args, start)
}

// run runs cmd, admitted by exec.
func (sess *session) run(cmd *command, args [][]byte, start time.Time) *pendingWait {
	srv := sess.srv
	if cmd.mutates {
		if c := sess.c; c != nil && c.own.deferCommits {
			// On the owner (commands run off it only in a cluster,
			// which has no store): the gate is held until the
			// round's commit.
			if !c.own.enterRound() {
				sess.fail("ERR server is shutting down")
				return nil
			}
		} else {
			if !srv.enter() {
				sess.fail("ERR server is shutting down")
				return nil
			}
			defer srv.leave()
		}
	}
	wait := cmd.run(sess, args)
	srv.metrics.cmdTime[cmd.idx].Observe(time.Since(start).Seconds())
	return wait
}

// fail writes an error reply and counts it.
func (sess *session) fail(msg string) {
	sess.srv.stats.errors.Add(1)
	sess.srv.metrics.observeError(msg)
	sess.w.Error(msg)
}

// setProto switches the reply protocol.
func (sess *session) setProto(p int) {
	sess.w.Proto = p
	sess.mu.Lock()
	sess.proto = p
	sess.mu.Unlock()
}

// kill closes the session's connection from any goroutine. Its owner
// sees the close and ends the session.
func (sess *session) kill() {
	if sess.c != nil {
		sess.c.kill()
	}
}

// clientInfo renders the session as one CLIENT LIST line. Keys are never
// part of it.
func (sess *session) clientInfo(now time.Time) string {
	sess.mu.Lock()
	name, lib, ver, proto, waiting := sess.name, sess.libName, sess.libVer, sess.proto, sess.waiting
	sess.mu.Unlock()
	flags := "N"
	if waiting != "" {
		flags = "b"
	}
	user := sess.userName()
	w := 0
	if waiting != "" {
		w = 1
	}
	// Redis 7's fields, in its order (clients such as redis-py parse them),
	// then relock's own: holds and waits are counts, never keys.
	var b strings.Builder
	b.WriteString("id=" + itoa(int64(sess.id)))
	b.WriteString(" addr=" + sess.addr)
	b.WriteString(" laddr=" + sess.laddr)
	b.WriteString(" fd=-1")
	b.WriteString(" name=" + name)
	b.WriteString(" age=" + itoa(int64(now.Sub(sess.created)/time.Second)))
	b.WriteString(" idle=" + itoa(int64(now.Sub(time.Unix(0, sess.lastAt.Load()))/time.Second)))
	nch, npat := int64(sess.nch.Load()), int64(sess.npat.Load())
	if flags == "N" && nch+npat > 0 {
		flags = "P"
	}
	b.WriteString(" flags=" + flags)
	b.WriteString(" db=0 sub=" + itoa(nch) + " psub=" + itoa(npat) + " ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r")
	last := "NULL"
	if i := sess.lastCmd.Load(); i >= 0 && int(i) < len(commandList) {
		last = commandList[i].name
	}
	b.WriteString(" cmd=" + last)
	b.WriteString(" user=" + user)
	b.WriteString(" redir=-1")
	b.WriteString(" resp=" + itoa(int64(proto)))
	b.WriteString(" lib-name=" + lib)
	b.WriteString(" lib-ver=" + ver)
	b.WriteString(" holds=" + itoa(int64(sess.srv.eng.bound(sess))))
	b.WriteString(" waits=" + itoa(int64(w)))
	return b.String()
}
