// Package commands is the relock server: it listens (TCP, unix socket),
// keeps one session per connection, looks commands up in its command table
// and translates between RESP and the lock table, turning the table's
// sentinel errors into RESP error codes and its grant events into replies
// to waiting connections.
//
// A connection's life is written once (conn.go): bytes in, framed and
// parsed (package resp), commands run, a command that cannot answer at
// once waits for a completion (a grant, a WAIT running out, a password
// check, the next step of a long LOCKS, a Raft proposal run off the
// owner), replies written at the end of the owner's round after the
// round's changes are committed. Two thin drivers move the bytes: epoll
// event loops (netloop_linux.go: plain TCP and unix sockets on Linux) and
// a goroutine per connection (goconn.go: TLS, other systems, --io
// goroutine). Changes of lock state go through an engine (engine.go): the
// local table with its store's group commit, or the Raft cluster (package
// replica, behind its own small API). See docs/architecture.md.
//
// commands may import locktable, resp, persist and replica; it never asks
// which transport or which engine serves a connection.
package commands
