package main

import (
	"strings"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
)

func TestPrintLocks_Table(t *testing.T) {
	build := clientlib.LockInfo{
		Name: "jobs:build", Size: 1,
		Holders: []clientlib.HolderInfo{{Fence: 1732712345678901, Owner: "ci-runner-7", ClientID: 3, TTL: 59400 * time.Millisecond, Age: 600 * time.Millisecond, Count: 2}},
		Waiters: []clientlib.WaiterInfo{{ClientID: 4, Owner: "deployer", Waited: 1500 * time.Millisecond}, {ClientID: 5, Waited: 90 * time.Second}},
	}
	pool := clientlib.LockInfo{
		Name: "jobs:pool", Size: 3,
		Holders: []clientlib.HolderInfo{
			{Fence: 7, ClientID: 3, TTL: -1, Age: 2 * time.Hour, Count: 1},
			{Fence: 12, ClientID: -1, TTL: 30 * time.Second, Age: 0, Count: 1},                      // orphan after a restart
			{Fence: 13, ClientID: -1, TTL: time.Second, Age: time.Minute, Detached: true, Count: 1}, // detached
		},
	}
	odd := clientlib.LockInfo{
		Name: "bad\tname\n\x7f", Size: 1,
		Holders: []clientlib.HolderInfo{{Fence: 1, Owner: "o\x01", ClientID: 9, TTL: -1, Count: 1}},
	}
	empty := clientlib.LockInfo{Name: "queued", Size: 2, Waiters: []clientlib.WaiterInfo{{ClientID: 8}}}

	tests := []struct {
		name    string
		locks   []clientlib.LockInfo
		waiters bool
		want    string
	}{
		{
			name:  "holder with waiters counted",
			locks: []clientlib.LockInfo{build},
			want: `
NAME        SIZE  FENCE             OWNER        CLIENT  TTL    AGE    COUNT  WAITERS
jobs:build  1     1732712345678901  ci-runner-7  3       59.4s  600ms  2      2
`,
		},
		{
			name:    "waiters listed in queue order",
			locks:   []clientlib.LockInfo{build},
			waiters: true,
			want: `
NAME        SIZE  FENCE             OWNER        CLIENT  TTL    AGE           COUNT  WAITERS
jobs:build  1     1732712345678901  ci-runner-7  3       59.4s  600ms         2      2
                  waiter 1          deployer     4              waited 1.5s
                  waiter 2          -            5              waited 1m30s
`,
		},
		{
			name:  "semaphore: name and size on the first row only; orphan and detached",
			locks: []clientlib.LockInfo{pool},
			want: `
NAME       SIZE  FENCE  OWNER  CLIENT    TTL  AGE     COUNT  WAITERS
jobs:pool  3     7      -      3         -    2h0m0s  1      0
                 12     -      orphan    30s  0s      1
                 13     -      detached  1s   1m0s    1
`,
		},
		{
			name:  "control bytes in names and owners stay on one cell",
			locks: []clientlib.LockInfo{odd},
			want: `
NAME        SIZE  FENCE  OWNER  CLIENT  TTL  AGE  COUNT  WAITERS
bad?name??  1     1      o?     9       -    0s   1      0
`,
		},
		{
			name:    "a lock with waiters only, next to a held one",
			locks:   []clientlib.LockInfo{empty, odd},
			waiters: true,
			want: `
NAME        SIZE  FENCE     OWNER  CLIENT  TTL  AGE        COUNT  WAITERS
queued      2     -         -      -       -    -          -      1
                  waiter 1  -      8            waited 0s
bad?name??  1     1         o?     9       -    0s         1      0
`,
		},
		{
			name: "no locks: the header alone",
			want: `
NAME  SIZE  FENCE  OWNER  CLIENT  TTL  AGE  COUNT  WAITERS
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := printLocks(&b, tt.locks, tt.waiters); err != nil {
				t.Fatal(err)
			}
			want := strings.TrimPrefix(tt.want, "\n")
			if got := b.String(); got != want {
				t.Errorf("printLocks:\ngot:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestShortDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{1234 * time.Microsecond, "1ms"},
		{999 * time.Millisecond, "999ms"},
		{1049 * time.Millisecond, "1s"},
		{59940 * time.Millisecond, "59.9s"},
		{90*time.Second + 400*time.Millisecond, "1m30s"},
		{25 * time.Hour, "25h0m0s"},
	}
	for _, tt := range tests {
		if got := shortDuration(tt.in); got != tt.want {
			t.Errorf("shortDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
