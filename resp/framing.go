package resp

import "strconv"

// Bounds on what one request may be, checked as it is read (see
// FrameScanner).
const (
	MaxInlineLength = 64 << 10 // bytes in one inline (telnet-style) command
	// RequestBulks: one request may carry this many max-size arguments'
	// worth of bytes in all, so that max-args × max-arg-bytes is not what
	// one request may make a server buffer.
	RequestBulks = 16
)

// FrameScanner follows RESP request framing byte by byte (multibulk
// `*N` / `$len` headers and bodies, or inline lines) across reads, as
// redcon frames them, and reports the first request that exceeds its
// bounds. It never buffers more than one header line.
//
// An inline line costs redcon more than its length: it allocates the rest
// of the line again at every separator (space or quote), so a 64 KiB line
// of one-letter words would make it allocate a gigabyte. The scanner
// bounds that cost (and the number of words) as it bounds multibulks.
type FrameScanner struct {
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

// NewFrameScanner bounds requests to maxArgs arguments of at most maxBulk
// bytes, and RequestBulks × maxBulk bytes in all.
func NewFrameScanner(maxArgs, maxBulk int64) FrameScanner {
	return FrameScanner{maxArgs: maxArgs, maxBulk: maxBulk, maxRequest: RequestBulks * maxBulk}
}

const (
	stStart   = iota // start of a request
	stArrHdr         // in "*N\r\n"
	stBulkHdr        // expecting/in "$len\r\n"
	stBody           // in a bulk body (+ CRLF)
	stInline         // in an inline command line
)

func (f *FrameScanner) Feed(b []byte) string {
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

// Current returns the bytes of the request being read so far (a bulk's
// body counted whole from its header on): 0 between requests.
func (f *FrameScanner) Current() int64 {
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
func (f *FrameScanner) inlineByte(c byte) string {
	if c == ' ' || c == '"' || c == '\'' {
		f.seps++
		f.sepSum += f.inline
		if f.seps >= f.maxArgs {
			return "too many arguments in inline request"
		}
	}
	f.inline++
	if f.inline > MaxInlineLength {
		return "too big inline request"
	}
	if f.maxRequest > 0 && f.inline*(f.seps+1)-f.sepSum > f.maxRequest {
		return "too big inline request"
	}
	return ""
}
