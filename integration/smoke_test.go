package integration

import (
	"testing"
	"time"
)

func TestServer_LockUnlockRoundTrip(t *testing.T) {
	srv := startServer(t)
	c := srv.client(t)
	ctx := ctxFor(t, 10*time.Second)
	key, err := c.Do(ctx, "LOCK", "smoke", "TTL", 5000).Text()
	if err != nil {
		t.Fatalf("LOCK: %v", err)
	}
	got, err := c.Do(ctx, "UNLOCK", "smoke", key).Int()
	if err != nil || got != 1 {
		t.Fatalf("UNLOCK = %v, %v; want 1", got, err)
	}
}
