package commands

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// parseArgon2 parses the PHC string form of an argon2id hash:
// $argon2id$v=19$m=65536,t=3,p=2$<salt b64>$<hash b64>.
func parseArgon2(s string) (argon2Params, []byte, []byte, error) {
	var p argon2Params
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v=19" {
		return p, nil, nil, errors.New("want $argon2id$v=19$m=..,t=..,p=..$salt$hash")
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil {
			return p, nil, nil, errors.New("bad parameters " + parts[3])
		}
		switch k {
		case "m":
			p.m = uint32(n)
		case "t":
			p.t = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, errors.New("p too large")
			}
			p.p = uint8(n)
		}
	}
	if p.m == 0 || p.t == 0 || p.p == 0 {
		return p, nil, nil, errors.New("m, t and p must be set")
	}
	if p.m > maxArgon2Memory || p.t > maxArgon2Time || p.p > maxArgon2Threads {
		return p, nil, nil, errors.New("parameters too large (at most m=1048576, t=16, p=16)")
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, err
	}
	hash, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(hash) < 16 {
		return p, nil, nil, errors.New("bad hash")
	}
	return p, salt, hash, nil
}
