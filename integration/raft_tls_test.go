package integration

import (
	"crypto/x509"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/replica"
)

// Mutual TLS on the Raft port (--raft-tls-*) and its protected mode.

// raftPeer writes a Raft member's certificate and key for cn: signed by
// the test CA, for both TLS server and client authentication (a member
// both accepts and dials), with no names (members are identified by the
// CA alone).
func (c *testCerts) raftPeer(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	tmpl := c.template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, key := c.sign(t, tmpl, c.ca, c.caKey)
	return c.writePEM(t, "raft-"+cn+".pem", "CERTIFICATE", der), c.writeKey(t, "raft-"+cn+"-key.pem", key)
}

// raftTLSArgs are the --raft-tls-* flags of a member named cn.
func (c *testCerts) raftTLSArgs(t testing.TB, cn string) []string {
	t.Helper()
	cert, key := c.raftPeer(t, cn)
	return []string{"--raft-tls-cert", cert, "--raft-tls-key", key, "--raft-tls-ca", c.caCert}
}

// TestCluster_RaftMutualTLS: three nodes with --raft-tls-* elect a leader
// and replicate a lock taken through it; a fourth joins with --join and
// catches up over TLS; a forged AppendEntries sent to each member's Raft
// port in plain TCP (the attack --raft-tls-* exists for) is dropped and
// logged, and changes neither the lock nor any member's term.
func TestCluster_RaftMutualTLS(t *testing.T) {
	t.Parallel()
	certs := makeTestCerts(t)
	c := startClusterWith(t, 3, func(nd *clusterNode) []string { return certs.raftTLSArgs(t, nd.id) })
	leader, took := c.waitLeader(c.nodes, 15*time.Second)
	t.Logf("leader %s elected over mutual TLS within %v", leader.id, took)
	for _, nd := range c.nodes {
		started := false
		for _, l := range nd.srv.Logs() {
			if l["msg"] == "raft node started" && l["raft_tls"] == true {
				started = true
			}
		}
		if !started {
			t.Errorf("%s did not log raft node started with raft_tls=true", nd.id)
		}
	}

	lc := leader.srv.client(t)
	key := mustKey(t, lc, "LOCK", "tls-job", "TTL", 60000, "DETACH")
	for _, nd := range c.nodes {
		eventually(t, 10*time.Second, func() bool {
			info, err := nd.info("locks")
			return err == nil && info["holds"] == "1"
		}, "%s never applied the hold", nd.id)
	}

	// A fourth node joins through a member's client port; the leader
	// replicates to it over its Raft port, with TLS.
	addrs := freeAddrs(t, 2)
	n4 := &clusterNode{id: "n4", addr: addrs[0], raftAddr: addrs[1]}
	n4.args = append([]string{"--listen", n4.addr, "--advertise", n4.addr, "--node-id", "n4",
		"--raft-listen", n4.raftAddr, "--raft-dir", filepath.Join(t.TempDir(), "n4"), "--join", c.nodes[0].addr},
		certs.raftTLSArgs(t, "n4")...)
	srv, err := launchServer(t, nil, n4.args...)
	if err != nil {
		t.Fatal(err)
	}
	n4.srv = srv
	c.nodes = append(c.nodes, n4) // stopped with the others
	eventually(t, 20*time.Second, func() bool {
		info, err := n4.info("locks", "replication")
		return err == nil && info["holds"] == "1" && info["raft_leader_addr"] == leader.addr
	}, "n4 did not catch up over TLS")

	// An intruder on the Raft ports, in plain TCP.
	intruder, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	forged, err := (&replica.Op{Kind: replica.OpForce, Now: time.Now().UnixNano(), Name: "tls-job"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	terms := map[string]uint64{}
	for _, nd := range c.nodes {
		info := nd.mustInfo(t, "replication")
		term, _ := strconv.ParseUint(info["raft_term"], 10, 64)
		last, _ := strconv.ParseUint(info["raft_last_log_index"], 10, 64)
		terms[nd.id] = term
		req := &raft.AppendEntriesRequest{
			RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(intruder.LocalAddr())},
			Term:              term + 100,
			PrevLogEntry:      last,
			PrevLogTerm:       term,
			Entries:           []*raft.Log{{Index: last + 1, Term: term + 100, Type: raft.LogCommand, Data: forged}},
			LeaderCommitIndex: last + 1,
		}
		var resp raft.AppendEntriesResponse
		if err := intruder.AppendEntries(raft.ServerID(nd.id), raft.ServerAddress(nd.raftAddr), req, &resp); err == nil {
			t.Errorf("a plain TCP AppendEntries to %s's Raft port got a reply: %+v", nd.id, resp)
		}
	}
	for _, nd := range c.nodes {
		eventually(t, 5*time.Second, func() bool {
			return strings.Contains(nd.srv.logText(), "raft connection refused")
		}, "%s did not log the refused connection", nd.id)
		info := nd.mustInfo(t, "replication", "locks")
		if term, _ := strconv.ParseUint(info["raft_term"], 10, 64); term >= terms[nd.id]+100 {
			t.Errorf("%s moved to the forged term %d", nd.id, term)
		}
		if info["holds"] != "1" {
			t.Errorf("%s has %s holds after the forgery, want 1", nd.id, info["holds"])
		}
	}
	if ttl, err := doBounded(lc, "CHECK", "tls-job", key).Int64(); err != nil || ttl <= 0 {
		t.Fatalf("CHECK on the leader after the forgery: %d, %v", ttl, err)
	}
	if err := doBounded(lc, "UNLOCK", "tls-job", key).Err(); err != nil {
		t.Fatalf("UNLOCK through the leader: %v", err)
	}
}

// TestRaft_ProtectedModeRefusesNonLoopbackListenWithoutTLS: a
// --raft-listen other machines could reach is refused at start, with the
// flags that fix it, unless --raft-insecure. The addresses are from
// TEST-NET (RFC 5737): nothing can be bound there, so nothing listens.
func TestRaft_ProtectedModeRefusesNonLoopbackListenWithoutTLS(t *testing.T) {
	t.Parallel()
	for i, listen := range []string{"192.0.2.1:7000", "[2001:db8::1]:7000"} {
		code, stderr := runServerToExit(t, "--node-id", "n1", "--raft-listen", listen,
			"--raft-dir", filepath.Join(t.TempDir(), fmt.Sprint(i)))
		if code == 0 {
			t.Fatalf("--raft-listen %s without TLS exited 0", listen)
		}
		for _, want := range []string{"protected mode", listen, "--raft-tls-cert", "--raft-tls-key", "--raft-tls-ca", "--raft-insecure"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("--raft-listen %s: the error does not mention %q:\n%s", listen, want, stderr)
			}
		}
	}
	// --raft-insecure passes protected mode (and then fails to bind).
	code, stderr := runServerToExit(t, "--node-id", "n1", "--raft-listen", "192.0.2.1:7000", "--raft-insecure",
		"--raft-dir", filepath.Join(t.TempDir(), "insecure"))
	if code == 0 || strings.Contains(stderr, "protected mode") {
		t.Errorf("--raft-insecure: exit %d, %s; want past protected mode, failing to bind", code, stderr)
	}
}
