package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/relock/relock/replica"
)

// TestRaftTLS_ProtectedMode: a --raft-listen other machines can reach is
// refused without --raft-tls-* unless --raft-insecure; loopback needs
// neither. Nothing listens here: the check comes before the transport.
func TestRaftTLS_ProtectedMode(t *testing.T) {
	tests := []struct {
		listen   string
		insecure bool
		wantErr  string // "": allowed (without TLS)
	}{
		{"127.0.0.1:7000", false, ""},
		{"[::1]:7000", false, ""},
		{"localhost:7000", false, ""},
		{"0.0.0.0:7000", false, "protected mode"},
		{"[::]:7000", false, "protected mode"},
		{":7000", false, "protected mode"},
		{"10.0.0.5:7000", false, "protected mode"},
		{"relock-1.internal:7000", false, "protected mode"},
		{"10.0.0.5:7000", true, ""},
		{"0.0.0.0:7000", true, ""},
	}
	for _, tt := range tests {
		f := &clusterFlags{RaftListen: tt.listen, RaftInsecure: tt.insecure}
		p, err := f.raftTLS()
		if p != nil {
			t.Errorf("%s: TLS without --raft-tls-*", tt.listen)
		}
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("--raft-listen %s (insecure %v): %v, want allowed", tt.listen, tt.insecure, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("--raft-listen %s without TLS was allowed", tt.listen)
			continue
		}
		for _, want := range []string{tt.wantErr, tt.listen, "--raft-tls-cert", "--raft-tls-key", "--raft-tls-ca", "--raft-insecure"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("--raft-listen %s: the error does not mention %q: %v", tt.listen, want, err)
			}
		}
	}
}

func TestRaftTLS_FlagsGoTogether(t *testing.T) {
	for _, f := range []clusterFlags{
		{RaftListen: "127.0.0.1:7000", RaftTLSCert: "c.pem"},
		{RaftListen: "127.0.0.1:7000", RaftTLSCert: "c.pem", RaftTLSKey: "k.pem"},
		{RaftListen: "0.0.0.0:7000", RaftTLSCA: "ca.pem", RaftInsecure: true},
	} {
		if _, err := f.raftTLS(); err == nil || !strings.Contains(err.Error(), "go together") {
			t.Errorf("%+v: %v, want the three flags asked for together", f, err)
		}
	}
	f := clusterFlags{RaftListen: "0.0.0.0:7000", RaftTLSCert: "/nonexistent/c.pem", RaftTLSKey: "/nonexistent/k.pem", RaftTLSCA: "/nonexistent/ca.pem"}
	if _, err := f.raftTLS(); err == nil || strings.Contains(err.Error(), "protected mode") {
		t.Errorf("unreadable --raft-tls-* files: %v, want a file error", err)
	}
}

// TestRaftTLS_FlagsFromEnvironmentAndConfigFile: like every flag, the Raft
// TLS flags come from the command line, RELOCK_* variables or the config
// file.
func TestRaftTLS_FlagsFromEnvironmentAndConfigFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "relock.yaml")
	if err := os.WriteFile(cfg, []byte("raft-tls-ca: /etc/relock/raft-ca.pem\nraft_insecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RELOCK_RAFT_TLS_KEY", "/etc/relock/raft-key.pem")
	var root cli
	parser, err := kong.New(&root, kong.DefaultEnvars("RELOCK"), kong.Configuration(configLoader))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"server", "--config", cfg, "--raft-tls-cert", "/etc/relock/raft.pem"}); err != nil {
		t.Fatal(err)
	}
	got := root.Server.clusterFlags
	if got.RaftTLSCert != "/etc/relock/raft.pem" || got.RaftTLSKey != "/etc/relock/raft-key.pem" ||
		got.RaftTLSCA != "/etc/relock/raft-ca.pem" || !got.RaftInsecure {
		t.Fatalf("parsed %+v", got)
	}
}

// TestRaftTimeouts_DefaultsAreReplicas: the flags' defaults are the ones
// replica documents and measured.
func TestRaftTimeouts_DefaultsAreReplicas(t *testing.T) {
	var root cli
	parser, err := kong.New(&root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"server"}); err != nil {
		t.Fatal(err)
	}
	f := root.Server.clusterFlags
	if f.RaftHeartbeatTimeout != replica.DefaultHeartbeatTimeout || f.RaftElectionTimeout != replica.DefaultElectionTimeout ||
		f.RaftLeaseTimeout != replica.DefaultLeaderLeaseTimeout {
		t.Fatalf("defaults %v/%v/%v, replica's %v/%v/%v", f.RaftHeartbeatTimeout, f.RaftElectionTimeout, f.RaftLeaseTimeout,
			replica.DefaultHeartbeatTimeout, replica.DefaultElectionTimeout, replica.DefaultLeaderLeaseTimeout)
	}
	if f.RaftMaxInflight != replica.DefaultMaxInflight {
		t.Fatalf("--raft-max-inflight defaults to %d, replica's to %d", f.RaftMaxInflight, replica.DefaultMaxInflight)
	}
	if err := f.timing(); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
}

func TestRaftTimeouts_InconsistentAreRefused(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		hb, el, lease time.Duration
		inflight      int
		want          string
	}{
		{1 * ms, 400 * ms, 1 * ms, 1, "--raft-heartbeat-timeout"},
		{400 * ms, 300 * ms, 200 * ms, 1, "--raft-election-timeout 300ms is shorter"},
		{400 * ms, 400 * ms, 500 * ms, 1, "--raft-lease-timeout 500ms is longer"},
		{400 * ms, 400 * ms, 200 * ms, 0, "--raft-max-inflight 0: 1 to 64"},
		{400 * ms, 400 * ms, 200 * ms, 65, "--raft-max-inflight 65: 1 to 64"},
	}
	for _, tt := range tests {
		f := clusterFlags{RaftHeartbeatTimeout: tt.hb, RaftElectionTimeout: tt.el, RaftLeaseTimeout: tt.lease, RaftMaxInflight: tt.inflight}
		if err := f.timing(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v/%v/%v/%d: %v, want %q", tt.hb, tt.el, tt.lease, tt.inflight, err, tt.want)
		}
	}
}
