//go:build !linux

package main

// descendants is not known off Linux: the command's process group (when
// it has one) is what is signalled.
func descendants(pid int) []int { return nil }

// waitExited returns at once off Linux: cmd.Wait alone waits for the
// command (and reaps it).
func waitExited(pid int) {}
