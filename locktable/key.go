package locktable

import (
	"errors"
	"strconv"
)

// Key is the secret proof of ownership of a hold. Its text form is
// "<fence>-<16 lowercase hex>", e.g. "1732712345678901-9f3c2b7a01d4e5f6":
// the decimal prefix is the fence, the rest 64 random bits chosen by the
// caller of the acquiring operation.
type Key struct {
	Fence uint64
	Rand  uint64
}

// IsZero reports whether k is the zero Key (no key).
func (k Key) IsZero() bool { return k.Fence == 0 && k.Rand == 0 }

// String returns the key's text form.
func (k Key) String() string { return string(k.Append(nil)) }

// Append appends the key's text form to b.
func (k Key) Append(b []byte) []byte {
	b = strconv.AppendUint(b, k.Fence, 10)
	b = append(b, '-')
	const hex = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hex[(k.Rand>>uint(shift))&0xf])
	}
	return b
}

var errBadKey = errors.New("locktable: malformed key")

// ParseKey parses a key's text form. Anything else, including upper-case hex
// or a fence with a leading zero, is an error: a key is compared exactly.
func ParseKey(s []byte) (Key, error) {
	dash := -1
	for i, c := range s {
		if c == '-' {
			dash = i
			break
		}
	}
	if dash <= 0 || len(s)-dash-1 != 16 || dash > 20 || (s[0] == '0') {
		return Key{}, errBadKey
	}
	var k Key
	for _, c := range s[:dash] {
		if c < '0' || c > '9' {
			return Key{}, errBadKey
		}
		d := uint64(c - '0')
		if k.Fence > (^uint64(0)-d)/10 {
			return Key{}, errBadKey
		}
		k.Fence = k.Fence*10 + d
	}
	for _, c := range s[dash+1:] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return Key{}, errBadKey
		}
		k.Rand = k.Rand<<4 | uint64(d)
	}
	return k, nil
}
