package locktable

import "testing"

// FuzzParseKey: whatever parses prints back to exactly the same bytes (a
// key has one text form), and every key's text form parses back to it.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte("1732712345678901-9f3c2b7a01d4e5f6"), uint64(1), uint64(2))
	f.Add([]byte("0-0000000000000000"), uint64(0), uint64(0))
	f.Add([]byte("18446744073709551615-ffffffffffffffff"), ^uint64(0), ^uint64(0))
	f.Fuzz(func(t *testing.T, text []byte, fence, rnd uint64) {
		if k, err := ParseKey(text); err == nil && k.String() != string(text) {
			t.Fatalf("ParseKey(%q) = %v, prints as %q", text, k, k.String())
		}
		k := Key{Fence: fence, Rand: rnd}
		if fence == 0 {
			return // fence 0 is never issued; its text form has a leading zero
		}
		got, err := ParseKey([]byte(k.String()))
		if err != nil || got != k {
			t.Fatalf("ParseKey(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	})
}
