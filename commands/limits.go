package commands

import (
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"time"
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
	// requestBulks: one request may carry this many max-size arguments'
	// worth of bytes in all (1 MiB by default), so that max-args ×
	// max-arg-bytes (64 MiB) is not what one request may make redcon buffer.
	requestBulks = 16
)

// Before a connection authenticates (when authentication is required) it
// may only send AUTH, HELLO, PING, QUIT and RESET: small requests. As
// Redis bounds unauthenticated requests, so does relock: one request of
// an unauthenticated connection may be at most preAuthRequest bytes (its
// buffered input no more), and its unsent output at most preAuthOutput
// bytes before its requests stop being run. 150 idle attackers then cost
// a few MiB, not hundreds.
const (
	preAuthRequest = 16 << 10
	preAuthOutput  = 16 << 10
)

// errPreAuthTooLarge is the protocol error of an unauthenticated request
// over preAuthRequest.
const errPreAuthTooLarge = "unauthenticated request too large (authenticate first)"

var errRequestTooLarge = errors.New("request too large")

// limitedListener wraps accepted connections in limitedConn.
type limitedListener struct {
	net.Listener
	maxArgs, maxBulk int64
	// handshakeTimeout bounds a TLS handshake, so that connections that
	// never finish one cannot hold --max-clients slots.
	handshakeTimeout time.Duration
}

func (l *limitedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &limitedConn{Conn: c, scan: newFrameScanner(l.maxArgs, l.maxBulk),
		handshakeTimeout: l.handshakeTimeout}, nil
}

// limitedConn checks the request stream as it is read and fails the read
// (so the connection closes, as Redis closes on a protocol error) when a
// request exceeds the bounds, after telling the client why.
type limitedConn struct {
	net.Conn
	scan frameScanner
	// authed is the session's (set once accepted): while it is false, a
	// request may be at most preAuthRequest bytes.
	authed           *atomic.Bool
	handshakeTimeout time.Duration
	handshook        bool // owned by the reading goroutine
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if !c.handshook {
		c.handshook = true
		// Runs on the connection's own goroutine, not the accept loop.
		if tc, ok := c.Conn.(*tls.Conn); ok && c.handshakeTimeout > 0 {
			tc.SetDeadline(time.Now().Add(c.handshakeTimeout))
			err := tc.Handshake()
			tc.SetDeadline(time.Time{})
			if err != nil {
				return 0, err
			}
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if msg := c.scan.feedAs(p[:n], c.authed == nil || c.authed.Load()); msg != "" {
			// A client that does not read cannot hold this goroutine.
			c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.Conn.Write([]byte("-ERR Protocol error: " + msg + "\r\n"))
			return 0, errRequestTooLarge
		}
	}
	return n, err
}

// frameScanner follows RESP request framing byte by byte (multibulk
// `*N` / `$len` headers and bodies, or inline lines) across reads, as
// redcon frames them, and reports the first request that exceeds its
// bounds. It never buffers more than one header line.
//
// An inline line costs redcon more than its length: it allocates the rest
// of the line again at every separator (space or quote), so a 64 KiB line
// of one-letter words would make it allocate a gigabyte. The scanner
// bounds that cost (and the number of words) as it bounds multibulks.
type frameScanner struct {
	maxArgs, maxBulk int64
	maxRequest       int64 // bytes of one multibulk; redcon's allocation for one inline line

	state  int    // what the next byte belongs to
	header []byte // the header line being read (bounded)
	args   int64  // bulks left in the current multibulk
	body   int64  // body bytes (plus CRLF) left in the current bulk
	req    int64  // bytes of the current multibulk so far (bodies counted at their header)
	inline int64  // bytes of the current inline line
	seps   int64  // separators in the current inline line
	sepSum int64  // sum of their offsets in the line
}

// newFrameScanner bounds requests to maxArgs arguments of at most maxBulk
// bytes, and requestBulks × maxBulk bytes in all.
func newFrameScanner(maxArgs, maxBulk int64) frameScanner {
	return frameScanner{maxArgs: maxArgs, maxBulk: maxBulk, maxRequest: requestBulks * maxBulk}
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
				f.state, f.header, f.req = stArrHdr, f.header[:0], 1
			case '\n': // an empty line: redcon skips it
			default: // anything else, '\r' included, starts an inline line for redcon
				f.state, f.inline, f.seps, f.sepSum = stInline, 0, 0, 0
				if msg := f.inlineByte(c); msg != "" {
					return msg
				}
			}
		case stInline:
			if c == '\n' {
				f.state = stStart
				continue
			}
			if msg := f.inlineByte(c); msg != "" {
				return msg
			}
		case stArrHdr, stBulkHdr:
			f.req++
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
			if f.req += n + 2; f.maxRequest > 0 && f.req > f.maxRequest {
				return "request too large (more than " + strconv.FormatInt(f.maxRequest, 10) + " bytes)"
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

// feedAs is feed for a connection that has authenticated or not: an
// unauthenticated one's request may be at most preAuthRequest bytes.
// Requests are checked as they are read, so those pipelined right behind
// an AUTH are held to the bound too.
func (f *frameScanner) feedAs(b []byte, authed bool) string {
	if msg := f.feed(b); msg != "" {
		return msg
	}
	if !authed && f.current() > preAuthRequest {
		return errPreAuthTooLarge
	}
	return ""
}

// current returns the bytes of the request being read so far (a bulk's
// body counted whole from its header on): 0 between requests.
func (f *frameScanner) current() int64 {
	switch f.state {
	case stStart:
		return 0
	case stInline:
		return f.inline
	}
	return f.req
}

// inlineByte accounts one byte (not the final LF) of an inline line. For
// every separator redcon allocates what is left of the line; the cost so
// far is a lower bound of the final one, so a verdict never comes late.
func (f *frameScanner) inlineByte(c byte) string {
	if c == ' ' || c == '"' || c == '\'' {
		f.seps++
		f.sepSum += f.inline
		if f.seps >= f.maxArgs {
			return "too many arguments in inline request"
		}
	}
	f.inline++
	if f.inline > maxInlineLength {
		return "too big inline request"
	}
	if f.maxRequest > 0 && f.inline*(f.seps+1)-f.sepSum > f.maxRequest {
		return "too big inline request"
	}
	return ""
}

// NetConn returns the wrapped connection (for TLS state).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }
