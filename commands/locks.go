package commands

import (
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
		pattern := string(opts.Match)
		if pattern != "*" {
			q.Match = func(name string) bool { return globMatch(pattern, name) }
			// Seek to the pattern's literal prefix and stop past it.
			q.Prefix = globPrefix(pattern)
		}
	}
	// A user sees only the locks it may touch.
	if u, _ := sess.currentUser(); u != nil && !u.Admin {
		match := q.Match
		q.Match = func(name string) bool { return u.mayLock(name) && (match == nil || match(name)) }
	}
	q.Budget = locksBudget
	// A cluster member reads its table only once it has confirmed that it
	// still leads (LOCKS blocks there, off the owner, as every lock
	// command does); the later steps of a long page read on without
	// asking again.
	if srv := sess.srv; srv.eng.confirmLeader() != nil {
		sess.fail(srv.eng.moved())
		return nil
	}
	return sess.locksPage(q, nil)
}

// locksBudget is how many names one step of a LOCKS page may examine
// (about a millisecond): a page whose names mostly do not match (a glob
// without a literal prefix, a user's permissions) is served in steps.
const locksBudget = 4096

// locksPage goes on with a LOCKS page, got being the locks found so far.
// Between steps the connection's owner serves its other connections (the
// connection waits, as for a grant).
func (sess *session) locksPage(q locktable.Query, got []locktable.LockInfo) *pendingWait {
	srv := sess.srv
	for {
		p := srv.eng.table().LocksPage(q, srv.now())
		got = append(got, p.Locks...)
		if p.Resume == "" {
			break
		}
		q.After, q.Count = p.Resume, q.Count-len(p.Locks)
		if sess.c != nil {
			return &pendingWait{since: time.Now(), resume: func() *pendingWait { return sess.locksPage(q, got) }}
		}
	}
	// With --fsync always, the owner's round commits whatever this reply
	// may reveal before writing it (owner.commit).
	sess.writeLocks(got)
	return nil
}

func (sess *session) writeLocks(locks []locktable.LockInfo) {
	w := &sess.w
	clients := sess.srv.clientNames()
	client := func(id int64) {
		c, ok := clients[id]
		w.BulkString("client-name")
		w.BulkOrNull(c.name, ok && c.name != "")
		w.BulkString("client-addr")
		w.BulkOrNull(c.addr, ok)
	}
	ms := func(ns int64) int64 { return ns / int64(time.Millisecond) }
	w.Array(len(locks))
	for _, l := range locks {
		w.Map(5)
		w.BulkString("name")
		w.BulkString(l.Name)
		w.BulkString("size")
		w.Int(int64(l.Size))
		w.BulkString("holders")
		w.Array(len(l.Holds))
		for _, h := range l.Holds {
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
			client(h.SessionID)
			w.BulkString("mode")
			w.BulkString(mode(h.Shared))
		}
		w.BulkString("waiters")
		w.Array(len(l.Waiters))
		for _, wt := range l.Waiters {
			w.Map(8)
			w.BulkString("client-id")
			w.Int(wt.SessionID)
			w.BulkString("owner")
			w.BulkOrNull(wt.Owner, wt.Owner != "")
			w.BulkString("waited")
			w.Int(ms(wt.Waited))
			client(wt.SessionID)
			w.BulkString("mode")
			w.BulkString(mode(wt.Shared))
			w.BulkString("upgrade")
			w.Int(b2i(wt.Upgrade))
			w.BulkString("multi")
			w.Int(int64(wt.Multi))
		}
		w.BulkString("delayed")
		w.Int(int64(l.Delayed))
	}
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

// clientRef is what LOCKS shows of a holder's or waiter's connection.
type clientRef struct{ name, addr string }

// clientNames maps live session ids to their name and address.
func (s *Server) clientNames() map[int64]clientRef {
	sessions := s.sessionsSorted()
	out := make(map[int64]clientRef, len(sessions))
	for _, c := range sessions {
		c.mu.Lock()
		out[int64(c.id)] = clientRef{name: c.name, addr: c.addr}
		c.mu.Unlock()
	}
	return out
}
