package main

import (
	"strings"

	"github.com/alecthomas/kong"
)

// helpWithDefault is a flag's help text followed by its default and its
// environment variable: "… (default: 5s) ($RELOCK_RUN_KILL_GRACE)." kong
// shows a default only in place of a placeholder (--listen="127.0.0.1:6380"),
// so for a flag with a placeholder (--addr=ADDR, --kill-grace=D) the
// default is written out here.
func helpWithDefault(v *kong.Value) string {
	var notes []string
	if v.Tag.PlaceHolder != "" && v.Default != "" && !v.IsBool() {
		notes = append(notes, "(default: "+v.Default+")")
	}
	if len(v.Tag.Envs) > 0 && !kong.HasInterpolatedVar(v.OrigHelp, "env") {
		notes = append(notes, "($"+strings.Join(v.Tag.Envs, ", $")+")")
	}
	if len(notes) == 0 {
		return v.Help
	}
	suffix := strings.Join(notes, " ")
	switch {
	case v.Help == "":
		return suffix
	case strings.HasSuffix(v.Help, "."):
		return strings.TrimSuffix(v.Help, ".") + " " + suffix + "."
	default:
		return v.Help + " " + suffix
	}
}
