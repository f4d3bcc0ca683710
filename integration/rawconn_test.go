package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawConn is a plain TCP connection that writes RESP commands and reads
// replies byte for byte, for tests that assert what is on the wire.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

// replyTimeout bounds every read of a reply, so that a missing reply fails
// the test instead of hanging it.
const replyTimeout = 5 * time.Second

// dialRaw opens a raw connection to srv, closed when the test ends.
func dialRaw(t testing.TB, srv *server) *rawConn {
	t.Helper()
	return dialRawAt(t, "tcp", srv.Addr)
}

// dialRawAt opens a raw connection to a network address ("tcp" or
// "unix"), closed when the test ends.
func dialRawAt(t testing.TB, network, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{Conn: nc, r: bufio.NewReader(nc)}
}

// send writes one command as a RESP array of bulk strings.
func (c *rawConn) send(args ...string) error {
	_, err := c.Write(encodeCommand(args...))
	return err
}

// read reads exactly one reply and returns its raw bytes.
func (c *rawConn) read() (string, error) {
	c.SetReadDeadline(time.Now().Add(replyTimeout))
	return readReply(c.r)
}

// do sends a command and reads its reply, failing the test on I/O errors.
func (c *rawConn) do(t testing.TB, args ...string) string {
	t.Helper()
	if err := c.send(args...); err != nil {
		t.Fatalf("send %q: %v", args, err)
	}
	got, err := c.read()
	if err != nil {
		t.Fatalf("reply to %q: %v", args, err)
	}
	return got
}

// expectClosed fails the test unless the server has closed the connection
// (the next read ends with EOF or a reset, with no further reply).
func (c *rawConn) expectClosed(t testing.TB) {
	t.Helper()
	got, err := c.read()
	if err == nil {
		t.Fatalf("connection still open: got reply %q", got)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed within %v", replyTimeout)
	}
}

func encodeCommand(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

// readReply reads exactly one RESP2 or RESP3 value from r and returns its
// bytes as they were sent. It checks the framing (CRLF, bulk lengths) but
// not the content; the caller compares the bytes.
func readReply(r *bufio.Reader) (string, error) {
	var b strings.Builder
	err := readValue(r, &b)
	return b.String(), err
}

func readValue(r *bufio.Reader, b *strings.Builder) error {
	line, err := r.ReadString('\n')
	if err != nil {
		if err == io.EOF && line != "" {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return fmt.Errorf("malformed reply line %q", line)
	}
	b.WriteString(line)
	head := line[1 : len(line)-2]
	n, _ := strconv.Atoi(head)
	switch line[0] {
	case '+', '-', ':', '_', ',', '#', '(': // one line
		return nil
	case '$', '=', '!': // length-prefixed
		if n < 0 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		if string(buf[n:]) != "\r\n" {
			return fmt.Errorf("bulk of %d bytes not followed by CRLF: %q", n, buf)
		}
		b.Write(buf)
		return nil
	case '*', '~', '>', '%', '|': // aggregates
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for i := 0; i < n; i++ {
			if err := readValue(r, b); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown reply type in %q", line)
}
