package clientlib_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

func TestSemaphore_AdmitsAtMostSizeHolders(t *testing.T) {
	srv := startServer(t, commands.Config{})
	ctx := testCtx(t, 30*time.Second)
	const size = 3
	clients := make([]*clientlib.Client, 4)
	for i := range clients {
		clients[i] = newClient(t, srv)
	}

	// Exactly size slots: the next TryAcquire fails, a waiter is granted
	// the slot that frees.
	var slots []*clientlib.Lock
	for i := 0; i < size; i++ {
		l, err := clients[i].Semaphore("slots", size).TryAcquire(ctx, clientlib.TTL(time.Second))
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		slots = append(slots, l)
	}
	sem := clients[3].Semaphore("slots", size)
	if l, err := sem.TryAcquire(ctx); !errors.Is(err, clientlib.ErrWaitTimeout) {
		t.Fatalf("TryAcquire on a full semaphore = %v, %v; want ErrWaitTimeout", l, err)
	}
	if held, waiting, err := sem.Holders(ctx); err != nil || held != size || waiting != 0 {
		t.Fatalf("Holders = %d, %d, %v; want %d, 0", held, waiting, err, size)
	}
	got := make(chan *clientlib.Lock, 1)
	go func() {
		l, err := sem.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitersReach(t, clients[0], "slots", 1)
	if err := slots[1].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l == nil {
			t.FailNow()
		}
		slots[1] = l
	case <-ctx.Done():
		t.Fatal("waiter not granted the freed slot")
	}
	if _, err := clients[0].Lock(ctx, "slots", clientlib.Size(size+1)); !errors.Is(err, clientlib.ErrSizeMismatch) {
		t.Fatalf("another size = %v, want ErrSizeMismatch", err)
	}
	for _, l := range slots {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Many workers on several clients: never more than size inside.
	var inside, peak atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		s := clients[w%len(clients)].Semaphore("slots", size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 5; round++ {
				l, err := s.Acquire(ctx, clientlib.TTL(time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > size {
		t.Fatalf("%d holders at once, size %d", p, size)
	}
}

func TestElection_LeadershipFailsOverInQueueOrder(t *testing.T) {
	srv := startServer(t, commands.Config{})
	ctx := testCtx(t, 30*time.Second)
	admin := newClient(t, srv)
	clients := make([]*clientlib.Client, 3)
	elections := make([]*clientlib.Election, 3)
	for i := range clients {
		clients[i] = newClient(t, srv)
		elections[i] = clients[i].Election("primary", fmt.Sprintf("node-%d", i), clientlib.TTL(time.Second))
	}
	obsCtx, stopObserving := context.WithCancel(ctx)
	observed := admin.Election("primary", "observer").Observe(obsCtx, 10*time.Millisecond)
	expectObserved := func(id string) {
		t.Helper()
		select {
		case l := <-observed:
			if l.ID != id {
				t.Fatalf("observed leader %q, want %q", l.ID, id)
			}
		case <-ctx.Done():
			t.Fatalf("leader %q not observed", id)
		}
	}
	expectObserved("")

	lead0, err := elections[0].Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expectObserved("node-0")
	type win struct {
		i int
		l *clientlib.Lock
	}
	wins := make(chan win, 2)
	for i := 1; i < 3; i++ {
		go func() {
			l, err := elections[i].Campaign(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			wins <- win{i, l}
		}()
		waitersReach(t, admin, "primary", i)
	}
	expectWin := func(want int) *clientlib.Lock {
		t.Helper()
		select {
		case w := <-wins:
			if w.i != want {
				t.Fatalf("node-%d leads, want node-%d", w.i, want)
			}
			return w.l
		case <-ctx.Done():
			t.Fatalf("node-%d did not become leader", want)
			return nil
		}
	}

	// The primary resigns: the first secondary takes over.
	if err := elections[0].Resign(ctx); err != nil {
		t.Fatal(err)
	}
	lead1 := expectWin(1)
	expectObserved("node-1")
	if lead1.Fence() <= lead0.Fence() {
		t.Fatalf("new leader's fence %d not above %d", lead1.Fence(), lead0.Fence())
	}
	if l, err := admin.Election("primary", "").Leader(ctx); err != nil || l.ID != "node-1" || l.Fence != lead1.Fence() {
		t.Fatalf("Leader = %+v, %v; want node-1", l, err)
	}

	// The new primary crashes (its connections close): the next takes over.
	clients[1].Close()
	lostWithin(t, lead1, time.Second)
	lead2 := expectWin(2)
	expectObserved("node-2")
	if lead2.Fence() <= lead1.Fence() {
		t.Fatalf("new leader's fence %d not above %d", lead2.Fence(), lead1.Fence())
	}

	// The last one resigns: no leader.
	if err := elections[2].Resign(ctx); err != nil {
		t.Fatal(err)
	}
	expectObserved("")
	if _, err := elections[0].Leader(ctx); !errors.Is(err, clientlib.ErrNoLeader) {
		t.Fatalf("Leader = %v, want ErrNoLeader", err)
	}
	stopObserving()
	for range observed { // drained until Observe's goroutine closes it
	}
}

func TestMutex_ExcludesAcrossClients(t *testing.T) {
	srv := startServer(t, commands.Config{})
	var inside, total atomic.Int32
	var wg sync.WaitGroup
	for c := 0; c < 3; c++ {
		client := newClient(t, srv)
		m := client.Mutex("counter", clientlib.TTL(time.Second))
		var locker sync.Locker = m
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					locker.Lock()
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders inside the mutex", n)
					}
					if m.Held() == nil || m.Held().Fence() == 0 {
						t.Error("Held() is nil while locked")
					}
					total.Add(1)
					inside.Add(-1)
					locker.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if got := total.Load(); got != 60 {
		t.Fatalf("total = %d, want 60", got)
	}
}

func TestMutex_TryLockAndUnlockErrors(t *testing.T) {
	srv := startServer(t, commands.Config{})
	a := newClient(t, srv).Mutex("m")
	b := newClient(t, srv).Mutex("m")
	ctx := testCtx(t, 10*time.Second)
	if !a.TryLock() {
		t.Fatal("TryLock on a free mutex failed")
	}
	if b.TryLock() {
		t.Fatal("TryLock on a held mutex succeeded")
	}
	if a.TryLock() {
		t.Fatal("TryLock by the same Mutex succeeded")
	}
	if err := a.UnlockContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.UnlockContext(ctx); !errors.Is(err, clientlib.ErrNotHeld) {
		t.Fatalf("unlock of unlocked Mutex = %v, want ErrNotHeld", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	if err := b.LockContext(cctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := a.LockContext(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("LockContext with a cancelled ctx = %v", err)
	}
	if err := b.UnlockContext(ctx); err != nil {
		t.Fatal(err)
	}
}
