// Variant A: hashicorp/raft + raft-wal (+LogCache 1024) + TCP transport, trivial counter FSM.
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"github.com/relock/relock/bench/raftfloor/common"
)

type fsm struct{ n atomic.Uint64 }

func (f *fsm) Apply(l *raft.Log) interface{}       { f.n.Add(1); return nil }
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) { return snap{f.n.Load()}, nil }
func (f *fsm) Restore(rc io.ReadCloser) error      { return rc.Close() }

type snap struct{ n uint64 }

func (s snap) Persist(sink raft.SnapshotSink) error {
	fmt.Fprintf(sink, "%d", s.n)
	return sink.Close()
}
func (s snap) Release() {}

func main() {
	n := common.NodeFlags()
	id, addrs := n.ID, n.Peers

	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(fmt.Sprint(id))
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 300 * time.Millisecond
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr})

	w, err := wal.Open(n.Dir)
	if err != nil {
		log.Fatal(err)
	}
	cache, err := raft.NewLogCache(1024, w)
	if err != nil {
		log.Fatal(err)
	}
	snaps := raft.NewInmemSnapshotStore()
	trans, err := raft.NewTCPTransport(addrs[id-1], nil, 3, 10*time.Second, io.Discard)
	if err != nil {
		log.Fatal(err)
	}
	var cfg raft.Configuration
	for i, a := range addrs {
		cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i + 1)), Address: raft.ServerAddress(a)})
	}
	if err := raft.BootstrapCluster(conf, cache, w, snaps, trans, cfg); err != nil {
		log.Fatal(err)
	}
	f := &fsm{}
	r, err := raft.NewRaft(conf, f, cache, w, snaps, trans)
	if err != nil {
		log.Fatal(err)
	}
	var key atomic.Uint64
	err = common.ServeClients(n.Client, func(reqID uint64) bool {
		if r.State() != raft.Leader {
			return false
		}
		fut := r.Apply(common.Payload(key.Add(1), reqID), 5*time.Second)
		return fut.Error() == nil // returns after commit + FSM apply on this node
	})
	if err != nil {
		log.Fatal(err)
	}
	select {}
}
