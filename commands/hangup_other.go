//go:build !linux

package commands

import (
	"errors"
	"syscall"
)

// canAwaitHangup: elsewhere a close behind unread input is seen once the
// input before it is read (see hangup_linux.go).
const canAwaitHangup = false

func awaitHangup(rc syscall.RawConn) error {
	return errors.New("awaitHangup: not on this system")
}
