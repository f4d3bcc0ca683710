package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are stamped by release builds (make release:
// -ldflags "-X main.version=v0.1.0 -X main.commit=…"). Otherwise the
// version comes from the build info (the module version of `go install
// …@v0.1.0`, else "devel") and the commit from its vcs.revision, which the
// go command records when it builds in a git checkout (not a linked git
// worktree, where .git is a file: hence main.commit).
var version, commit string

// buildVersion is what one binary knows about where it came from.
type buildVersion struct {
	Version  string // v0.1.0, a Go pseudo-version, or "devel"
	Commit   string // vcs.revision; "" when the build did not stamp it
	Modified bool   // vcs.modified: built from a tree with uncommitted changes
	Go       string // the Go toolchain that built it
}

// readBuildVersion reads the version stamped with -ldflags -X, falling back
// to the build info that the Go toolchain records in every binary.
func readBuildVersion() buildVersion {
	v := buildVersion{Version: version, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Commit == "" {
		v.Commit = commit
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	return v
}

// String is the line `relock --version` prints, e.g.
// "relock v0.1.0 (commit 1a2b3c4d5e6f, go1.26.8, linux/amd64)".
func (v buildVersion) String() string {
	var parts []string
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if v.Modified {
			c += ", modified"
		}
		parts = append(parts, "commit "+c)
	}
	parts = append(parts, v.Go, runtime.GOOS+"/"+runtime.GOARCH)
	return fmt.Sprintf("relock %s (%s)", v.Version, strings.Join(parts, ", "))
}

// Protocol is the version the server reports in INFO (relock_version) and
// HELLO: the release without its "v", or 0.0.0-devel for a development
// build.
func (v buildVersion) Protocol() string {
	if v.Version == "devel" {
		return "0.0.0-devel"
	}
	return strings.TrimPrefix(v.Version, "v")
}
