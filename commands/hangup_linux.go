package commands

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// canAwaitHangup: this system can see a peer's close behind unread input.
const canAwaitHangup = true

// awaitHangup blocks until the peer of the socket rc closes or resets it
// (POLLRDHUP, POLLHUP, POLLERR), without reading: a waiting connection
// whose unrun input fills its buffer stops being read, and the close
// would otherwise sit behind that input unseen. It parks in Go's
// netpoller, woken by each readiness edge; it returns nil on a hang-up,
// or the error that ended the wait (a read deadline: cancelled).
func awaitHangup(rc syscall.RawConn) error {
	return rc.Read(func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(p, 0)
		return err == nil && n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
	})
}
