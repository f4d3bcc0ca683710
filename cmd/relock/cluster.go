package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/relock/relock/commands"
	"github.com/relock/relock/locktable"
	"github.com/relock/relock/replica"
)

// clusterFlags make `relock server` a member of a Raft cluster.
type clusterFlags struct {
	NodeID     string   `help:"This node's Raft ID; with --raft-listen and --raft-dir it enables clustering." placeholder:"ID"`
	RaftListen string   `help:"Address of this node's Raft transport (host:port)." placeholder:"HOST:PORT"`
	RaftDir    string   `help:"Directory for the Raft log, stable store and snapshots." placeholder:"DIR"`
	RaftPeers  []string `help:"Every member as id=raft-host:port, this node included (with --bootstrap)." placeholder:"ID=ADDR"`
	Bootstrap  bool     `help:"Form a new cluster from --raft-peers (on first start; ignored once the log exists)."`
	Advertise  string   `help:"Client address of this node that followers name in -MOVED (default: --listen)." placeholder:"HOST:PORT"`
	Join       string   `help:"Join a running cluster through any member's client address(es), comma-separated (instead of --bootstrap)." placeholder:"ADDR"`

	RaftTLSCert  string `name:"raft-tls-cert" help:"Certificate (PEM) this node presents on every Raft connection; signed by --raft-tls-ca, valid for TLS server and client auth." placeholder:"FILE"`
	RaftTLSKey   string `name:"raft-tls-key" help:"Private key of --raft-tls-cert (PEM)." placeholder:"FILE"`
	RaftTLSCA    string `name:"raft-tls-ca" help:"CA (PEM) that signs every member's --raft-tls-cert; with it every Raft connection is mutual TLS and anything else is dropped." placeholder:"FILE"`
	RaftInsecure bool   `help:"Allow a non-loopback --raft-listen without --raft-tls-* (whoever reaches it can release every lock)."`

	// Failover timing (the defaults are replica.Default*; a test checks
	// that they agree). Every member should run with the same values.
	RaftHeartbeatTimeout time.Duration `name:"raft-heartbeat-timeout" default:"300ms" help:"A follower that hears nothing from the leader for this long (a random 1-2x of it) stands for election: a dead leader is replaced in about 1-2x this. Shorter fails over faster but calls elections on pauses (GC, a busy host, jitter) that long."`
	RaftElectionTimeout  time.Duration `name:"raft-election-timeout" default:"300ms" help:"How long a candidate waits for votes before it tries again (split votes); at least --raft-heartbeat-timeout."`
	RaftLeaseTimeout     time.Duration `name:"raft-lease-timeout" default:"150ms" help:"A leader that has not reached a quorum for this long steps down (a partitioned leader stops granting); at most --raft-heartbeat-timeout."`

	// Group commit (replica.DefaultMaxInflight; a test checks that they
	// agree).
	RaftMaxInflight int `name:"raft-max-inflight" default:"1" help:"Raft entries the leader has appended and not yet applied; requests that arrive meanwhile go into the next entry together. 1 makes the largest groups (the fewest fsyncs and sends per request: the highest throughput); 2-4 can lower latency under load when disks or links are slow."`
}

// timing checks the Raft timeouts against each other (as raft does, but
// naming the flags), and the group commit's bound.
func (f *clusterFlags) timing() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--raft-heartbeat-timeout", f.RaftHeartbeatTimeout}, {"--raft-election-timeout", f.RaftElectionTimeout}, {"--raft-lease-timeout", f.RaftLeaseTimeout}} {
		if d.v < 5*time.Millisecond {
			return fmt.Errorf("%s %v: at least 5ms", d.name, d.v)
		}
	}
	if f.RaftElectionTimeout < f.RaftHeartbeatTimeout {
		return fmt.Errorf("--raft-election-timeout %v is shorter than --raft-heartbeat-timeout %v", f.RaftElectionTimeout, f.RaftHeartbeatTimeout)
	}
	if f.RaftLeaseTimeout > f.RaftHeartbeatTimeout {
		return fmt.Errorf("--raft-lease-timeout %v is longer than --raft-heartbeat-timeout %v", f.RaftLeaseTimeout, f.RaftHeartbeatTimeout)
	}
	if f.RaftMaxInflight < 1 || f.RaftMaxInflight > 64 {
		return fmt.Errorf("--raft-max-inflight %d: 1 to 64", f.RaftMaxInflight)
	}
	return nil
}

// raftTLS loads the Raft transport's mutual TLS, or returns nil without
// --raft-tls-*. Protected mode: a --raft-listen that other machines can
// reach needs it, unless --raft-insecure.
func (f *clusterFlags) raftTLS() (*replica.PeerTLS, error) {
	if f.RaftTLSCert == "" && f.RaftTLSKey == "" && f.RaftTLSCA == "" {
		if !f.RaftInsecure && !commands.IsLoopback(f.RaftListen) {
			return nil, fmt.Errorf("protected mode: refusing --raft-listen %s without mutual TLS: "+
				"anyone who can reach the Raft port can append to the log and release every lock; "+
				"set --raft-tls-cert, --raft-tls-key and --raft-tls-ca, "+
				"listen on a loopback address, or pass --raft-insecure if the network is trusted", f.RaftListen)
		}
		return nil, nil
	}
	if f.RaftTLSCert == "" || f.RaftTLSKey == "" || f.RaftTLSCA == "" {
		return nil, errors.New("--raft-tls-cert, --raft-tls-key and --raft-tls-ca go together")
	}
	return replica.LoadPeerTLS(f.RaftTLSCert, f.RaftTLSKey, f.RaftTLSCA)
}

// join asks the cluster (through the members at f.Join, with cf's
// credentials) to add this node, retrying until it is added or ctx ends.
// Run in its own goroutine.
func (f *clusterFlags) join(ctx context.Context, cf *clientFlags, log *slog.Logger) {
	cf.Addr = f.Join
	for attempt := 1; ctx.Err() == nil; attempt++ {
		_, err := cf.clusterDo(ctx, "CLUSTER", "ADDNODE", f.NodeID, f.RaftListen)
		if err == nil {
			log.Info("joined the cluster", "node", f.NodeID, "via", f.Join)
			return
		}
		log.Warn("joining the cluster", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (f *clusterFlags) enabled() bool { return f.NodeID != "" || f.RaftListen != "" || f.RaftDir != "" }

// startNode builds this node's Raft member, or returns nil without
// clustering flags.
func (f *clusterFlags) startNode(listen string, shards int, log *slog.Logger, halt func(error)) (*commands.Cluster, func(), error) {
	if !f.enabled() {
		return nil, func() {}, nil
	}
	if f.NodeID == "" || f.RaftListen == "" || f.RaftDir == "" {
		return nil, nil, errors.New("clustering needs --node-id, --raft-listen and --raft-dir together")
	}
	if err := f.timing(); err != nil {
		return nil, nil, err
	}
	peerTLS, err := f.raftTLS()
	if err != nil {
		return nil, nil, err
	}
	var peers []replica.Peer
	for _, p := range f.RaftPeers {
		id, addr, ok := strings.Cut(p, "=")
		if !ok || id == "" || addr == "" {
			return nil, nil, fmt.Errorf("--raft-peers: %q is not id=host:port", p)
		}
		peers = append(peers, replica.Peer{ID: id, Addr: addr})
	}
	if f.Bootstrap && len(peers) == 0 {
		return nil, nil, errors.New("--bootstrap needs --raft-peers")
	}
	if f.Bootstrap && f.Join != "" {
		return nil, nil, errors.New("--bootstrap forms a new cluster, --join enters a running one: give one of them")
	}
	// Lock events come from the FSM's table, on every member (a
	// follower's subscribers get them as its log applies).
	hub := commands.NewHub()
	node, err := replica.Open(replica.Options{
		ID: f.NodeID, RaftListen: f.RaftListen, Dir: f.RaftDir, Bootstrap: f.Bootstrap, Peers: peers, TLS: peerTLS,
		// Every member must apply alike: a fixed shard count, no clock
		// at start (fences follow the leader's clock at each failover).
		Table:            locktable.Config{Shards: shards, FenceStart: 1, Notify: hub.Notify, Watched: hub.Watched},
		Logger:           log,
		HeartbeatTimeout: f.RaftHeartbeatTimeout, ElectionTimeout: f.RaftElectionTimeout, LeaderLeaseTimeout: f.RaftLeaseTimeout,
		MaxInflight: f.RaftMaxInflight, Halt: halt,
	})
	if err != nil {
		return nil, nil, err
	}
	advertise := f.Advertise
	if advertise == "" {
		advertise = listen
	}
	log.Info("raft node started", "node", f.NodeID, "raft", f.RaftListen, "raft_tls", peerTLS != nil, "advertise", advertise, "peers", len(peers),
		"heartbeat_timeout", f.RaftHeartbeatTimeout, "election_timeout", f.RaftElectionTimeout, "lease_timeout", f.RaftLeaseTimeout)
	stop := func() {
		if err := node.Close(); err != nil {
			log.Error("raft shutdown", "err", err)
		}
	}
	return &commands.Cluster{Node: node, Advertise: advertise, Hub: hub}, stop, nil
}
