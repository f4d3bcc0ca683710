package clientlib_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/relock/relock/clientlib"
)

// A lock with a TTL, renewed automatically while the work runs.
func Example() {
	addr, stop := exampleServer() // an in-process relock server on 127.0.0.1:0
	defer stop()
	ctx := context.Background()

	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	l, err := c.Lock(ctx, "reports:daily", clientlib.TTL(15*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("locked", l.Name(), "with a fence:", l.Fence() > 0)
	// Do the work under l.Context(), which ends if the lock is lost, and
	// hand l.Fence() to the storage it writes to.
	if err := l.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("unlocked")
	// Output:
	// locked reports:daily with a fence: true
	// unlocked
}

// Task locking: skip work that another worker is already doing.
func ExampleClient_TryLock() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	busy, err := c.Lock(ctx, "task:42") // another worker has it
	if err != nil {
		log.Fatal(err)
	}
	defer busy.Unlock(ctx)

	for _, task := range []string{"task:41", "task:42"} {
		l, err := c.TryLock(ctx, task, clientlib.TTL(time.Minute))
		if errors.Is(err, clientlib.ErrWaitTimeout) {
			fmt.Println(task, "already in progress")
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(task, "done")
		l.Unlock(ctx)
	}
	// Output:
	// task:41 done
	// task:42 already in progress
}

// Wait bounds the wait; the error says the lock was not granted.
func ExampleWait() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	held, err := c.Lock(ctx, "deploy")
	if err != nil {
		log.Fatal(err)
	}
	defer held.Unlock(ctx)
	_, err = c.Lock(ctx, "deploy", clientlib.Wait(50*time.Millisecond))
	fmt.Println(errors.Is(err, clientlib.ErrWaitTimeout))
	// Output:
	// true
}

// A loss is reported, never hidden: here an operator force-unlocks. The
// Lock learns of it from the server's "released <fence> forced" event at
// once, although its TTL of an hour would not renew for 20 minutes.
func ExampleLock_Lost() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	l, err := c.Lock(ctx, "migration", clientlib.TTL(time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.ForceUnlock(ctx, "migration"); err != nil {
		log.Fatal(err)
	}
	<-l.Lost() // within milliseconds
	fmt.Println(errors.Is(l.Err(), clientlib.ErrLost), errors.Is(l.Err(), clientlib.ErrNotHeld))
	var lost *clientlib.LostError
	if errors.As(l.Err(), &lost) {
		fmt.Println("reason:", lost.Reason)
	}
	fmt.Println(l.Context().Err())
	// Output:
	// true true
	// reason: forced
	// context canceled
}

// At most two concurrent calls to a fragile service, across processes.
func ExampleSemaphore() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sem := c.Semaphore("search-cluster", 2)
	a, _ := sem.Acquire(ctx)
	b, _ := sem.Acquire(ctx)
	_, err = sem.TryAcquire(ctx)
	fmt.Println("third slot:", err)
	a.Unlock(ctx)
	b.Unlock(ctx)
	// Output:
	// third slot: lock not granted within the wait
}

// The primary/secondary failover pattern: each instance campaigns; the
// leader works until it resigns or loses leadership, then the next one
// takes over.
func ExampleElection() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	newClient := func() *clientlib.Client {
		c, err := clientlib.New(clientlib.Options{Addr: addr})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	ca, cb := newClient(), newClient()
	defer ca.Close()
	defer cb.Close()

	nodeA := ca.Election("app-primary", "node-a")
	nodeB := cb.Election("app-primary", "node-b")

	lead, err := nodeA.Campaign(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("node-a is primary")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // node-b waits as the secondary
		defer wg.Done()
		lead, err := nodeB.Campaign(ctx)
		if err != nil {
			log.Fatal(err)
		}
		// Serve as primary under lead.Context(), until it is done.
		_ = lead
	}()
	_ = lead.Context() // node-a serves under this context
	nodeA.Resign(ctx)
	wg.Wait()
	leader, err := nodeA.Leader(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(leader.ID, "is primary")
	// Output:
	// node-a is primary
	// node-b is primary
}

// A sync.Locker for code that expects one.
func ExampleMutex() {
	addr, stop := exampleServer()
	defer stop()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var mu sync.Locker = c.Mutex("config-file", clientlib.TTL(10*time.Second))
	mu.Lock()
	fmt.Println("editing")
	mu.Unlock()
	// Output:
	// editing
}

// Readers share a cache, a reader that finds it stale becomes the writer
// atomically (no other writer gets in between), rebuilds it, and lets the
// readers back in.
func ExampleRWMutex() {
	addr, stop := exampleServer()
	defer stop()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	cache := c.RWMutex("cache:users", clientlib.TTL(10*time.Second))
	if err := cache.RLock(ctx); err != nil {
		log.Fatal(err)
	}
	read := cache.RHeld().Fence()
	stale := true // what the read found
	if stale {
		if err := cache.Upgrade(ctx, clientlib.Wait(5*time.Second)); err != nil {
			log.Fatal(err) // ErrWaitTimeout, ErrDeadlock: still a reader
		}
		fmt.Println("rebuilding under fence larger than the read's:", cache.Held().Fence() > read)
		if err := cache.Downgrade(ctx); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("reading, shared:", cache.RHeld().Shared())
	if err := cache.RUnlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// rebuilding under fence larger than the read's: true
	// reading, shared: true
}

// A client of a three-node cluster: any member's address will do, the
// Client finds the leader, and a held lock moves to a new leader by itself.
// (Not run: it needs a cluster.)
func ExampleOptions_cluster() {
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{
		Addrs: []string{"10.0.0.1:6380", "10.0.0.2:6380", "10.0.0.3:6380"},
		// How long a call waits for an election to end.
		FailoverTimeout: 10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	l, err := c.Lock(ctx, "reports:daily", clientlib.TTL(15*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(ctx)
	select {
	case <-l.Lost():
		// Not a leader change (the keeper re-attached the lock on the new
		// leader), but a loss: NOTHELD, or no leader before the deadline.
		log.Print(l.Err())
	case <-time.After(time.Minute): // the work, under l.Context()
	}
}

// Lock events: what happens to the locks matching a pattern, as it
// happens.
func ExampleClient_Watch() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	w, err := c.Watch(ctx, "jobs:*") // subscribed when Watch returns
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	l, err := c.Lock(ctx, "jobs:build")
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	for ev := range w.Events() {
		switch ev.Kind {
		case clientlib.Acquired:
			fmt.Println(ev.Lock, "acquired, fence matches:", ev.Fence == l.Fence())
		case clientlib.Released:
			fmt.Println(ev.Lock, "released:", ev.Reason)
		case clientlib.Free:
			fmt.Println(ev.Lock, "free")
		}
		if ev.Kind == clientlib.Free {
			break
		}
	}
	// Output:
	// jobs:build acquired, fence matches: true
	// jobs:build released: unlock
	// jobs:build free
}

// Taking several locks at once: both accounts or neither, whatever order
// other transfers name them in, and no partial hold while waiting.
func ExampleClient_LockMany() {
	addr, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	locks, err := c.LockMany(ctx, []string{"account:alice", "account:bob"},
		clientlib.TTL(10*time.Second), clientlib.Owner("worker-1"))
	switch {
	case errors.Is(err, clientlib.ErrDeadlock):
		// worker-1 holds a lock that a holder of alice or bob waits for:
		// nothing was taken; release what it holds and retry.
		return
	case err != nil:
		log.Fatal(err)
	}
	for _, l := range locks {
		fmt.Println("holding", l.Name(), "with a fence:", l.Fence() > 0)
	}
	for _, l := range locks {
		if err := l.Unlock(ctx); err != nil { // each its own hold
			log.Fatal(err)
		}
	}
	// Output:
	// holding account:alice with a fence: true
	// holding account:bob with a fence: true
}
