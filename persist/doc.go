// Package persist is relock's durable store: it keeps every hold and the
// fence high-water mark in a bbolt file, commits the lock table's change
// journal under an fsync policy (always, everysec, no), and restores the
// table after a restart.
//
// It reads from the lock table (journal, snapshot) and writes to it only
// through Restore; it knows nothing of connections or RESP.
package persist
