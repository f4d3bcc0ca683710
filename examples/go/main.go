// Command example shows relock from Go: first with clientlib, the repo's
// client on go-redis, then with go-redis alone.
//
//	RELOCK_ADDR=127.0.0.1:6380 go run ./examples/go
//
// clientlib gives each lock a dedicated connection (relock binds a hold to
// the connection that took it), renews TTL holds at a third of the TTL,
// reports a loss through Lock.Lost and Lock.Context, and never lets a read
// timeout or a retry cut a wait short.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/relock/relock/clientlib"
)

func main() {
	addr := os.Getenv("RELOCK_ADDR")
	if addr == "" {
		addr = clientlib.DefaultAddr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := withClientlib(ctx, addr); err != nil {
		log.Fatal(err)
	}
	if err := withGoRedis(ctx, addr); err != nil {
		log.Fatal(err)
	}
}

// withClientlib takes a lock, works longer than its TTL while clientlib
// renews it, shows a second worker being turned away, and a loss.
func withClientlib(ctx context.Context, addr string) error {
	c, err := clientlib.New(clientlib.Options{Addr: addr, ClientName: "example"})
	if err != nil {
		return err
	}
	defer c.Close()

	l, err := c.Lock(ctx, "reports:daily", clientlib.TTL(time.Second))
	if err != nil {
		return err
	}
	fmt.Printf("acquired %s fence=%d\n", l.Name(), l.Fence())

	// Another worker does not wait: TryLock fails with ErrWaitTimeout.
	if _, err := c.TryLock(ctx, "reports:daily"); errors.Is(err, clientlib.ErrWaitTimeout) {
		fmt.Println("second worker: busy")
	} else if err != nil {
		return err
	}

	// The work: two TTLs, under l.Context(), which ends if the lock is
	// lost. Pass l.Fence() to the storage written, to refuse stale writers.
	select {
	case <-time.After(2 * time.Second):
	case <-l.Context().Done():
		return fmt.Errorf("lost during the work: %w", l.Err())
	}
	left, err := l.Check(ctx)
	fmt.Printf("still held after 2s with a 1s TTL: %v\n", err == nil && left > 0)
	if err := l.Unlock(ctx); err != nil {
		return err
	}
	fmt.Println("released")

	// A loss is reported, not hidden: an operator force-unlocks.
	l, err = c.Lock(ctx, "reports:daily", clientlib.TTL(600*time.Millisecond))
	if err != nil {
		return err
	}
	if _, err := c.ForceUnlock(ctx, "reports:daily"); err != nil {
		return err
	}
	select {
	case <-l.Lost():
		fmt.Printf("lost: %v (NOTHELD: %v)\n", errors.Is(l.Err(), clientlib.ErrLost), errors.Is(l.Err(), clientlib.ErrNotHeld))
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// withGoRedis uses go-redis alone. Two things matter:
//   - A hold belongs to the connection that took it, and a go-redis Client
//     is a pool: take the lock on a dedicated rdb.Conn() and keep it until
//     UNLOCK. (Conn.Close gives the connection back to the pool without
//     closing it, so UNLOCK first; closing the Client closes the sockets
//     and releases every hold on them.)
//   - ReadTimeout (5 s by default in go-redis v9) would cut a longer LOCK
//     short, and go-redis retries a timed-out command on a new connection,
//     queueing again. Set ReadTimeout -1 with ContextTimeoutEnabled, bound
//     the wait with WAIT (or the ctx), and turn retries off for LOCK.
func withGoRedis(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ReadTimeout:           -1,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	defer rdb.Close()
	cn := rdb.Conn()
	defer cn.Close()

	key, err := cn.Do(ctx, "LOCK", "deploy", "TTL", 30000, "WAIT", 10000).Text()
	if errors.Is(err, redis.Nil) { // nil reply: WAIT ran out
		fmt.Println("deploy: not granted")
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Printf("go-redis: acquired deploy fence=%s\n", strings.SplitN(key, "-", 2)[0])

	// TRYLOCK of a held lock: nil, which go-redis returns as redis.Nil.
	if err := rdb.Do(ctx, "TRYLOCK", "deploy").Err(); errors.Is(err, redis.Nil) {
		fmt.Println("go-redis: TRYLOCK while held: nil")
	}
	ms, err := cn.Do(ctx, "RENEW", "deploy", key).Int64()
	if err != nil {
		return err
	}
	fmt.Printf("go-redis: renewed for %dms\n", ms)
	if err := cn.Do(ctx, "UNLOCK", "deploy", key).Err(); err != nil {
		return err
	}
	// An error reply is a redis.Error whose text starts with its code.
	err = cn.Do(ctx, "UNLOCK", "deploy", key).Err()
	var rerr redis.Error
	if errors.As(err, &rerr) {
		code, _, _ := strings.Cut(rerr.Error(), " ")
		fmt.Printf("go-redis: UNLOCK again: %s\n", code)
	}
	return nil
}
