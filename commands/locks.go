package commands

import (
	"sync"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/resp"
)

// cmdLocks: LOCKS [MATCH pattern] [COUNT n] [AFTER name]
func (sess *session) cmdLocks(args [][]byte) *pendingWait {
	opts, err := resp.ScanOptions(args[1:], resp.OptMatch|resp.OptCount|resp.OptAfter)
	if err != nil {
		sess.fail(err.Error())
		return nil
	}
	q := locktable.Query{After: string(opts.After), Count: 1000}
	if opts.Has&resp.OptCount != 0 {
		q.Count = int(opts.Count)
	}
	if opts.Has&resp.OptMatch != 0 {
		// A glob costs O(len(pattern)·len(name)) a name: it is held to
		// the names' own bound.
		if max := sess.srv.cfg.MaxNameLen; len(opts.Match) > max {
			sess.fail(resp.Limit("MATCH pattern longer than max-name-len (" + itoa(int64(max)) + " bytes)"))
			return nil
		}
		pattern := literalOpenClasses(string(opts.Match))
		if pattern != "*" {
			q.Match = func(name string) bool { return globMatch(pattern, name) }
			q.MatchCost = len(pattern)
			// Seek to the pattern's literal prefix and stop past it.
			q.Prefix = globPrefix(pattern)
		}
	}
	// A user sees only the locks it may touch.
	if u, _ := sess.currentUser(); u != nil && !u.Admin {
		match := q.Match
		q.Match = func(name string) bool { return u.mayLock(name) && (match == nil || match(name)) }
		for _, p := range u.Locks {
			q.MatchCost += len(p) + 1
		}
	}
	q.Budget, q.Work, q.List = locksBudget, locksWork, locksList
	// A cluster member reads its table only once it has confirmed that it
	// still leads (LOCKS blocks there, off the owner, as every lock
	// command does); the later steps of a long page read on without
	// asking again.
	if srv := sess.srv; srv.eng.confirmLeader() != nil {
		sess.fail(srv.eng.moved())
		return nil
	}
	buf := locksBodies.Get().(*[]byte)
	return sess.locksPage(&locksReply{q: q, body: resp.Writer{Proto: sess.w.Proto, B: (*buf)[:0]}, buf: buf})
}

const (
	// locksBudget is how many names one step of a LOCKS page may examine
	// (about a millisecond): a page whose names mostly do not match (a
	// glob without a literal prefix, a user's permissions) is served in
	// steps.
	locksBudget = 4096
	// locksWork bounds the work of one step (locktable.Query.Work, units
	// of a few nanoseconds; 1<<19 keeps a step near a millisecond: at
	// 2<<20 a costly MATCH held the bystander's PING at p50 6 ms in make
	// bench-stall): long names, a costly MATCH (a glob costs
	// O(len(pattern)·len(name)) a name) or locks with many holders end a
	// step before locksBudget names. A step examines at least one name,
	// whose glob is no longer than max-name-len.
	locksWork = 1 << 19
	// locksReplyBytes bounds a LOCKS reply: a page ends before the lock
	// whose record would take it past this (but has at least one lock),
	// and one lock's record lists as many holders, then waiters, as fit
	// in it, counting the others (more-holders, more-waiters). A client
	// that does not read holds the server to its output bound
	// (maxReplyBuf) plus one such reply.
	locksReplyBytes = 1 << 20
	// locksStepLocks bounds the locks one step describes and encodes
	// (256: at 1024, pages of COUNT 100000 held the bystander's PING at
	// p99 25 ms in make bench-stall; at 256, 7 ms).
	locksStepLocks = 256
	// locksList bounds the holds and waiters of one lock that a step
	// describes: more could not fit in locksReplyBytes (a holder's record
	// takes at least 178 bytes, a waiter's 150).
	locksList = 8192
)

// locksReply is a LOCKS page being gathered, in steps.
type locksReply struct {
	q    locktable.Query
	body resp.Writer // the records so far
	buf  *[]byte     // body's buffer, back to locksBodies when written
	n    int         // how many
	// scratch: one record's holders and waiters
	holders, waiters resp.Writer
	// clients: the connections named in the records so far
	clients map[int64]clientRef
}

// locksPage goes on with a LOCKS page. Between steps the connection's
// owner serves its other connections (the connection waits, as for a
// grant).
func (sess *session) locksPage(r *locksReply) *pendingWait {
	srv := sess.srv
	for {
		q := r.q
		q.Count = min(q.Count, locksStepLocks)
		p := srv.eng.table().LocksPage(q, srv.now())
		full := false
		for i := range p.Locks {
			if !sess.appendLock(r, &p.Locks[i]) {
				full = true // the rest is for the next page
				break
			}
		}
		if full {
			break
		}
		r.q.Count -= len(p.Locks)
		if p.Resume != "" {
			r.q.After = p.Resume
		} else if len(p.Locks) == q.Count && r.q.Count > 0 {
			r.q.After = p.Locks[len(p.Locks)-1].Name // the step's share, not the page
		} else {
			break
		}
		if sess.c != nil {
			return &pendingWait{since: time.Now(), resume: func() *pendingWait { return sess.locksPage(r) }}
		}
	}
	// With --fsync always, the owner's round commits whatever this reply
	// may reveal before writing it (owner.commit).
	sess.w.Array(r.n)
	sess.w.B = append(sess.w.B, r.body.B...)
	if *r.buf = r.body.B[:0]; cap(*r.buf) <= 2*locksReplyBytes {
		locksBodies.Put(r.buf)
	}
	return nil
}

// locksBodies keeps the buffers of LOCKS pages being gathered: a page of
// up to 1 MiB grown anew each time made the largest pages a stream of
// garbage, and the collector's pauses the bystander's delays in make
// bench-stall.
var locksBodies = sync.Pool{New: func() any { return new([]byte) }}

// locksRecordRoom is what a lock record takes besides its name and its
// holders' and waiters' records, at most (field names, headers, numbers),
// and room for the reply's array header.
const locksRecordRoom = 256

// fitRecords writes the records of items into w, in order, while w stays
// within room bytes; it returns how many it wrote and how many it left
// out.
func fitRecords[T any](w *resp.Writer, items []T, room int, write func(*resp.Writer, *T)) (written, left int) {
	for i := range items {
		mark := len(w.B)
		write(w, &items[i])
		if len(w.B) > room {
			w.B = w.B[:mark]
			return i, len(items) - i
		}
	}
	return len(items), 0
}

// appendLock adds l's record to r, or reports false if it would take
// the reply past locksReplyBytes and r has a record already.
func (sess *session) appendLock(r *locksReply, l *locktable.LockInfo) bool {
	room := locksReplyBytes - locksRecordRoom - len(l.Name)
	hs, ws := &r.holders, &r.waiters
	hs.Reset()
	ws.Reset()
	hs.Proto, ws.Proto = r.body.Proto, r.body.Proto
	listed, left := fitRecords(hs, l.Holds, room, func(w *resp.Writer, h *locktable.HoldInfo) { sess.writeHolder(r, w, h) })
	moreHolds := l.MoreHolds + left
	room -= len(hs.B)
	waiting, left := fitRecords(ws, l.Waiters, room, func(w *resp.Writer, wi *locktable.WaiterInfo) { sess.writeWaiter(r, w, wi) })
	moreWaiters := l.MoreWaiters + left

	w := &r.body
	mark := len(w.B)
	more := moreHolds > 0 || moreWaiters > 0
	if more {
		w.Map(7)
	} else {
		w.Map(5)
	}
	w.BulkString("name")
	w.BulkString(l.Name)
	w.BulkString("size")
	w.Int(int64(l.Size))
	w.BulkString("holders")
	w.Array(listed)
	w.B = append(w.B, hs.B...)
	w.BulkString("waiters")
	w.Array(waiting)
	w.B = append(w.B, ws.B...)
	w.BulkString("delayed")
	w.Int(int64(l.Delayed))
	if more {
		w.BulkString("more-holders")
		w.Int(int64(moreHolds))
		w.BulkString("more-waiters")
		w.Int(int64(moreWaiters))
	}
	if r.n > 0 && len(w.B) > locksReplyBytes-locksRecordRoom {
		w.B = w.B[:mark]
		return false
	}
	r.n++
	return true
}

func (sess *session) writeHolder(r *locksReply, w *resp.Writer, h *locktable.HoldInfo) {
	w.Map(10)
	w.BulkString("fence")
	w.Int(int64(h.Fence))
	w.BulkString("owner")
	w.BulkOrNull(h.Owner, h.Owner != "")
	w.BulkString("client-id")
	w.Int(h.SessionID)
	w.BulkString("ttl")
	if h.TTL < 0 {
		w.Int(-1)
	} else {
		w.Int((h.TTL + int64(time.Millisecond) - 1) / int64(time.Millisecond))
	}
	w.BulkString("age")
	w.Int(ms(h.Age))
	w.BulkString("detached")
	w.Int(b2i(h.Detached))
	w.BulkString("count")
	w.Int(int64(h.Count))
	sess.writeClient(r, w, h.SessionID)
	w.BulkString("mode")
	w.BulkString(mode(h.Shared))
}

func (sess *session) writeWaiter(r *locksReply, w *resp.Writer, wt *locktable.WaiterInfo) {
	w.Map(8)
	w.BulkString("client-id")
	w.Int(wt.SessionID)
	w.BulkString("owner")
	w.BulkOrNull(wt.Owner, wt.Owner != "")
	w.BulkString("waited")
	w.Int(ms(wt.Waited))
	sess.writeClient(r, w, wt.SessionID)
	w.BulkString("mode")
	w.BulkString(mode(wt.Shared))
	w.BulkString("upgrade")
	w.Int(b2i(wt.Upgrade))
	w.BulkString("multi")
	w.Int(int64(wt.Multi))
}

// writeClient writes the client-name and client-addr fields of the
// connection id.
func (sess *session) writeClient(r *locksReply, w *resp.Writer, id int64) {
	c, ok := r.clients[id]
	if !ok && id >= 0 {
		if r.clients == nil {
			r.clients = make(map[int64]clientRef)
		}
		srv := sess.srv
		srv.mu.Lock()
		s := srv.sessions[uint64(id)]
		srv.mu.Unlock()
		if s != nil {
			s.mu.Lock()
			c = clientRef{name: s.name, addr: s.addr, ok: true}
			s.mu.Unlock()
		}
		r.clients[id] = c
	}
	w.BulkString("client-name")
	w.BulkOrNull(c.name, c.ok && c.name != "")
	w.BulkString("client-addr")
	w.BulkOrNull(c.addr, c.ok)
}

func ms(ns int64) int64 { return ns / int64(time.Millisecond) }

// literalOpenClasses returns pattern with every '[' that opens no class
// (matchClass finds no end to it: globMatch takes it as a literal '[')
// written as "\[", which globMatch takes alike. globMatch then costs
// O(len(pattern)·len(name)), as LOCKS counts it: an open '[' would have
// it look for the class's end, to the pattern's end, at every try.
func literalOpenClasses(pattern string) string {
	var b []byte // nil while nothing changed
	for i := 0; i < len(pattern); {
		n := 1
		switch pattern[i] {
		case '\\':
			n = min(2, len(pattern)-i)
		case '[':
			if n, _ = matchClass(pattern[i:], 0); n == 0 {
				if b == nil {
					b = append(make([]byte, 0, len(pattern)+16), pattern[:i]...)
				}
				b = append(b, '\\', '[')
				i++
				continue
			}
		}
		if b != nil {
			b = append(b, pattern[i:i+n]...)
		}
		i += n
	}
	if b == nil {
		return pattern
	}
	return string(b)
}

func mode(shared bool) string {
	if shared {
		return "shared"
	}
	return "exclusive"
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// clientRef is what LOCKS shows of a holder's or waiter's connection
// (ok: the connection is live).
type clientRef struct {
	name, addr string
	ok         bool
}
