package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unicode"

	"github.com/relock/relock/clientlib"
)

// watchCmd is `relock watch`.
type watchCmd struct {
	clientFlags `embed:""`

	Pattern string `arg:"" optional:"" default:"*" help:"Glob pattern of lock names (*, ?, [a-z], \\x); a name without glob characters watches that one lock."`
	Output  string `short:"o" enum:"text,json" default:"text" help:"Output format: text (one line per event) or json (one JSON object per line, for programs)."`
}

// Help is shown by `relock watch --help`.
func (w *watchCmd) Help() string {
	return `Prints the events of the locks matching PATTERN as they happen, one line
each, until interrupted (like etcdctl watch and consul watch):

  2025-06-01T12:00:00.123+02:00 jobs:build acquired fence=1748772000123456
  2025-06-01T12:00:01.456+02:00 jobs:build contended waiters=1
  2025-06-01T12:00:02.789+02:00 jobs:build released fence=1748772000123456 reason=unlock
  2025-06-01T12:00:02.790+02:00 jobs:build free

The reasons of a release: unlock, disconnect, expired, forced, killed,
reset, upgraded (UPGRADE gave the hold a new fence). free: the lock has no holders, no waiters and no slot in lock-delay
left. A name that is empty, has blanks or unprintable characters is
quoted. With -o json each event is an object: {"time", "lock", "event",
"fence", "reason", "waiters"} (the last three when they apply).

A dropped connection is re-established by itself (events in between are
not printed). SIGINT and SIGTERM end it with exit status 0.`
}

// Run watches until SIGINT/SIGTERM.
func (w *watchCmd) Run() error {
	c, err := w.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return w.watch(ctx, c, os.Stdout)
}

// watch prints the events to out until ctx ends (nil) or the watch fails.
func (w *watchCmd) watch(ctx context.Context, c *clientlib.Client, out io.Writer) error {
	wt, err := c.Watch(ctx, w.Pattern)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while subscribing
		}
		return fmt.Errorf("watch: %w", err)
	}
	defer wt.Close()
	for ev := range wt.Events() {
		var line []byte
		if w.Output == "json" {
			line = eventJSON(ev)
		} else {
			line = []byte(eventText(ev))
		}
		if _, err := out.Write(append(line, '\n')); err != nil {
			return err
		}
	}
	if err := wt.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return nil
}

// eventTime is how an event's time is printed: RFC 3339 with milliseconds.
const eventTime = "2006-01-02T15:04:05.000Z07:00"

// eventText is one event as a line of `relock watch`.
func eventText(ev clientlib.Event) string {
	return ev.At.Format(eventTime) + " " + watchName(ev.Lock) + strings.TrimPrefix(ev.String(), ev.Lock)
}

// watchName keeps a lock name one field of a line: quoted (Go syntax)
// when it is empty or has blanks, quotes or unprintable characters.
func watchName(s string) string {
	if s == "" || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == unicode.ReplacementChar
	}) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// eventJSONLine is one event of `relock watch -o json`.
type eventJSONLine struct {
	Time    string `json:"time"`
	Lock    string `json:"lock"`
	Event   string `json:"event"`
	Fence   uint64 `json:"fence,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Waiters int    `json:"waiters,omitempty"`
}

// eventJSON is one event as a compact JSON object.
func eventJSON(ev clientlib.Event) []byte {
	b, _ := json.Marshal(eventJSONLine{
		Time:    ev.At.Format(eventTime),
		Lock:    ev.Lock,
		Event:   ev.Kind.String(),
		Fence:   ev.Fence,
		Reason:  ev.Reason,
		Waiters: ev.Waiters,
	})
	return b
}
