package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

func TestEventText(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.FixedZone("", 2*3600))
	tests := []struct {
		ev   clientlib.Event
		want string
	}{
		{clientlib.Event{Lock: "jobs:build", Kind: clientlib.Acquired, Fence: 17, At: at}, "2025-06-01T12:00:00.123+02:00 jobs:build acquired fence=17"},
		{clientlib.Event{Lock: "jobs:build", Kind: clientlib.Released, Fence: 17, Reason: "expired", At: at}, "2025-06-01T12:00:00.123+02:00 jobs:build released fence=17 reason=expired"},
		{clientlib.Event{Lock: "jobs:build", Kind: clientlib.Contended, Waiters: 2, At: at}, "2025-06-01T12:00:00.123+02:00 jobs:build contended waiters=2"},
		{clientlib.Event{Lock: "a b", Kind: clientlib.Free, At: at.UTC()}, `2025-06-01T10:00:00.123Z "a b" free`},
		{clientlib.Event{Lock: "tab\there", Kind: clientlib.Free, At: at}, `2025-06-01T12:00:00.123+02:00 "tab\there" free`},
		{clientlib.Event{Lock: "", Kind: clientlib.Free, At: at}, `2025-06-01T12:00:00.123+02:00 "" free`},
	}
	for _, tt := range tests {
		if got := eventText(tt.ev); got != tt.want {
			t.Errorf("eventText(%+v) = %q; want %q", tt.ev, got, tt.want)
		}
	}
}

func TestEventJSON(t *testing.T) {
	at := time.Date(2025, 6, 1, 10, 0, 0, 5e6, time.UTC)
	tests := []struct {
		ev   clientlib.Event
		want string
	}{
		{clientlib.Event{Lock: "x", Kind: clientlib.Acquired, Fence: 17, At: at}, `{"time":"2025-06-01T10:00:00.005Z","lock":"x","event":"acquired","fence":17}`},
		{clientlib.Event{Lock: "x", Kind: clientlib.Released, Fence: 17, Reason: "unlock", At: at}, `{"time":"2025-06-01T10:00:00.005Z","lock":"x","event":"released","fence":17,"reason":"unlock"}`},
		{clientlib.Event{Lock: "x", Kind: clientlib.Contended, Waiters: 1, At: at}, `{"time":"2025-06-01T10:00:00.005Z","lock":"x","event":"contended","waiters":1}`},
		{clientlib.Event{Lock: "x", Kind: clientlib.Free, At: at}, `{"time":"2025-06-01T10:00:00.005Z","lock":"x","event":"free"}`},
	}
	for _, tt := range tests {
		if got := string(eventJSON(tt.ev)); got != tt.want {
			t.Errorf("eventJSON(%+v) = %s; want %s", tt.ev, got, tt.want)
		}
	}
}

// startTestServer runs an in-process server on a loopback port until the
// test ends.
func startTestServer(t *testing.T) string {
	t.Helper()
	srv, err := commands.New(commands.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10s")
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("server exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not listen within 10s")
	}
	return srv.Addrs()[0].String()
}

// TestWatch_PrintsJSONLinesUntilCancelled: `relock watch -o json` prints
// acquired, released (unlock) and free for a lock another client takes
// and releases, and returns nil when its ctx ends.
func TestWatch_PrintsJSONLinesUntilCancelled(t *testing.T) {
	addr := startTestServer(t)
	cmd := &watchCmd{clientFlags: clientFlags{Addr: addr}, Pattern: "jobs:*", Output: "json"}
	c, err := cmd.newClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := clientlib.New(clientlib.Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cmd.watch(ctx, c, pw)
		pw.Close()
		done <- err
	}()
	// Wait until the watch subscribed: CLIENT LIST shows psub=1.
	deadline := time.Now().Add(5 * time.Second)
	for {
		list, err := other.Redis().ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(list, " psub=1 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relock watch did not subscribe within 5s:\n%s", list)
		}
		time.Sleep(5 * time.Millisecond)
	}

	l, err := other.Lock(ctx, "jobs:a")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	fence := strconv.FormatUint(l.Fence(), 10)
	for _, want := range []string{
		`"lock":"jobs:a","event":"acquired","fence":` + fence + `}`,
		`"lock":"jobs:a","event":"released","fence":` + fence + `,"reason":"unlock"}`,
		`"lock":"jobs:a","event":"free"}`,
	} {
		select {
		case line := <-lines:
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil || !strings.HasSuffix(line, want) {
				t.Fatalf("line %q (%v); want a JSON object ending %s", line, err, want)
			}
			if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
				t.Fatalf("time %q: %v", m["time"], err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line within 5s; want one ending %s", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch returned %v after its ctx ended; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not return within 5s of its ctx ending")
	}
}
