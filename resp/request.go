package resp

import (
	"strconv"
	"unsafe"

	"github.com/tidwall/redcon"
)

// ParseRequest parses the first request in b the way redcon does (same
// syntax, same protocol errors), without allocating for the multibulk
// requests every client sends: the returned args are slices of b, appended
// to args[:0]. n is the number of bytes the request took; 0 means b does
// not hold a whole request yet. A blank inline line takes n bytes and has
// no args. Inline (telnet-style) requests go through redcon's own parser.
func ParseRequest(b []byte, args [][]byte) (out [][]byte, n int, err error) {
	if len(b) == 0 {
		return args[:0], 0, nil
	}
	if b[0] != '*' {
		return parseInline(b, args)
	}
	i := indexLF(b, 1)
	if i < 0 {
		return args[:0], 0, nil
	}
	if b[i-1] != '\r' {
		return nil, 0, errBadMultiBulkLen
	}
	count, ok := atoi(b[1 : i-1])
	if !ok {
		return nil, 0, errBadMultiBulkLen
	}
	if count <= 0 {
		return args[:0], i + 1, nil // *0, *-1: ignored, as Redis does
	}
	out = args[:0]
	pos := i + 1
	for range count {
		if pos >= len(b) {
			return args[:0], 0, nil
		}
		if b[pos] != '$' {
			return nil, 0, &ProtocolError{"expected '$', got '" + string(b[pos]) + "'"}
		}
		j := indexLF(b, pos+1)
		if j < 0 {
			return args[:0], 0, nil
		}
		if b[j-1] != '\r' {
			return nil, 0, errBadBulkLen
		}
		size, ok := atoi(b[pos+1 : j-1])
		if !ok || size < 0 {
			return nil, 0, errBadBulkLen
		}
		end := j + 1 + size // the body is b[j+1:end], then CRLF
		if end+1 >= len(b) {
			return args[:0], 0, nil
		}
		if b[end] != '\r' || b[end+1] != '\n' {
			return nil, 0, errBadBulkLen
		}
		out = append(out, b[j+1:end:end])
		pos = end + 2
	}
	return out, pos, nil
}

// parseInline parses one inline line with redcon (quotes, escapes).
func parseInline(b []byte, args [][]byte) ([][]byte, int, error) {
	i := indexLF(b, 0)
	if i < 0 {
		return args[:0], 0, nil
	}
	cmd, err := redcon.Parse(b[:i+1])
	if err != nil {
		if err.Error() == "incomplete command" {
			return args[:0], i + 1, nil // a blank line: skipped
		}
		return nil, 0, err // unbalanced quotes
	}
	return append(args[:0], cmd.Args...), i + 1, nil
}

// ProtocolError is a malformed request; its text is what redcon (and
// Redis) say, after "ERR ".
type ProtocolError struct{ msg string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.msg }

var (
	errBadMultiBulkLen = &ProtocolError{"invalid multibulk length"}
	errBadBulkLen      = &ProtocolError{"invalid bulk length"}
)

func indexLF(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] == '\n' {
			return i
		}
	}
	return -1
}

// atoi parses a length as redcon does (strconv.Atoi).
func atoi(b []byte) (int, bool) {
	n, err := strconv.Atoi(unsafe.String(unsafe.SliceData(b), len(b)))
	return n, err == nil
}
