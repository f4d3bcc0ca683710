package persist

import "golang.org/x/sys/unix"

// sync makes the log durable. held keeps the caller's thread and Go
// scheduler slot (P) through the fdatasync, as an event loop blocks in
// Redis's fsync: otherwise the runtime hands the P to another thread after
// 20 µs and the caller takes it back afterwards — two thread wakeups and a
// hot monitor per commit, a third of the server's CPU at one connection.
// Only for callers that have nothing else to let run meanwhile.
func (w *wal) sync(held bool) error {
	if !held {
		return unix.Fdatasync(int(w.f.Fd()))
	}
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_FDATASYNC, w.f.Fd(), 0, 0)
		if errno != unix.EINTR {
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
}
