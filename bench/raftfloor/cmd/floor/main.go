// floor: cost floor on this machine for one process pinned to one core:
// (1) 100-byte append + fdatasync on /tmp, (2) loopback TCP 8-byte ping-pong within the process.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	f, _ := os.OpenFile("/tmp/spike-floor.log", os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	defer os.Remove("/tmp/spike-floor.log")
	b := make([]byte, 100)
	n := 2000
	t0, c0 := time.Now(), cpu()
	for i := 0; i < n; i++ {
		f.Write(b)
		unix.Fdatasync(int(f.Fd()))
	}
	fmt.Printf("append+fdatasync: %.0f us wall/op, %.0f us CPU/op\n",
		float64(time.Since(t0).Microseconds())/float64(n), float64((cpu()-c0).Microseconds())/float64(n))

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		c, _ := ln.Accept()
		buf := make([]byte, 8)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(buf)
		}
	}()
	c, _ := net.Dial("tcp", ln.Addr().String())
	buf := make([]byte, 8)
	n = 20000
	t0, c0 = time.Now(), cpu()
	for i := 0; i < n; i++ {
		c.Write(buf)
		io.ReadFull(c, buf)
	}
	fmt.Printf("loopback TCP round trip (2 sends, same process): %.1f us wall/op, %.1f us CPU/op\n",
		float64(time.Since(t0).Microseconds())/float64(n), float64((cpu()-c0).Microseconds())/float64(n))
}
