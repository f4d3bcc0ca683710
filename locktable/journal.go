package locktable

import "sort"

// HoldRecord is the durable state of one hold: what persist stores and
// Restore reads back. Times are on the caller's clock (relock uses unix
// nanoseconds), so they stay meaningful across restarts.
type HoldRecord struct {
	Name     string
	Size     uint32
	Key      Key
	Owner    string
	Count    uint32
	TTL      int64 // TTL duration in ns; 0: none
	Deadline int64 // 0: none
	Granted  int64
	Detached bool
	// Bound: the hold belongs to a connection (or is an orphan waiting to
	// be adopted), as opposed to detached.
	Bound bool
}

// Change is one journaled change: a hold created or modified (Put), or
// released (Delete; only Record.Key.Fence and Record.Name are set).
type Change struct {
	Delete bool
	Record HoldRecord
}

// journal appends are made in the same critical section as the change, so
// each shard's journal is in the order its changes happened. Caller holds
// sh.mu.
func (sh *shard) journalPut(h *Hold) {
	if !sh.journaling {
		return
	}
	sh.journal = append(sh.journal, Change{Record: h.record()})
}

func (sh *shard) journalDelete(name string, fence uint64) {
	if !sh.journaling {
		return
	}
	sh.journal = append(sh.journal, Change{Delete: true, Record: HoldRecord{Name: name, Key: Key{Fence: fence}}})
}

func (h *Hold) record() HoldRecord {
	return HoldRecord{
		Name: h.lock.name, Size: h.lock.size, Key: h.key, Owner: h.owner, Count: h.count,
		TTL: h.ttl, Deadline: h.deadline, Granted: h.granted, Detached: h.detached, Bound: !h.detached,
	}
}

// SetJournaling turns the change journal on or off. Off discards what is
// pending. A store turns it on before the first client and off when it
// takes its final state (so that releases at shutdown are not recorded).
func (t *Table) SetJournaling(on bool) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.journaling = on
		if !on {
			sh.journal = nil
		}
		sh.mu.Unlock()
	}
}

// DrainJournal appends every pending change to dst, shard by shard (each
// shard in order; shards are independent since a hold lives in one), and
// empties the journal.
func (t *Table) DrainJournal(dst []Change) []Change {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		dst = append(dst, sh.journal...)
		clear(sh.journal)
		sh.journal = sh.journal[:0]
		sh.mu.Unlock()
	}
	return dst
}

// Snapshot returns every live hold's record, sorted by name, each lock's
// holds in grant order. Each shard is read consistently.
func (t *Table) Snapshot() []HoldRecord {
	var out []HoldRecord
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for _, l := range sh.locks {
			for _, h := range l.holds {
				out = append(out, h.record())
			}
		}
		sh.mu.Unlock()
	}
	// Stable: a lock's holds were appended together, in grant order.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Restore loads holds saved by an earlier run into an empty table, as after
// a restart: detached holds keep their deadlines; bound holds come back as
// orphans (no session) whose deadline is now+grace or their own deadline if
// sooner, adopted by the first Renew with their key, which also restores
// their own TTL duration. Holds whose deadline has passed are dropped. The
// fence counter moves above every restored fence. It returns how many holds
// were restored and dropped; a record that contradicts an earlier one (size
// mismatch, more holds than size) is dropped too.
func (t *Table) Restore(recs []HoldRecord, now, grace int64) (restored, dropped int) {
	for _, r := range recs {
		t.AdvanceFence(r.Key.Fence)
		deadline := r.Deadline
		if r.Bound {
			if g := now + grace; deadline == 0 || g < deadline {
				deadline = g
			}
		}
		if r.Name == "" || r.Size == 0 || r.Count == 0 || (deadline != 0 && deadline <= now) || (r.Detached && deadline == 0) {
			dropped++
			continue
		}
		sh := t.shardOf(r.Name)
		sh.mu.Lock()
		l := sh.locks[r.Name]
		if l == nil {
			l = &lock{name: r.Name, shard: sh, size: r.Size}
			sh.locks[r.Name] = l
		}
		if l.size != r.Size || len(l.holds) >= int(l.size) {
			sh.mu.Unlock()
			dropped++
			continue
		}
		h := &Hold{
			sh: sh, lock: l, key: r.Key, owner: r.Owner, count: r.Count, detached: r.Detached,
			orphan: r.Bound, granted: r.Granted, ttl: r.TTL, deadline: deadline, heapIdx: -1,
		}
		l.holds = append(l.holds, h)
		sh.holds++
		if deadline != 0 {
			sh.expiry.set(h)
		}
		sh.mu.Unlock()
		restored++
	}
	return restored, dropped
}
