//go:build !unix

package replica

import "time"

// lockDir does nothing where flock is not available.
func lockDir(path string, wait time.Duration) (func(), error) { return func() {}, nil }
