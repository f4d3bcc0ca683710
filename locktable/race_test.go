//go:build race

package locktable

// raceEnabled is true when the tests run under the race detector, which
// slows single-threaded code about tenfold; long randomized tests use it to
// shorten themselves there (they have no concurrency for it to check).
const raceEnabled = true
