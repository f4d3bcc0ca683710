package resp

import (
	"bytes"
	"strconv"
	"testing"
)

func args(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func TestScanOptions(t *testing.T) {
	all := OptTTL | OptWait | OptSize | OptOwner | OptDetach
	tests := []struct {
		name    string
		in      []string
		allowed Opt
		want    Options
		wantErr string
	}{
		{"none", nil, all, Options{}, ""},
		{"ttl", []string{"TTL", "500"}, all, Options{TTL: 500, Has: OptTTL}, ""},
		{"lower case keywords", []string{"ttl", "5", "wait", "0", "size", "3"}, all, Options{TTL: 5, Wait: 0, Size: 3, Has: OptTTL | OptWait | OptSize}, ""},
		{"owner and detach", []string{"OWNER", "me", "DETACH"}, all, Options{Owner: []byte("me"), Detach: true, Has: OptOwner | OptDetach}, ""},
		{"repeated", []string{"TTL", "1", "TTL", "2"}, all, Options{}, ErrSyntax},
		{"repeated detach", []string{"DETACH", "detach"}, all, Options{}, ErrSyntax},
		{"unknown keyword", []string{"FOO", "1"}, all, Options{}, ErrSyntax},
		{"not allowed", []string{"WAIT", "1"}, all &^ OptWait, Options{}, ErrSyntax},
		{"missing value", []string{"TTL"}, all, Options{}, ErrSyntax},
		{"not an integer", []string{"TTL", "x"}, all, Options{}, ErrNotInteger},
		{"plus sign", []string{"TTL", "+5"}, all, Options{}, ErrNotInteger},
		{"overflow", []string{"TTL", "99999999999999999999"}, all, Options{}, ErrNotInteger},
		{"ttl zero", []string{"TTL", "0"}, all, Options{}, "ERR TTL must be between 1 and 3153600000000 ms"},
		{"ttl negative", []string{"TTL", "-1"}, all, Options{}, "ERR TTL must be between 1 and 3153600000000 ms"},
		{"wait negative", []string{"WAIT", "-1"}, all, Options{}, "ERR WAIT must be between 0 and 3153600000000 ms"},
		{"size zero", []string{"SIZE", "0"}, all, Options{}, "ERR SIZE must be between 1 and 1000000"},
		{"size too big", []string{"SIZE", "1000001"}, all, Options{}, "ERR SIZE must be between 1 and 1000000"},
		{"empty owner", []string{"OWNER", ""}, all, Options{}, "ERR OWNER must not be empty"},
		{"lockdelay and shared", []string{"lockdelay", "60000", "SHARED"}, all | OptLockDelay | OptShared,
			Options{LockDelay: 60000, Shared: true, Has: OptLockDelay | OptShared}, ""},
		{"lockdelay zero", []string{"LOCKDELAY", "0"}, OptLockDelay, Options{Has: OptLockDelay}, ""},
		{"lockdelay too long", []string{"LOCKDELAY", "60001"}, OptLockDelay, Options{}, "ERR LOCKDELAY must be between 0 and 60000 ms"},
		{"repeated shared", []string{"SHARED", "SHARED"}, OptShared, Options{}, ErrSyntax},
		{"shared not allowed", []string{"SHARED"}, all, Options{}, ErrSyntax},
		{"count", []string{"COUNT", "10", "MATCH", "a*", "AFTER", "b"}, OptCount | OptMatch | OptAfter,
			Options{Count: 10, Match: []byte("a*"), After: []byte("b"), Has: OptCount | OptMatch | OptAfter}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ScanOptions(args(tt.in...), tt.allowed)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if got.TTL != tt.want.TTL || got.Wait != tt.want.Wait || got.Size != tt.want.Size ||
				got.Count != tt.want.Count || got.Detach != tt.want.Detach || got.Has != tt.want.Has ||
				got.LockDelay != tt.want.LockDelay || got.Shared != tt.want.Shared ||
				!bytes.Equal(got.Owner, tt.want.Owner) || !bytes.Equal(got.Match, tt.want.Match) ||
				!bytes.Equal(got.After, tt.want.After) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseInt(t *testing.T) {
	good := map[string]int64{"0": 0, "1": 1, "-1": -1, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63}
	for in, want := range good {
		if got, ok := ParseInt([]byte(in)); !ok || got != want {
			t.Errorf("ParseInt(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-", "+1", " 1", "1 ", "01", "9223372036854775808", "-9223372036854775809", "1e3", "0x10"} {
		if got, ok := ParseInt([]byte(in)); ok {
			t.Errorf("ParseInt(%q) = %d, ok; want error", in, got)
		}
	}
}

// FuzzParseInt checks ParseInt against strconv: whatever it accepts,
// strconv accepts with the same value.
func FuzzParseInt(f *testing.F) {
	for _, s := range []string{"0", "-1", "123", "9223372036854775807", "-9223372036854775808", "01", "+1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseInt([]byte(s))
		want, err := strconv.ParseInt(s, 10, 64)
		if ok && (err != nil || got != want) {
			t.Fatalf("ParseInt(%q) = %d, strconv: %d, %v", s, got, want, err)
		}
		if !ok && err == nil && strconv.FormatInt(want, 10) == s {
			t.Fatalf("ParseInt(%q) rejected a canonical integer", s)
		}
	})
}

// FuzzScanOptions checks that scanning never panics, and that what it
// accepts is in range and only uses allowed options.
func FuzzScanOptions(f *testing.F) {
	f.Add([]byte("TTL\x00500\x00WAIT\x000"), uint16(0xff))
	f.Add([]byte("SIZE\x003\x00OWNER\x00me\x00DETACH"), uint16(0x1f))
	f.Add([]byte("MATCH\x00a*\x00COUNT\x0010"), uint16(0xe0))
	f.Fuzz(func(t *testing.T, raw []byte, allowed uint16) {
		parts := bytes.Split(raw, []byte{0})
		o, err := ScanOptions(parts, Opt(allowed))
		if err != nil {
			return
		}
		if o.Has&^Opt(allowed) != 0 {
			t.Fatalf("accepted options %b outside allowed %b", o.Has, allowed)
		}
		if o.Has&OptTTL != 0 && (o.TTL < 1 || o.TTL > MaxMillis) ||
			o.Has&OptSize != 0 && (o.Size < 1 || o.Size > MaxSize) ||
			o.Has&OptCount != 0 && (o.Count < 1 || o.Count > MaxCount) ||
			o.Has&OptWait != 0 && (o.Wait < 0 || o.Wait > MaxMillis) {
			t.Fatalf("accepted out-of-range options %+v", o)
		}
	})
}
