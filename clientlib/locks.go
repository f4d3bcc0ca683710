package clientlib

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// LockInfo describes one lock as LOCKS reports it. Keys are never shown.
type LockInfo struct {
	Name string
	Size int
	// Delayed is the number of the lock's slots in lock-delay: taken for a
	// while after a hold ended involuntarily (see LockDelay).
	Delayed int
	Holders []HolderInfo // in grant order
	Waiters []WaiterInfo // in queue order
	// MoreHolders and MoreWaiters count the holders and waiters not
	// listed: a lock whose record would pass the server's 1 MiB reply
	// bound lists those that fit, holders first (0: all are listed).
	MoreHolders, MoreWaiters int
}

// HolderInfo is one hold of a lock.
type HolderInfo struct {
	Fence    uint64
	Owner    string        // "" when none
	ClientID int64         // -1 when detached or orphaned
	TTL      time.Duration // time left; -1: no TTL
	Age      time.Duration // since the grant
	Detached bool
	Count    int // re-entry count
	// ClientName and ClientAddr describe the holding connection ("" when
	// detached, orphaned, or unnamed).
	ClientName string
	ClientAddr string
	// Mode is "shared" or "exclusive".
	Mode string
}

// WaiterInfo is one waiter of a lock.
type WaiterInfo struct {
	ClientID   int64
	Owner      string
	Waited     time.Duration
	ClientName string
	ClientAddr string
	// Mode is "shared" or "exclusive" (an upgrade waits for exclusive).
	Mode string
	// Upgrade: a waiting UPGRADE (listed first).
	Upgrade bool
	// Multi is, for a leg of a waiting MLOCK (LockMany), how many names
	// it waits on at once; 0 for a single request.
	Multi int
}

// LocksQuery selects locks for Locks.
type LocksQuery struct {
	// Match is a glob pattern on names (Redis style: *, ?, [a-z], \x);
	// empty means all.
	Match string
	// Count is the most locks to return (1 to 100,000); 0 means the
	// server's default, 1000.
	Count int
	// After returns only names greater than it: pass the last name of a
	// page to get the next page.
	After string
}

// Locks returns one page of locks, sorted by name. A page may hold fewer
// than Count locks with more to come (the server ends a page before 1 MiB
// of reply): page on with After set to the last name until a page is
// empty.
func (c *Client) Locks(ctx context.Context, q LocksQuery) ([]LockInfo, error) {
	args := []any{"LOCKS"}
	if q.Match != "" {
		args = append(args, "MATCH", q.Match)
	}
	if q.Count > 0 {
		args = append(args, "COUNT", q.Count)
	}
	if q.After != "" {
		args = append(args, "AFTER", q.After)
	}
	v, err := c.poolDo(ctx, c.retryUntil(), true, args...)
	if err != nil {
		return nil, serverError("LOCKS", "", err)
	}
	res, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("LOCKS: unexpected reply %T", v)
	}
	out := make([]LockInfo, 0, len(res))
	for _, r := range res {
		li, err := parseLockInfo(r)
		if err != nil {
			return nil, fmt.Errorf("LOCKS: %w", err)
		}
		out = append(out, li)
	}
	return out, nil
}

// Inspect returns the lock name, or nil if it does not exist (no holders,
// no waiters).
func (c *Client) Inspect(ctx context.Context, name string) (*LockInfo, error) {
	locks, err := c.Locks(ctx, LocksQuery{Match: globEscape(name), Count: 1})
	if err != nil || len(locks) == 0 {
		return nil, err
	}
	if locks[0].Name != name {
		return nil, nil
	}
	return &locks[0], nil
}

// globEscape quotes every glob metacharacter of s, so that it matches only s.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fields reads a flat field/value array (a RESP3 map arrives the same way
// under RESP2) into a map.
func fields(v any) (map[string]any, error) {
	switch t := v.(type) {
	case []any:
		if len(t)%2 != 0 {
			return nil, fmt.Errorf("odd field/value array of %d", len(t))
		}
		m := make(map[string]any, len(t)/2)
		for i := 0; i < len(t); i += 2 {
			k, ok := t[i].(string)
			if !ok {
				return nil, fmt.Errorf("field name %v is not a string", t[i])
			}
			m[k] = t[i+1]
		}
		return m, nil
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("field name %v is not a string", k)
			}
			m[ks] = v
		}
		return m, nil
	}
	return nil, fmt.Errorf("unexpected %T, want a field/value array", v)
}

func parseLockInfo(v any) (LockInfo, error) {
	m, err := fields(v)
	if err != nil {
		return LockInfo{}, err
	}
	li := LockInfo{Name: str(m["name"]), Size: int(num(m["size"])), Delayed: int(num(m["delayed"])),
		MoreHolders: int(num(m["more-holders"])), MoreWaiters: int(num(m["more-waiters"]))}
	hs, _ := m["holders"].([]any)
	for _, hv := range hs {
		hm, err := fields(hv)
		if err != nil {
			return LockInfo{}, err
		}
		li.Holders = append(li.Holders, HolderInfo{
			Fence:      uint64(num(hm["fence"])),
			Owner:      str(hm["owner"]),
			ClientID:   num(hm["client-id"]),
			TTL:        msOrNone(num(hm["ttl"])),
			Age:        time.Duration(num(hm["age"])) * time.Millisecond,
			Detached:   num(hm["detached"]) != 0,
			Count:      int(num(hm["count"])),
			ClientName: str(hm["client-name"]),
			ClientAddr: str(hm["client-addr"]),
			Mode:       str(hm["mode"]),
		})
	}
	ws, _ := m["waiters"].([]any)
	for _, wv := range ws {
		wm, err := fields(wv)
		if err != nil {
			return LockInfo{}, err
		}
		li.Waiters = append(li.Waiters, WaiterInfo{
			ClientID:   num(wm["client-id"]),
			Owner:      str(wm["owner"]),
			Waited:     time.Duration(num(wm["waited"])) * time.Millisecond,
			ClientName: str(wm["client-name"]),
			ClientAddr: str(wm["client-addr"]),
			Mode:       str(wm["mode"]),
			Upgrade:    num(wm["upgrade"]) != 0,
			Multi:      int(num(wm["multi"])),
		})
	}
	return li, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) int64 {
	n, _ := v.(int64)
	return n
}

func msOrNone(ms int64) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}
