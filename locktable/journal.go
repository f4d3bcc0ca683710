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
	// LockDelay is the hold's lock-delay in ns (0: none; see
	// Request.LockDelay).
	LockDelay int64
	// Delayed: the record is not a hold but a slot in lock-delay, left by
	// a hold with a LockDelay that ended involuntarily, which takes
	// capacity until Deadline. It is neither Bound nor Detached, has no
	// Owner and no TTL, and its Key (kept for its fence, which names the
	// record) holds nothing.
	Delayed bool
	// Shared: a shared hold (Request.Shared), or a slot in lock-delay that
	// a shared hold left; only on a lock of Size 1.
	Shared bool
}

// Change is one journaled change: a hold created or modified, or turned
// into a slot in lock-delay (Put), or a hold or slot gone (Delete; only
// Record.Key.Fence and Record.Name are set). Records are named by fence.
type Change struct {
	Delete bool
	Record HoldRecord
}

// journal appends are made in the same critical section as the change, so
// each shard's journal is in the order its changes happened. Caller holds
// sh.mu.
// name is hold id's lock name, or "" to read it from the arena.
func (sh *shard) journalPut(id uint32, name string) {
	if !sh.journaling {
		return
	}
	sh.journal = append(sh.journal, Change{Record: sh.record(id, name)})
	sh.journaled.Add(1)
}

func (sh *shard) journalDelete(name string, fence uint64) {
	if !sh.journaling {
		return
	}
	sh.journal = append(sh.journal, Change{Delete: true, Record: HoldRecord{Name: name, Key: Key{Fence: fence}}})
	sh.journaled.Add(1)
}

// JournalSeq returns how many changes have been journaled since the table
// was made. A change is counted in the critical section that journals it,
// so a DrainJournal that starts after JournalSeq returned n drains every
// change up to n: a store that read n before draining and then committed
// what it drained has made the first n changes durable, and a reply that
// depends on the table's state as of now is safe to send once that is so.
func (t *Table) JournalSeq() uint64 { return t.journaled.Load() }

// record returns hold id's record; name is its lock's name, or "" to read
// it from the arena.
func (sh *shard) record(id uint32, name string) HoldRecord {
	h := sh.hold(id)
	if name == "" {
		name = sh.name(h.lock)
	}
	return HoldRecord{
		Name: name, Size: sh.lock(h.lock).size, Key: h.key, Owner: sh.owner(id), Count: h.count,
		TTL: h.ttl, Deadline: sh.deadline(id), Granted: h.granted, Detached: h.is(detached),
		Bound: !h.is(detached) && !h.is(delayed), LockDelay: sh.delayOf(id), Delayed: h.is(delayed),
		Shared: h.is(shared),
	}
}

// owner returns hold id's owner ("": none).
func (sh *shard) owner(id uint32) string {
	if sh.hold(id).is(owned) {
		return sh.owners[id]
	}
	return ""
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

// Snapshot returns every live hold's record and every slot in lock-delay's
// (Delayed), sorted by name, each lock's in grant order. Each shard is
// read consistently.
func (t *Table) Snapshot() []HoldRecord {
	var out []HoldRecord
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.index.each(func(lid uint32) {
			name := sh.name(lid)
			for id := sh.lock(lid).first; id != 0; id = sh.hold(id).next {
				out = append(out, sh.record(id, name))
			}
		})
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
// their own TTL duration. Every hold keeps its lock-delay, and slots in
// lock-delay (Delayed) come back with their own deadline, grace or not: a
// restart does not cut a delay short. A hold with a lock-delay whose TTL
// ran out while the server was down ended involuntarily then: it comes
// back as its slot in lock-delay, until that deadline plus its delay.
// Other holds and slots whose deadline has passed are dropped. Holds keep their mode (shared or exclusive). The
// fence counter moves above every restored fence. It returns how many
// records were restored and dropped; a record that contradicts an earlier
// one (size mismatch, more holds than size, an exclusive hold beside
// another, a shared one on a semaphore) is dropped too.
func (t *Table) Restore(recs []HoldRecord, now, grace int64) (restored, dropped int) {
	for _, r := range recs {
		t.AdvanceFence(r.Key.Fence)
		if r.Delayed {
			r.Bound, r.Detached, r.Owner, r.TTL = false, false, "", 0
		}
		deadline := r.Deadline
		if r.Bound {
			if g := now + grace; deadline == 0 || g < deadline {
				deadline = g
			}
		}
		if !r.Delayed && r.LockDelay > 0 && deadline != 0 && deadline <= now {
			// Its TTL ran out while the server was down: it ended
			// involuntarily then, and its lock-delay runs from then.
			r.Delayed, r.Bound, r.Detached, r.Owner, r.TTL = true, false, false, "", 0
			deadline += r.LockDelay
		}
		if r.Name == "" || r.Size == 0 || r.Count == 0 || (deadline != 0 && deadline <= now) ||
			((r.Detached || r.Delayed) && deadline == 0) || r.LockDelay < 0 || r.LockDelay > MaxLockDelay ||
			(r.Shared && r.Size != 1) {
			dropped++
			continue
		}
		if t.restore(r, deadline) {
			restored++
		} else {
			dropped++
		}
	}
	return restored, dropped
}

// restore adds the hold of r with the given deadline (0: none), unless it
// contradicts the holds restored before it.
func (t *Table) restore(r HoldRecord, deadline int64) bool {
	sh, hash := t.shardOf(r.Name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lid := sh.find(r.Name, hash)
	bucket := t.bucketOf(hash)
	if t.bucketFull(sh, bucket) {
		return false
	}
	if lid == 0 {
		lid = sh.newLock(r.Name, hash, r.Size)
	}
	if sh.lock(lid).size != r.Size || !sh.fits(lid, r.Shared) {
		return false
	}
	sh.loadHold(lid, bucket, HoldState{HoldRecord: r, Orphan: r.Bound && !r.Delayed}, deadline)
	return true
}

// loadHold adds a hold (or slot in lock-delay) as saved, with the given
// deadline (0: none), to lock lid of bucket b, after its other holds; it
// is bound to no session. A slot has no owner, TTL, detached or orphan
// mark, whatever hs says. Caller holds sh.mu and checked that the bucket
// has room.
func (sh *shard) loadHold(lid uint32, b uint16, hs HoldState, deadline int64) uint32 {
	id := sh.allocHold(b)
	h := sh.hold(id)
	h.key, h.count, h.granted, h.ttl, h.lock = hs.Key, hs.Count, hs.Granted, hs.TTL, lid
	h.set(shared, hs.Shared)
	if hs.Delayed {
		h.ttl = 0
		h.set(delayed, true)
	} else {
		h.set(detached, hs.Detached)
		h.set(orphan, hs.Orphan)
		if hs.Owner != "" {
			h.set(owned, true)
			sh.owners[id] = hs.Owner
		}
	}
	if hs.LockDelay > 0 {
		h.set(lockDelay, true)
		sh.delays[id] = hs.LockDelay
	}
	sh.appendHold(lid, id)
	if deadline != 0 {
		sh.setDeadline(id, deadline)
	}
	return id
}
