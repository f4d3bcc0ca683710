package main

import (
	"slices"
	"strings"
	"testing"
)

func TestHoistClientFlags(t *testing.T) {
	tests := []struct{ in, want string }{
		{"--addr h:1 locks", "locks --addr h:1"},
		{"--addr=h:1 --tls run --nonblock x -- echo --addr", "run --addr=h:1 --tls --nonblock x -- echo --addr"},
		{"--user u --password p unlock --force x", "unlock --user u --password p --force x"},
		{"locks --addr h:1", "locks --addr h:1"},
		{"server --listen 127.0.0.1:0", "server --listen 127.0.0.1:0"},
		{"--listen x server", "--listen x server"}, // not a client flag: kong reports it
		{"--addr h:1 server", "--addr h:1 server"}, // not a tool
		{"--addr", "--addr"},
		{"--addr a,b cluster status", "cluster status --addr a,b"},
		{"--addr a cluster add n4 h:1", "cluster add --addr a n4 h:1"},
	}
	for _, tt := range tests {
		got := strings.Join(hoistClientFlags(strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("hoist(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if in := strings.Fields("locks"); !slices.Equal(hoistClientFlags(in), in) {
		t.Error("plain args changed")
	}
}
