package main

import (
	"slices"
	"strings"
	"testing"
)

func TestCheckLoopback_OnlyThisMachine(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6380", true},
		{"[::1]:6380", true},
		{"localhost:6380", true},
		{"/tmp/relock.sock", true},
		{"10.0.0.5:6380", false},
		{"relock.internal:6380", false},
		{"127.0.0.1:6380,127.0.0.1:6381", false},
	}
	for _, tt := range tests {
		err := checkLoopback(tt.addr)
		if got := err == nil; got != tt.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}

func TestStallPartialRequest_UnderTheRequestBound(t *testing.T) {
	req := stallPartialRequest()
	if got, limit := len(req), 1<<20; got >= limit || got < limit*3/4 {
		t.Errorf("partial request of %d bytes, want just under %d", got, limit)
	}
	if !strings.HasPrefix(string(req), "*16\r\n$65536\r\n") || strings.HasSuffix(string(req), "\r\n") {
		t.Errorf("partial request should announce 16 arguments and stop mid-argument")
	}
}

func TestStallLockName_SortsByTenantThenIndex(t *testing.T) {
	var names []string
	for i := range 1000 {
		names = append(names, stallLockName(i))
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	// Tenant t0 first, its locks in index order.
	if got, want := sorted[0], stallLockName(0); got != want {
		t.Errorf("first = %q, want %q", got, want)
	}
	if got, want := sorted[1], stallLockName(stallTenants); got != want {
		t.Errorf("second = %q, want %q", got, want)
	}
	if !strings.HasPrefix(stallLockName(stallMatchTenant), "bench:stall:t3:") {
		t.Errorf("lock %d is not in the MATCH tenant: %q", stallMatchTenant, stallLockName(stallMatchTenant))
	}
}
