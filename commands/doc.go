// Package commands is the relock server: it listens (TCP, unix socket),
// keeps one session per connection, looks commands up in its command table
// and translates between RESP and the lock table (package locktable),
// turning the table's sentinel errors into RESP error codes and its grant
// events into replies to waiting connections.
//
// Connections are served by redcon's batched loop until a LOCK has to wait;
// that connection is then detached and served by its own loop (wait.go),
// which keeps reading so that a disconnect is seen at once while the LOCK
// waits, and answers pipelined commands in order after it.
package commands
