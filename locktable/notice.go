package locktable

// NoticeKind is what a Notice reports.
type NoticeKind uint8

const (
	// NoticeAcquired: a new hold was granted (not a re-entry).
	NoticeAcquired NoticeKind = iota + 1
	// NoticeReleased: a hold ended (Fence, Reason).
	NoticeReleased
	// NoticeContended: a request started waiting on the lock (Waiters:
	// the queue's length with it).
	NoticeContended
	// NoticeFree: the lock has no holds, no waiters and no slot in
	// lock-delay left; it no longer exists.
	NoticeFree
)

func (k NoticeKind) String() string {
	switch k {
	case NoticeAcquired:
		return "acquired"
	case NoticeReleased:
		return "released"
	case NoticeContended:
		return "contended"
	case NoticeFree:
		return "free"
	}
	return "unknown"
}

// Notice is one change of a lock as its watchers see it (lock events).
// Notices of one lock are made in the critical section of the change they
// report, so a Config.Notify sees them in the order the lock changed.
type Notice struct {
	Kind    NoticeKind
	Name    string
	Fence   uint64 // Acquired, Released
	Reason  Reason // Released
	Waiters int    // Contended
	// Seq is the table's JournalSeq once the change is journaled: a
	// durable store that has committed Seq has committed the change.
	Seq uint64
}

// notify reports n to the table's Config.Notify, if any, when the name
// is watched (Config.Watched). Caller holds sh.mu (the notices of a lock
// are in the order of its changes).
func (sh *shard) notify(kind NoticeKind, name string, fence uint64, why Reason, waiters int) {
	cfg := sh.cfg
	if cfg.Notify == nil || (cfg.Watched != nil && !cfg.Watched()) {
		return
	}
	cfg.Notify(Notice{Kind: kind, Name: name, Fence: fence, Reason: why, Waiters: waiters, Seq: sh.journaled.Load()})
}
