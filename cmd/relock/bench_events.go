package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"
)

// Lock events in the benchmarks: --subscribers pattern subscribers during
// a cycle run (what events cost the lock path), and the events mode (how
// soon an event reaches its subscriber).

// startSubscribers opens n pattern subscribers: subscriber i watches
// __lock__:<--subscribe-pattern, {i} replaced by i>; by default bench:<i>*,
// the lock of cycling connection i if there is one (so c of them get every
// event of one connection's lock, the others none: each pattern is matched
// against every event either way). They drain their messages until stop,
// which returns how many they received.
func (r *benchRun) startSubscribers(n int) (stop func() int64, err error) {
	c := r.cmd
	var subs []*redis.PubSub
	var clients []*redis.Client
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got int64
	stop = func() int64 {
		for _, ps := range subs {
			ps.Close()
		}
		for _, cl := range clients {
			cl.Close()
		}
		wg.Wait()
		return got
	}
	for i := range n {
		cl := c.newClient()
		clients = append(clients, cl)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ps := cl.PSubscribe(ctx, "__lock__:"+strings.ReplaceAll(c.SubPattern, "{i}", strconv.Itoa(i)))
		_, err := ps.Receive(ctx) // the confirmation
		cancel()
		if err != nil {
			stop()
			return nil, fmt.Errorf("PSUBSCRIBE: %w", err)
		}
		subs = append(subs, ps)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var k int64
			for range ps.Channel() {
				k++
			}
			mu.Lock()
			got += k
			mu.Unlock()
		}()
	}
	return stop, nil
}

// events measures how soon an event reaches a subscriber: one connection
// takes and releases bench:events in a loop, another subscribes to its
// channel; each latency is from sending the LOCK (UNLOCK) to receiving
// its acquired (released) event.
func (r *benchRun) events(pid int) (benchResult, error) {
	c := r.cmd
	if c.Target != "relock" {
		return benchResult{}, errors.New("the events mode drives relock only")
	}
	const name = "bench:events"
	sub := c.newClient()
	defer sub.Close()
	pub := c.newClient()
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration+30*time.Second)
	defer cancel()
	ps := sub.Subscribe(ctx, "__lock__:"+name)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return benchResult{}, fmt.Errorf("SUBSCRIBE: %w", err)
	}
	msgs := ps.Channel(redis.WithChannelSize(1024))
	// await waits for the next event of kind (acquired, released) and
	// skips the others (free).
	await := func(kind string) (time.Time, error) {
		timeout := time.NewTimer(5 * time.Second)
		defer timeout.Stop()
		for range maxBenchIterations {
			select {
			case m, ok := <-msgs:
				if !ok {
					return time.Time{}, errors.New("the subscription ended")
				}
				if strings.HasPrefix(m.Payload, kind+" ") {
					return time.Now(), nil
				}
			case <-timeout.C:
				return time.Time{}, fmt.Errorf("no %s event within 5s", kind)
			}
		}
		return time.Time{}, errors.New("too many events")
	}
	h := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	cpu0, _ := procCPU(pid)
	start := time.Now()
	end := start.Add(c.Duration)
	for i := 0; i < maxBenchIterations && time.Now().Before(end); i++ {
		t0 := time.Now()
		key, err := pub.Do(ctx, "LOCK", name).Text()
		if err != nil {
			return benchResult{}, err
		}
		at, err := await("acquired")
		if err != nil {
			return benchResult{}, err
		}
		h.RecordValue(int64(at.Sub(t0) / time.Microsecond))
		t0 = time.Now()
		if err := pub.Do(ctx, "UNLOCK", name, key).Err(); err != nil {
			return benchResult{}, err
		}
		if at, err = await("released"); err != nil {
			return benchResult{}, err
		}
		h.RecordValue(int64(at.Sub(t0) / time.Microsecond))
		r.ops.Add(2)
		r.reqs.Add(2)
	}
	elapsed := time.Since(start)
	cpu1, _ := procCPU(pid)
	ops := r.ops.Load()
	res := benchResult{
		Seconds: elapsed.Seconds(), Ops: ops, OpsPerSec: float64(ops) / elapsed.Seconds(), Requests: r.reqs.Load(),
		P50us: float64(h.ValueAtQuantile(50)), P99us: float64(h.ValueAtQuantile(99)),
		P999us: float64(h.ValueAtQuantile(99.9)), MaxUs: float64(h.Max()),
	}
	if ops > 0 && cpu1 > cpu0 {
		res.ServerCPUus = float64((cpu1-cpu0)/time.Microsecond) / float64(ops)
	}
	return res, nil
}
