package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Helpers that observe the server's state through go-redis (LOCKS, INFO)
// and run blocking LOCKs in the background.

// lockView is one entry of LOCKS.
type lockView struct {
	Name    string
	Size    int64
	Delayed int64 // slots in lock-delay
	Holders []holderView
	Waiters []waiterView
}

type holderView struct {
	Fence, ClientID, TTL, Age, Count int64
	Owner                            string // "" for nil
	Detached                         bool
}

type waiterView struct {
	ClientID, Waited int64
	Owner            string
}

// readLocks runs LOCKS with args and decodes the reply, in RESP2 (flat
// field/value arrays) or RESP3 (maps). It is safe in any goroutine.
func readLocks(ctx context.Context, c *redis.Client, args ...any) ([]lockView, error) {
	items, err := c.Do(ctx, append([]any{"LOCKS"}, args...)...).Slice()
	if err != nil {
		return nil, err
	}
	out := make([]lockView, 0, len(items))
	for _, it := range items {
		f, err := fieldsOf(it)
		if err != nil {
			return nil, err
		}
		l := lockView{Name: str(f["name"]), Size: num(f["size"]), Delayed: num(f["delayed"])}
		hs, _ := f["holders"].([]any)
		for _, h := range hs {
			hf, err := fieldsOf(h)
			if err != nil {
				return nil, err
			}
			l.Holders = append(l.Holders, holderView{
				Fence: num(hf["fence"]), ClientID: num(hf["client-id"]), TTL: num(hf["ttl"]),
				Age: num(hf["age"]), Count: num(hf["count"]), Owner: str(hf["owner"]),
				Detached: num(hf["detached"]) == 1,
			})
		}
		ws, _ := f["waiters"].([]any)
		for _, w := range ws {
			wf, err := fieldsOf(w)
			if err != nil {
				return nil, err
			}
			l.Waiters = append(l.Waiters, waiterView{ClientID: num(wf["client-id"]), Waited: num(wf["waited"]), Owner: str(wf["owner"])})
		}
		out = append(out, l)
	}
	return out, nil
}

// fieldsOf turns a RESP3 map or a RESP2 flat field/value array into a map.
func fieldsOf(v any) (map[string]any, error) {
	out := map[string]any{}
	switch v := v.(type) {
	case map[any]any:
		for k, x := range v {
			out[fmt.Sprint(k)] = x
		}
	case []any:
		if len(v)%2 != 0 {
			return nil, fmt.Errorf("odd field/value array of %d", len(v))
		}
		for i := 0; i < len(v); i += 2 {
			out[fmt.Sprint(v[i])] = v[i+1]
		}
	default:
		return nil, fmt.Errorf("not a map or array: %T", v)
	}
	return out, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) int64 {
	n, _ := v.(int64)
	return n
}

// lockOf returns the LOCKS entry of name (which must contain no glob
// characters), or ok false when the lock does not exist.
func lockOf(t testing.TB, c *redis.Client, name string) (l lockView, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ls, err := readLocks(ctx, c, "MATCH", name)
	if err != nil {
		t.Fatalf("LOCKS MATCH %s: %v", name, err)
	}
	for _, l := range ls {
		if l.Name == name {
			return l, true
		}
	}
	return lockView{}, false
}

// waiterIDs returns the client ids of name's waiters in queue order.
func waiterIDs(t testing.TB, c *redis.Client, name string) []int64 {
	t.Helper()
	l, _ := lockOf(t, c, name)
	ids := []int64{}
	for _, w := range l.Waiters {
		ids = append(ids, w.ClientID)
	}
	return ids
}

// waitForWaiters waits until name has exactly n waiters.
func waitForWaiters(t testing.TB, c *redis.Client, name string, n int) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool { return len(waiterIDs(t, c, name)) == n },
		"lock %q never had %d waiters (has %v)", name, n, waiterIDs(t, c, name))
}

// infoField returns one field of INFO (e.g. "releases_expired").
func infoField(t testing.TB, c *redis.Client, field string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "all").Result()
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	t.Fatalf("INFO has no field %q:\n%s", field, info)
	return ""
}

func dbsize(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.DBSize(ctx).Result()
	if err != nil {
		t.Fatalf("DBSIZE: %v", err)
	}
	return n
}

func clientID(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := c.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID: %v", err)
	}
	return id
}

// fenceOf returns the fence of a key ("<fence>-<hex>").
func fenceOf(t testing.TB, key string) int64 {
	t.Helper()
	prefix, _, ok := strings.Cut(key, "-")
	f, err := strconv.ParseInt(prefix, 10, 64)
	if !ok || err != nil {
		t.Fatalf("malformed key %q", key)
	}
	return f
}

// mustLock runs a LOCK (or TRYLOCK, …) that must be granted at once or
// after a short wait, and returns the key.
func mustLock(t testing.TB, c *redis.Client, cmd string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := c.Do(ctx, append([]any{cmd}, args...)...).Text()
	if err != nil {
		t.Fatalf("%s %v: %v", cmd, args, err)
	}
	return key
}

func mustUnlock(t testing.TB, c *redis.Client, name, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.Do(ctx, "UNLOCK", name, key).Int()
	if err != nil || n != 1 {
		t.Fatalf("UNLOCK %s %s = %v, %v; want 1", name, key, n, err)
	}
}

// grant is the outcome of a LOCK run in the background.
type grant struct {
	key string
	err error
	at  time.Time // when the reply arrived
}

// lockAsync runs LOCK args on c in a goroutine. The goroutine ends when the
// reply arrives or ctx ends (the client is closed when the test ends).
func lockAsync(ctx context.Context, c *redis.Client, args ...any) <-chan grant {
	ch := make(chan grant, 1)
	go func() {
		key, err := c.Do(ctx, append([]any{"LOCK"}, args...)...).Text()
		ch <- grant{key: key, err: err, at: time.Now()}
	}()
	return ch
}

// awaitGrant waits for a background LOCK's reply and fails the test unless
// it is a key within the time given.
func awaitGrant(t testing.TB, ch <-chan grant, within time.Duration) grant {
	t.Helper()
	select {
	case g := <-ch:
		if g.err != nil {
			t.Fatalf("LOCK: %v", g.err)
		}
		return g
	case <-time.After(within):
		t.Fatalf("LOCK not granted within %v", within)
		return grant{}
	}
}

// notReady fails the test if the background LOCK has already replied.
func notReady(t testing.TB, ch <-chan grant, what string) {
	t.Helper()
	select {
	case g := <-ch:
		t.Fatalf("%s replied too early: %q, %v", what, g.key, g.err)
	default:
	}
}
