package commands

import (
	"path"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"a*", "abc", true},
		{"a*", "bac", false},
		{"*c", "abc", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a[bx]c", "axc", true},
		{"a[^bx]c", "axc", false},
		{"a[^bx]c", "ayc", true},
		{"a[a-c]d", "abd", true},
		{"a[a-c]d", "aed", false},
		{`a\*b`, "a*b", true},
		{`a\*b`, "axb", false},
		{"jobs:*:lock", "jobs:billing:lock", true},
		{"jobs:*:lock", "jobs:billing:unlock", false},
		{"*a*a*a*a*a*b", strings.Repeat("a", 60), false}, // no exponential blow-up
		{"[", "[", true},
		{"a[", "a[", true},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// FuzzGlobMatch compares globMatch with path.Match on patterns and names
// where both define the same language (no '/', no '\\', no '[' or ']').
func FuzzGlobMatch(f *testing.F) {
	f.Add("a*b?c", "axxbyc")
	f.Add("*", "")
	f.Add("??*", "ab")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		got := globMatch(pattern, s) // must never panic or hang
		if strings.ContainsAny(pattern+s, "/\\[]") {
			return
		}
		want, err := path.Match(pattern, s)
		if err == nil && !strings.ContainsRune(s, 0) && isASCII(pattern+s) && got != want {
			t.Fatalf("globMatch(%q, %q) = %v, path.Match = %v", pattern, s, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestGlobPrefix_EveryMatchStartsWithIt(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"*", ""},
		{"billing:*", "billing:"},
		{"billing:?x", "billing:"},
		{"a[bc]*", "a"},
		{`a\*b*`, "a*b"},
		{`a\`, "a"},
		{"exact", "exact"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := globPrefix(tt.pattern); got != tt.want {
			t.Errorf("globPrefix(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
	// Whatever matches a pattern starts with its prefix.
	for _, tt := range tests {
		for _, s := range []string{"billing:1x", "abc", "a*bz", `a\`, "exact", "", "zzz"} {
			if globMatch(tt.pattern, s) && !strings.HasPrefix(s, globPrefix(tt.pattern)) {
				t.Errorf("globMatch(%q, %q) but %q lacks the prefix %q", tt.pattern, s, s, globPrefix(tt.pattern))
			}
		}
	}
}
