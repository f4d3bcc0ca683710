package replica

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// Options assemble a serving member: its Raft transport on RaftListen
// (TCP, or mutual TLS with TLS), its log and stable store (raft-wal) and
// snapshots (files) in Dir, its own log through Logger.
type Options struct {
	ID         string
	RaftListen string
	Dir        string
	// Bootstrap forms a new cluster of Peers (once, on an empty Dir).
	Bootstrap bool
	Peers     []Peer
	TLS       *PeerTLS // nil: plain TCP
	Table     locktable.Config
	Conn      func(id uint64) any
	Logger    *slog.Logger
	// Timing; zero values take the Default* timeouts.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// MaxInflight: see NodeConfig (0: DefaultMaxInflight).
	MaxInflight int
	// Halt: see NodeConfig.
	Halt func(error)
}

// logCacheEntries is how many of the newest log entries stay in memory
// for raft's reads: a few rounds of the largest appends (raft's
// MaxAppendEntries is 64).
const logCacheEntries = 1024

// Peer is a member as --raft-peers names it.
type Peer struct{ ID, Addr string }

// Open starts a member with o; Close stops it and everything Open opened.
func Open(o Options) (*Node, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	raftLog := raftLogger(log)
	var trans *raft.NetworkTransport
	if o.TLS != nil {
		layer, err := ListenTLS(o.RaftListen, nil, o.TLS, log)
		if err != nil {
			return nil, fmt.Errorf("raft listen %s: %w", o.RaftListen, err)
		}
		trans = raft.NewNetworkTransportWithLogger(layer, 3, 10*time.Second, raftLog)
	} else {
		var err error
		trans, err = raft.NewTCPTransportWithLogger(o.RaftListen, nil, 3, 10*time.Second, raftLog)
		if err != nil {
			return nil, fmt.Errorf("raft listen %s: %w", o.RaftListen, err)
		}
	}
	store, err := OpenStore(o.Dir, log)
	if err != nil {
		trans.Close()
		return nil, fmt.Errorf("raft store in %s: %w", o.Dir, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(o.Dir, 2, raftLog)
	if err != nil {
		store.Close()
		trans.Close()
		return nil, err
	}
	// Raft reads every entry back from the log store after appending it
	// (the leader to replicate it, every node to apply it): the cache
	// answers those reads from memory (docs/raft.md, Log store).
	logs, err := raft.NewLogCache(logCacheEntries, store)
	if err != nil {
		store.Close()
		trans.Close()
		return nil, err
	}
	cfg := NodeConfig{
		ID: raft.ServerID(o.ID), Transport: trans, Logs: logs, Stable: store, Snapshots: snaps,
		Table: o.Table, Conn: o.Conn, Logger: log,
		HeartbeatTimeout: o.HeartbeatTimeout, ElectionTimeout: o.ElectionTimeout, LeaderLeaseTimeout: o.LeaderLeaseTimeout,
		MaxInflight: o.MaxInflight, Halt: o.Halt,
	}
	if o.Bootstrap {
		if len(o.Peers) == 0 {
			store.Close()
			trans.Close()
			return nil, errors.New("bootstrap needs peers")
		}
		for _, p := range o.Peers {
			cfg.Bootstrap = append(cfg.Bootstrap, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
	}
	node, err := NewNode(cfg)
	if err != nil {
		store.Close()
		trans.Close()
		return nil, err
	}
	node.closers = []io.Closer{store, trans}
	return node, nil
}

// Close shuts the node down, then closes its store and transport.
func (n *Node) Close() error {
	err := n.Shutdown()
	for _, c := range n.closers {
		c.Close()
	}
	return err
}
