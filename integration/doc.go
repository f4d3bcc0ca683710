// Package integration holds relock's end-to-end tests: they build the
// relock binary, start it on a loopback port and drive it over TCP with
// real clients (go-redis, redis-cli, raw RESP, child processes).
//
// Run them with `make integration` (or `go test ./integration/`). Tests that
// need an external tool (redis-cli) skip with a message when it is missing,
// except under CI=true, where a missing tool is a failure.
package integration
