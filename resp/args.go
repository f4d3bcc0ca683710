package resp

// Opt is a set of option keywords a command accepts.
type Opt uint16

const (
	OptTTL       Opt = 1 << iota // TTL ms (≥ 1)
	OptWait                      // WAIT ms (≥ 0)
	OptSize                      // SIZE n (1 to MaxSize)
	OptOwner                     // OWNER id (non-empty)
	OptDetach                    // DETACH
	OptMatch                     // MATCH pattern
	OptCount                     // COUNT n (1 to MaxCount)
	OptAfter                     // AFTER name
	OptLockDelay                 // LOCKDELAY ms (0 to MaxLockDelay)
	OptShared                    // SHARED
)

// Bounds of numeric options.
const (
	MaxSize  = 1_000_000
	MaxCount = 100_000
	// MaxMillis bounds TTL and WAIT so that ms→ns never overflows (~292
	// years in ns is the int64 limit; 100 years is plenty).
	MaxMillis = 100 * 365 * 24 * 3600 * 1000
	// MaxLockDelay bounds LOCKDELAY, in ms (a minute, as Consul's).
	MaxLockDelay = 60_000
)

// Options are the scanned options of one command. A Has* flag tells
// whether the option was given.
type Options struct {
	TTL       int64 // ms
	Wait      int64 // ms
	Size      int64
	Owner     []byte
	Match     []byte
	Count     int64
	After     []byte
	LockDelay int64 // ms
	Detach    bool
	Shared    bool
	Has       Opt // the options present
}

// ArgError is an argument error with its RESP reply text.
type ArgError struct{ Msg string }

func (e *ArgError) Error() string { return e.Msg }

func argErr(msg string) error { return &ArgError{Msg: msg} }

// ScanOptions reads keyword options from args (the arguments after the
// positional ones). Keywords are case-insensitive. An unknown keyword, a
// keyword not in allowed, a repeated option or a missing value is a syntax
// error; a value that is not an integer in range gets Redis's integer
// error or a range error naming the option.
func ScanOptions(args [][]byte, allowed Opt) (Options, error) {
	var o Options
	for i := 0; i < len(args); i++ {
		opt := keyword(args[i])
		if opt == 0 || allowed&opt == 0 || o.Has&opt != 0 {
			return Options{}, argErr(ErrSyntax)
		}
		o.Has |= opt
		if opt == OptDetach || opt == OptShared {
			o.Detach = o.Detach || opt == OptDetach
			o.Shared = o.Shared || opt == OptShared
			continue
		}
		if i+1 >= len(args) {
			return Options{}, argErr(ErrSyntax)
		}
		i++
		v := args[i]
		var err error
		switch opt {
		case OptTTL:
			o.TTL, err = intIn(v, 1, MaxMillis, "ERR TTL must be between 1 and 3153600000000 ms")
		case OptWait:
			o.Wait, err = intIn(v, 0, MaxMillis, "ERR WAIT must be between 0 and 3153600000000 ms")
		case OptSize:
			o.Size, err = intIn(v, 1, MaxSize, "ERR SIZE must be between 1 and 1000000")
		case OptLockDelay:
			o.LockDelay, err = intIn(v, 0, MaxLockDelay, "ERR LOCKDELAY must be between 0 and 60000 ms")
		case OptCount:
			o.Count, err = intIn(v, 1, MaxCount, "ERR COUNT must be between 1 and 100000")
		case OptOwner:
			if len(v) == 0 {
				err = argErr("ERR OWNER must not be empty")
			}
			o.Owner = v
		case OptMatch:
			o.Match = v
		case OptAfter:
			o.After = v
		}
		if err != nil {
			return Options{}, err
		}
	}
	return o, nil
}

func intIn(v []byte, lo, hi int64, rangeMsg string) (int64, error) {
	n, ok := ParseInt(v)
	if !ok {
		return 0, argErr(ErrNotInteger)
	}
	if n < lo || n > hi {
		return 0, argErr(rangeMsg)
	}
	return n, nil
}

// keyword maps an option keyword, in any case, to its Opt (0: none).
func keyword(b []byte) Opt {
	var buf [9]byte
	if len(b) > len(buf) {
		return 0
	}
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(b)]) {
	case "TTL":
		return OptTTL
	case "WAIT":
		return OptWait
	case "SIZE":
		return OptSize
	case "OWNER":
		return OptOwner
	case "DETACH":
		return OptDetach
	case "MATCH":
		return OptMatch
	case "COUNT":
		return OptCount
	case "AFTER":
		return OptAfter
	case "LOCKDELAY":
		return OptLockDelay
	case "SHARED":
		return OptShared
	}
	return 0
}

// ParseInt parses a decimal int64 as Redis does: an optional '-', digits,
// no '+', no spaces, no leading zeros (except "0" itself), no overflow.
func ParseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	if len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if u > (1<<63-d)/10 {
			return 0, false
		}
		u = u*10 + d
	}
	if !neg && u > 1<<63-1 {
		return 0, false
	}
	if neg {
		return -int64(u), true
	}
	return int64(u), true
}

// EqualFold reports whether b equals the upper-case ASCII keyword kw in
// any case, without allocating.
func EqualFold(b []byte, kw string) bool {
	if len(b) != len(kw) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != kw[i] {
			return false
		}
	}
	return true
}
