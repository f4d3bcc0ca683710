package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/relock/relock/clientlib"
)

// locksCmd is `relock locks`.
type locksCmd struct {
	clientFlags `embed:""`

	Pattern string        `arg:"" optional:"" default:"*" help:"Glob pattern of lock names (*, ?, [a-z], \\x)."`
	Waiters bool          `short:"w" help:"List each waiter too, not only how many there are."`
	Watch   time.Duration `help:"Redraw the table every interval until interrupted (e.g. --watch 1s); with -o json, print one JSON line per interval." placeholder:"INTERVAL"`
	Output  string        `short:"o" enum:"table,json" default:"table" help:"Output format: table (aligned, for people) or json (an array of locks, for programs)."`
}

// locksPage is how many locks one LOCKS call asks for.
const locksPage = 1000

// Run prints the locks matching the pattern as an aligned table, once or,
// with --watch, redrawn every interval until SIGINT/SIGTERM.
func (l *locksCmd) Run() error {
	c, err := l.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	if l.Watch <= 0 {
		return l.show(c, os.Stdout, false)
	}
	if l.Watch < 100*time.Millisecond {
		return fmt.Errorf("--watch must be at least 100ms")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(l.Watch)
	defer tick.Stop()
	for {
		if l.Output == "json" {
			// One compact array per line (JSON Lines), nothing else.
			if err := l.show(c, os.Stdout, true); err != nil {
				return err
			}
		} else {
			var b strings.Builder
			err := l.show(c, &b, false)
			// Clear the screen and home the cursor, then draw the frame whole.
			fmt.Fprintf(os.Stdout, "\x1b[H\x1b[2J%s  every %v, %s\n\n%s", "relock locks "+l.Pattern, l.Watch, time.Now().Format("15:04:05"), b.String())
			if err != nil {
				fmt.Fprintln(os.Stdout, "error:", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// show writes the locks matching the pattern to w: the table (or "no locks
// match"), or with -o json an array, indented unless compact.
func (l *locksCmd) show(c *clientlib.Client, w io.Writer, compact bool) error {
	var all []clientlib.LockInfo
	after := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		page, err := c.Locks(ctx, clientlib.LocksQuery{Match: l.Pattern, Count: locksPage, After: after})
		cancel()
		if err != nil {
			return err
		}
		all = append(all, page...)
		if len(page) == 0 { // a page can be short with more to come (1 MiB)
			break
		}
		after = page[len(page)-1].Name
	}
	if l.Output == "json" {
		return writeLocksJSON(w, all, compact)
	}
	if len(all) == 0 {
		if w == os.Stdout {
			fmt.Fprintf(os.Stderr, "no locks match %q\n", l.Pattern)
		} else {
			fmt.Fprintf(w, "no locks match %q\n", l.Pattern)
		}
		return nil
	}
	return printLocks(w, all, l.Waiters)
}

// lockJSON is one lock in `relock locks -o json`. Field names follow LOCKS
// (client-id, client-name, client-addr) in snake case; durations are
// milliseconds. ttl_ms is -1 for a hold without a TTL, client_id -1 for a
// detached or orphaned hold; delayed counts the slots in lock-delay. Keys
// are never shown.
type lockJSON struct {
	Name    string       `json:"name"`
	Size    int          `json:"size"`
	Delayed int          `json:"delayed"`
	Holders []holderJSON `json:"holders"`
	Waiters []waiterJSON `json:"waiters"`
}

type holderJSON struct {
	Fence      uint64 `json:"fence"`
	Owner      string `json:"owner"`
	ClientID   int64  `json:"client_id"`
	ClientName string `json:"client_name"`
	ClientAddr string `json:"client_addr"`
	Detached   bool   `json:"detached"`
	TTLms      int64  `json:"ttl_ms"`
	AgeMs      int64  `json:"age_ms"`
	Count      int    `json:"count"`
}

type waiterJSON struct {
	ClientID   int64  `json:"client_id"`
	Owner      string `json:"owner"`
	ClientName string `json:"client_name"`
	ClientAddr string `json:"client_addr"`
	WaitedMs   int64  `json:"waited_ms"`
}

// writeLocksJSON writes locks as one JSON array (every waiter included;
// [] when none match), followed by a newline.
func writeLocksJSON(w io.Writer, locks []clientlib.LockInfo, compact bool) error {
	out := make([]lockJSON, 0, len(locks))
	for _, lk := range locks {
		j := lockJSON{Name: lk.Name, Size: lk.Size, Delayed: lk.Delayed, Holders: []holderJSON{}, Waiters: []waiterJSON{}}
		for _, h := range lk.Holders {
			ttl := int64(-1)
			if h.TTL >= 0 {
				ttl = h.TTL.Milliseconds()
			}
			j.Holders = append(j.Holders, holderJSON{
				Fence: h.Fence, Owner: h.Owner, ClientID: h.ClientID, ClientName: h.ClientName, ClientAddr: h.ClientAddr,
				Detached: h.Detached, TTLms: ttl, AgeMs: h.Age.Milliseconds(), Count: h.Count,
			})
		}
		for _, wt := range lk.Waiters {
			j.Waiters = append(j.Waiters, waiterJSON{
				ClientID: wt.ClientID, Owner: wt.Owner, ClientName: wt.ClientName, ClientAddr: wt.ClientAddr, WaitedMs: wt.Waited.Milliseconds(),
			})
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	if !compact {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(out)
}

// printLocks writes one row per holder (the name and size on the first
// row of a lock), the number of waiters on the lock's first row, and with
// waiters one row per waiter. Lines carry no trailing blanks.
func printLocks(w io.Writer, locks []clientlib.LockInfo, waiters bool) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tFENCE\tOWNER\tCLIENT\tTTL\tAGE\tCOUNT\tWAITERS")
	for _, lk := range locks {
		name, size, nw := printableName(lk.Name), strconv.Itoa(lk.Size), strconv.Itoa(len(lk.Waiters))
		if len(lk.Holders) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", name, size, nw)
		}
		for i, h := range lk.Holders {
			client := strconv.FormatInt(h.ClientID, 10)
			switch {
			case h.Detached:
				client = "detached"
			case h.ClientID < 0:
				client = "orphan"
			}
			ttl := "-"
			if h.TTL >= 0 {
				ttl = shortDuration(h.TTL)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n",
				name, size, h.Fence, orDash(printableName(h.Owner)), client, ttl, shortDuration(h.Age), h.Count, nw)
			if i == 0 {
				name, size, nw = "", "", ""
			}
		}
		if waiters {
			for i, wt := range lk.Waiters {
				fmt.Fprintf(tw, "\t\twaiter %d\t%s\t%d\t\t%s\t\t\n",
					i+1, orDash(printableName(wt.Owner)), wt.ClientID, "waited "+shortDuration(wt.Waited))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// A waiter row's empty trailing cells are padded like any other; trim
	// them so that the output diffs and pastes cleanly.
	lines := bytes.SplitAfter(buf.Bytes(), []byte("\n"))
	out := make([]byte, 0, buf.Len())
	for _, l := range lines {
		body := bytes.TrimRight(l, " \n")
		out = append(out, body...)
		if bytes.HasSuffix(l, []byte("\n")) {
			out = append(out, '\n')
		}
	}
	_, err := w.Write(out)
	return err
}

// shortDuration rounds d for a table: ms below a second, then 0.1 s, then
// whole seconds from a minute on.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printableName keeps a binary-safe name on one table cell.
func printableName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\t' {
			return '?'
		}
		return r
	}, s)
}
