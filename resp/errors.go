package resp

import "strconv"

// Error replies. The upper-case code at the start is the contract; the text
// after it is for people.
const (
	ErrSyntax      = "ERR syntax error"
	ErrNotInteger  = "ERR value is not an integer or out of range"
	ErrNotHeld     = "NOTHELD the key does not hold the lock"
	ErrNoAuth      = "NOAUTH Authentication required."
	ErrWrongPass   = "WRONGPASS invalid username-password pair or user is disabled."
	ErrDetachTTL   = "ERR DETACH requires a TTL"
	ErrDetachMatch = "ERR DETACH must match the hold being re-entered"
	ErrNoProto     = "NOPROTO unsupported protocol version"
	ErrNoSuchDB    = "ERR DB index is out of range"
	ErrEmptyName   = "ERR lock name must not be empty"
)

// WrongArity is Redis's error for a wrong number of arguments.
func WrongArity(cmd string) string {
	return "ERR wrong number of arguments for '" + cmd + "' command"
}

// UnknownCommand is Redis's error for a command it does not know.
func UnknownCommand(name string, args [][]byte) string {
	s := "ERR unknown command '" + printable(name, 128) + "', with args beginning with:"
	for i, a := range args {
		if i == 8 {
			break
		}
		s += " '" + printable(string(a), 128) + "'"
	}
	return s
}

// UnknownSubcommand is Redis's error for a subcommand it does not know.
func UnknownSubcommand(cmd, sub string) string {
	return "ERR unknown subcommand '" + printable(sub, 128) + "'. Try " + cmd + " HELP."
}

// SizeMismatch reports a request for another size than the lock's.
func SizeMismatch(name string, have, want uint32) string {
	return "SIZEMISMATCH lock '" + printable(name, 128) + "' has size " +
		strconv.FormatUint(uint64(have), 10) + ", requested " + strconv.FormatUint(uint64(want), 10)
}

// Limit reports a server limit that a request hit.
func Limit(what string) string { return "LIMIT " + what }

// Printable is what error replies show of a client-supplied string: one
// line, control bytes as '?', at most 128 bytes.
func Printable(s string) string { return printable(s, 128) }

// printable quotes nothing but keeps an error reply one readable line:
// control bytes become '?', and s is cut to at most n bytes.
func printable(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "..."
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}
