package commands

// globMatch reports whether s matches the Redis-style glob pattern: '*' any
// run, '?' any byte, '[abc]', '[^a-z]' classes, '\x' a literal x. It works
// on bytes (names are binary-safe) and runs in O(len(pattern)·len(s)).
func globMatch(pattern, s string) bool {
	// Iterative matching with backtracking to the last '*' only, which is
	// enough for globs and cannot blow up.
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				px++
				sx++
				continue
			case '[':
				if n, ok := matchClass(pattern[px:], s[sx]); n > 0 {
					if ok {
						px += n
						sx++
						continue
					}
				} else if s[sx] == '[' { // unterminated: a literal '['
					px++
					sx++
					continue
				}
			case '\\':
				if px+1 < len(pattern) {
					if pattern[px+1] == s[sx] {
						px += 2
						sx++
						continue
					}
				} else if s[sx] == '\\' {
					px++
					sx++
					continue
				}
			default:
				if c == s[sx] {
					px++
					sx++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		px, sx = starP+1, starS
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// matchClass matches c against the class at the start of p ("[...]"). It
// returns the class's length in p (0 if unterminated) and whether c is in it.
func matchClass(p string, c byte) (int, bool) {
	i := 1
	neg := false
	if i < len(p) && p[i] == '^' {
		neg = true
		i++
	}
	match := false
	first := true
	for i < len(p) && (p[i] != ']' || first) {
		first = false
		lo := p[i]
		if lo == '\\' && i+1 < len(p) {
			i++
			lo = p[i]
		}
		hi := lo
		if i+2 < len(p) && p[i+1] == '-' && p[i+2] != ']' {
			hi = p[i+2]
			if hi == '\\' && i+3 < len(p) {
				i++
				hi = p[i+2]
			}
			i += 2
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if c >= lo && c <= hi {
			match = true
		}
		i++
	}
	if i >= len(p) {
		return 0, false
	}
	return i + 1, match != neg
}

// globPrefix returns a literal prefix of every string pattern matches, so
// that LOCKS can seek to it (locktable.Query.Prefix) rather than examine
// every name: the pattern's bytes up to its first '*', '?' or '[', with
// backslash escapes resolved. A shorter prefix than the longest is never
// wrong, only slower.
func globPrefix(pattern string) string {
	var b []byte
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*', '?', '[':
			return string(b)
		case '\\':
			if i+1 == len(pattern) {
				return string(b) // a trailing '\' matches itself; stop short anyway
			}
			i++
			b = append(b, pattern[i])
		default:
			b = append(b, c)
		}
	}
	return string(b)
}
