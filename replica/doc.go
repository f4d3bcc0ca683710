// Package replica makes relock's lock table a Raft state machine
// (github.com/hashicorp/raft): every change — a session opening or
// closing, an acquisition, a release, a renewal, an expiry, a leader
// change — is a log entry, and FSM applies entries to a locktable.Table in
// log order on every node.
//
// Apply is deterministic: an entry carries everything it depends on — the
// time (stamped by the leader that proposed it) and the random part of a
// key (drawn by the leader before the append) — so every node reaches the
// same state and returns the same results, which the tests check byte for
// byte on snapshots. Snapshots hold the whole table (locktable.State):
// sessions, holds with their bindings, waiters in queue order, the fence.
//
// Node runs one member on a caller-given transport; in production that is
// raft's network transport over TLSStreamLayer (tls.go): mutual TLS on
// every Raft connection, members identified by one CA, since whoever can
// append to the log can release every lock.
//
// It may import locktable and hashicorp/raft; it knows nothing of RESP or
// connections. Wiring it into the server (leader-only lock commands,
// -MOVED redirects, failover adoption) is the commands layer's job.
package replica
