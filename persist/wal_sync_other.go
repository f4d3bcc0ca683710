//go:build !linux

package persist

// sync makes the log durable: File.Sync, which is fcntl F_FULLFSYNC on
// macOS (its fsync does not reach the disk). held is Linux's (see
// wal_sync_linux.go).
func (w *wal) sync(held bool) error { return w.f.Sync() }
