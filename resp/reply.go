package resp

import (
	"strconv"
)

// Writer appends RESP replies to B in the protocol version Proto (2 or 3).
// The zero value writes RESP2. It never fails and never writes to a
// connection; the caller hands B to the connection and Resets.
type Writer struct {
	B     []byte
	Proto int
}

// Reset empties the buffer, keeping its capacity.
func (w *Writer) Reset() { w.B = w.B[:0] }

// RESP3 reports whether the writer encodes RESP3.
func (w *Writer) RESP3() bool { return w.Proto == 3 }

func (w *Writer) line(prefix byte, s string) {
	w.B = append(w.B, prefix)
	w.B = append(w.B, s...)
	w.B = append(w.B, '\r', '\n')
}

func (w *Writer) header(prefix byte, n int64) {
	w.B = append(w.B, prefix)
	w.B = strconv.AppendInt(w.B, n, 10)
	w.B = append(w.B, '\r', '\n')
}

// Simple writes a simple string (+OK). s must not contain CR or LF.
func (w *Writer) Simple(s string) { w.line('+', s) }

// OK writes +OK.
func (w *Writer) OK() { w.B = append(w.B, "+OK\r\n"...) }

// Error writes an error reply. msg starts with the code (e.g. "ERR syntax
// error"); CR and LF in it are replaced by spaces so that it stays one line.
func (w *Writer) Error(msg string) {
	w.B = append(w.B, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		w.B = append(w.B, c)
	}
	w.B = append(w.B, '\r', '\n')
}

// Int writes an integer.
func (w *Writer) Int(n int64) { w.header(':', n) }

// Bulk writes a bulk string.
func (w *Writer) Bulk(b []byte) {
	w.header('$', int64(len(b)))
	w.B = append(w.B, b...)
	w.B = append(w.B, '\r', '\n')
}

// BulkString writes a bulk string.
func (w *Writer) BulkString(s string) {
	w.header('$', int64(len(s)))
	w.B = append(w.B, s...)
	w.B = append(w.B, '\r', '\n')
}

// BulkOrNull writes s, or a null when ok is false.
func (w *Writer) BulkOrNull(s string, ok bool) {
	if !ok {
		w.Null()
		return
	}
	w.BulkString(s)
}

// Null writes the null reply: $-1 in RESP2, _ in RESP3.
func (w *Writer) Null() {
	if w.Proto == 3 {
		w.B = append(w.B, "_\r\n"...)
		return
	}
	w.B = append(w.B, "$-1\r\n"...)
}

// Push writes the header of an out-of-band message of n elements (pub/sub
// messages, subscription confirmations): a push in RESP3, an array in
// RESP2.
func (w *Writer) Push(n int) {
	if w.Proto == 3 {
		w.header('>', int64(n))
		return
	}
	w.header('*', int64(n))
}

// NullArray writes the null array: *-1 in RESP2 (what BLPOP answers on
// timeout), _ in RESP3.
func (w *Writer) NullArray() {
	if w.Proto == 3 {
		w.B = append(w.B, "_\r\n"...)
		return
	}
	w.B = append(w.B, "*-1\r\n"...)
}

// Array writes an array header for n elements.
func (w *Writer) Array(n int) { w.header('*', int64(n)) }

// Map writes a map header for n field/value pairs: a map in RESP3, a flat
// array of 2n elements in RESP2.
func (w *Writer) Map(n int) {
	if w.Proto == 3 {
		w.header('%', int64(n))
		return
	}
	w.header('*', int64(2*n))
}

// Verbatim writes text as a verbatim string ("txt") in RESP3 and as a bulk
// string in RESP2, as Redis does for INFO.
func (w *Writer) Verbatim(text string) {
	if w.Proto != 3 {
		w.BulkString(text)
		return
	}
	w.header('=', int64(len(text)+4))
	w.B = append(w.B, "txt:"...)
	w.B = append(w.B, text...)
	w.B = append(w.B, '\r', '\n')
}

// Strings writes an array of bulk strings.
func (w *Writer) Strings(ss ...string) {
	w.Array(len(ss))
	for _, s := range ss {
		w.BulkString(s)
	}
}
