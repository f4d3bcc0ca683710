package commands

import "github.com/relock/relock/resp"

// Bounds on what one request may be. relock's requests are small (a name
// of at most max-name-len bytes, a key, a few options), so these stop a
// client from making the server buffer or allocate more than a request
// can need — a 512 MB bulk header is refused when it is read, before any
// of its body arrives.
const (
	defaultMaxArgs = 1024
	defaultMaxBulk = 64 << 10 // bytes in one argument
)

// Before a connection authenticates (when authentication is required) it
// may only send AUTH, HELLO, PING, QUIT and RESET: small requests. As
// Redis bounds unauthenticated requests, so does relock: one request of
// an unauthenticated connection may be at most preAuthRequest bytes (its
// buffered input no more), and its unsent output at most preAuthOutput
// bytes before its requests stop being run. 150 idle attackers then cost
// a few MiB, not hundreds.
const (
	preAuthRequest = 16 << 10
	preAuthOutput  = 16 << 10
)

// errPreAuthTooLarge is the protocol error of an unauthenticated request
// over preAuthRequest.
const errPreAuthTooLarge = "unauthenticated request too large (authenticate first)"

// feedAs is FrameScanner.Feed for a connection that has authenticated or not: an
// unauthenticated one's request may be at most preAuthRequest bytes.
// Requests are checked as they are read, so those pipelined right behind
// an AUTH are held to the bound too.
func feedAs(f *resp.FrameScanner, b []byte, authed bool) string {
	if msg := f.Feed(b); msg != "" {
		return msg
	}
	if !authed && f.Current() > preAuthRequest {
		return errPreAuthTooLarge
	}
	return ""
}
