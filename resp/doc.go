// Package resp holds the wire helpers shared by the relock server and its
// tools: scanning of command options (`TTL ms`, `WAIT ms`, …), reply
// encoding for both RESP2 and RESP3 (redcon itself writes only RESP2), and
// the error replies with their codes.
//
// It knows nothing of locks or connections; it turns bytes into values and
// values into bytes.
package resp
