package clientlib

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestWatchConn_ReportsPeerCloseAtOnceAndKeepsBufferedBytes(t *testing.T) {
	a, b := net.Pipe()
	w := newWatchConn(a)
	defer w.Close()
	go func() {
		b.Write([]byte("+OK\r\n"))
		b.Close()
	}()
	select {
	case <-w.dead:
	case <-time.After(5 * time.Second):
		t.Fatal("peer close not seen")
	}
	buf := make([]byte, 16)
	n, err := w.Read(buf)
	if err != nil || string(buf[:n]) != "+OK\r\n" {
		t.Fatalf("Read = %q, %v; want the bytes sent before the close", buf[:n], err)
	}
	if _, err := w.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("Read after the bytes = %v, want EOF", err)
	}
}

func TestWatchConn_ReadDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := newWatchConn(a)
	defer w.Close()
	w.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := w.Read(make([]byte, 8))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Fatalf("deadline of 50ms hit after %v", d)
	}
	select {
	case <-w.dead:
		t.Fatal("a read deadline closed the connection")
	default:
	}
	// Without a deadline, a Read waits for data.
	w.SetReadDeadline(time.Time{})
	go b.Write([]byte("x"))
	if n, err := w.Read(make([]byte, 8)); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
}

func TestRenewInterval_WithinLastThirdOfTTL(t *testing.T) {
	for _, ttl := range []time.Duration{time.Millisecond, 300 * time.Millisecond, 15 * time.Second} {
		for i := 0; i < 1000; i++ {
			got := renewInterval(ttl)
			if got > max(ttl/3, time.Millisecond) || got < ttl/4 {
				t.Fatalf("renewInterval(%v) = %v, want in [TTL/4, TTL/3]", ttl, got)
			}
		}
	}
}

func TestSplitAddr(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"127.0.0.1:6380", "tcp", "127.0.0.1:6380"},
		{"[::1]:6380", "tcp", "[::1]:6380"},
		{"/run/relock.sock", "unix", "/run/relock.sock"},
		{"./relock.sock", "unix", "./relock.sock"},
		{"unix:///run/relock.sock", "unix", "/run/relock.sock"},
		{"unix:relock.sock", "unix", "relock.sock"},
	} {
		if n, a := splitAddr(tc.in); n != tc.network || a != tc.addr {
			t.Errorf("splitAddr(%q) = %q, %q; want %q, %q", tc.in, n, a, tc.network, tc.addr)
		}
	}
}
