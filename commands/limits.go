package commands

import (
	"errors"
	"net"
	"strconv"
)

// Bounds on what one request may be. relock's requests are small (a name
// of at most max-name-len bytes, a key, a few options), so these stop a
// client from making the server buffer or allocate more than a request
// can need — a 512 MB bulk header is refused when it is read, before any
// of its body arrives.
const (
	defaultMaxArgs  = 1024
	defaultMaxBulk  = 64 << 10 // bytes in one argument
	maxInlineLength = 64 << 10 // bytes in one inline (telnet-style) command
)

var errRequestTooLarge = errors.New("request too large")

// limitedListener wraps accepted connections in limitedConn.
type limitedListener struct {
	net.Listener
	maxArgs, maxBulk int64
}

func (l *limitedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &limitedConn{Conn: c, scan: frameScanner{maxArgs: l.maxArgs, maxBulk: l.maxBulk}}, nil
}

// limitedConn checks the request stream as it is read and fails the read
// (so the connection closes, as Redis closes on a protocol error) when a
// request exceeds the bounds, after telling the client why.
type limitedConn struct {
	net.Conn
	scan frameScanner
}

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if msg := c.scan.feed(p[:n]); msg != "" {
			c.Conn.Write([]byte("-ERR Protocol error: " + msg + "\r\n"))
			return 0, errRequestTooLarge
		}
	}
	return n, err
}

// frameScanner follows RESP request framing byte by byte (multibulk
// `*N` / `$len` headers and bodies, or inline lines) across reads, and
// reports the first request that exceeds its bounds. It never buffers
// more than one header line.
type frameScanner struct {
	maxArgs, maxBulk int64

	state  int    // what the next byte belongs to
	header []byte // the header line being read (bounded)
	args   int64  // bulks left in the current multibulk
	body   int64  // body bytes (plus CRLF) left in the current bulk
	inline int64  // bytes of the current inline line
}

const (
	stStart   = iota // start of a request
	stArrHdr         // in "*N\r\n"
	stBulkHdr        // expecting/in "$len\r\n"
	stBody           // in a bulk body (+ CRLF)
	stInline         // in an inline command line
)

func (f *frameScanner) feed(b []byte) string {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch f.state {
		case stStart:
			switch c {
			case '*':
				f.state, f.header = stArrHdr, f.header[:0]
			case '\r', '\n':
			default:
				f.state, f.inline = stInline, 1
			}
		case stInline:
			if c == '\n' {
				f.state = stStart
				continue
			}
			f.inline++
			if f.inline > maxInlineLength {
				return "too big inline request"
			}
		case stArrHdr, stBulkHdr:
			if c != '\n' {
				if len(f.header) >= 24 {
					return "invalid length header"
				}
				f.header = append(f.header, c)
				continue
			}
			h := f.header
			if len(h) > 0 && h[len(h)-1] == '\r' {
				h = h[:len(h)-1]
			}
			if f.state == stArrHdr {
				n, err := strconv.ParseInt(string(h), 10, 64)
				if err != nil {
					return "invalid multibulk length"
				}
				if n > f.maxArgs {
					return "too many arguments (" + strconv.FormatInt(n, 10) + ")"
				}
				if n <= 0 {
					f.state = stStart
					continue
				}
				f.args, f.state, f.header = n, stBulkHdr, f.header[:0]
				continue
			}
			if len(h) == 0 || h[0] != '$' {
				return "expected '$'"
			}
			n, err := strconv.ParseInt(string(h[1:]), 10, 64)
			if err != nil || n < 0 {
				return "invalid bulk length"
			}
			if n > f.maxBulk {
				return "argument of " + strconv.FormatInt(n, 10) + " bytes is too large (at most " + strconv.FormatInt(f.maxBulk, 10) + ")"
			}
			f.body, f.state = n+2, stBody
		case stBody:
			// Skip as much of the body as this read holds.
			skip := min(int64(len(b)-i), f.body)
			f.body -= skip
			i += int(skip) - 1
			if f.body == 0 {
				f.args--
				f.header = f.header[:0]
				if f.args == 0 {
					f.state = stStart
				} else {
					f.state = stBulkHdr
				}
			}
		}
	}
	return ""
}

// NetConn returns the wrapped connection (for TLS state).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }
