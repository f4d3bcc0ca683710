// Variant B: go.etcd.io/raft/v3 RawNode driven by one tight loop goroutine.
//
// Per round (see loop()):
//  1. block on {tick, inbound peer msg, client proposal}; then drain all pending inbound
//     msgs/proposals without blocking (each proposal -> rn.Propose of one 100-byte entry;
//     the library puts every entry pending at Ready time into one Ready => one append,
//     one fdatasync, one MsgApp per follower).
//  2. rd := rn.Ready()
//  3. marshal+send immediately every message that raft puts in r.msgs (MsgApp, MsgHeartbeat,
//     MsgVote/MsgPreVote requests, ...). Those are allowed to leave before local persistence.
//  4. write rd.Entries (+HardState) to the append-only log file; fdatasync if rd.MustSync;
//     MemoryStorage.Append / SetHardState.
//  5. marshal+send the messages that raft queues in msgsAfterAppend (MsgAppResp, MsgVoteResp,
//     MsgPreVoteResp) -- only now, after the fsync.
//  6. apply rd.CommittedEntries (counter++, complete waiting client requests on the leader).
//  7. rn.Advance(rd): this steps the leader's self-addressed MsgAppResp, i.e. the leader only
//     counts its own vote for the new entries after step 4 made them durable.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"golang.org/x/sys/unix"

	"github.com/relock/relock/bench/raftfloor/common"
)

type prop struct {
	data []byte
	key  uint64
	done chan bool
}

type peer struct {
	addr string
	out  chan []byte
}

func main() {
	n := common.NodeFlags()
	id, addrs := uint64(n.ID), n.Peers

	lf, err := os.OpenFile(filepath.Join(n.Dir, "raft.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		log.Fatal(err)
	}

	st := raft.NewMemoryStorage()
	voters := []uint64{}
	for i := range addrs {
		voters = append(voters, uint64(i+1))
	}
	if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{
		ConfState: raftpb.ConfState{Voters: voters}, Index: 1, Term: 1}}); err != nil {
		log.Fatal(err)
	}
	cfg := &raft.Config{
		ID:              id,
		ElectionTick:    30,
		HeartbeatTick:   3,
		Storage:         st,
		MaxSizePerMsg:   1 << 20,
		MaxInflightMsgs: 256,
		PreVote:         true,
		CheckQuorum:     true,
		Logger:          &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
	}
	rn, err := raft.NewRawNode(cfg)
	if err != nil {
		log.Fatal(err)
	}

	recvC := make(chan raftpb.Message, 4096)
	propC := make(chan *prop, 4096)

	// inbound peer transport
	ln, err := net.Listen("tcp", addrs[id-1])
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go readPeer(c, recvC)
		}
	}()
	// outbound: one persistent connection + one writer goroutine per peer
	ps := map[uint64]*peer{}
	for i, a := range addrs {
		pid := uint64(i + 1)
		if pid == id {
			continue
		}
		p := &peer{addr: a, out: make(chan []byte, 4096)}
		ps[pid] = p
		go p.writer()
	}

	var key atomic.Uint64
	err = common.ServeClients(n.Client, func(reqID uint64) bool {
		k := key.Add(1)
		p := &prop{data: common.Payload(k, reqID), key: k, done: make(chan bool, 1)}
		propC <- p
		select {
		case ok := <-p.done:
			return ok
		case <-time.After(5 * time.Second):
			return false
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	if id == 1 {
		time.AfterFunc(300*time.Millisecond, func() { propC <- nil }) // nil prop = campaign
	}
	loop(rn, st, lf, ps, recvC, propC)
}

func readPeer(c net.Conn, recvC chan<- raftpb.Message) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 256<<10)
	var hdr [4]byte
	buf := make([]byte, 0, 64<<10)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		var m raftpb.Message
		if err := m.Unmarshal(buf); err != nil { // Unmarshal copies entry data
			return
		}
		recvC <- m
	}
}

func (p *peer) writer() {
	var c net.Conn
	var w *bufio.Writer
	for f := range p.out {
		if c == nil {
			var err error
			c, err = net.DialTimeout("tcp", p.addr, time.Second)
			if err != nil {
				c = nil
				continue // drop; raft retries
			}
			c.(*net.TCPConn).SetNoDelay(true)
			w = bufio.NewWriterSize(c, 256<<10)
		}
		w.Write(f)
	drain:
		for {
			select {
			case f2 := <-p.out:
				w.Write(f2)
			default:
				break drain
			}
		}
		if err := w.Flush(); err != nil {
			c.Close()
			c = nil
		}
	}
}

func frame(m *raftpb.Message) []byte {
	sz := m.Size()
	b := make([]byte, 4+sz)
	binary.LittleEndian.PutUint32(b, uint32(sz))
	if _, err := m.MarshalTo(b[4:]); err != nil {
		log.Fatal(err)
	}
	return b
}

func afterPersist(t raftpb.MessageType) bool {
	// exactly the types raft.send() puts into msgsAfterAppend
	return t == raftpb.MsgAppResp || t == raftpb.MsgVoteResp || t == raftpb.MsgPreVoteResp
}

func loop(rn *raft.RawNode, st *raft.MemoryStorage, lf *os.File, ps map[uint64]*peer,
	recvC chan raftpb.Message, propC chan *prop) {
	tick := time.NewTicker(10 * time.Millisecond)
	pending := map[uint64]*prop{}
	leader := false
	fd := int(lf.Fd())
	var wbuf []byte
	send := func(m *raftpb.Message) {
		p := ps[m.To]
		if p == nil {
			return
		}
		select {
		case p.out <- frame(m):
		default: // drop if peer is backed up; raft tolerates loss
		}
	}
	onProp := func(p *prop) {
		if p == nil {
			rn.Campaign()
			return
		}
		if !leader {
			p.done <- false
			return
		}
		if err := rn.Propose(p.data); err != nil {
			p.done <- false
			return
		}
		pending[p.key] = p
	}
	for {
		select {
		case <-tick.C:
			rn.Tick()
		case m := <-recvC:
			rn.Step(m)
		case p := <-propC:
			onProp(p)
		}
	drain:
		for {
			select {
			case m := <-recvC:
				rn.Step(m)
			case p := <-propC:
				onProp(p)
			default:
				break drain
			}
		}
		for rn.HasReady() {
			rd := rn.Ready()
			if rd.SoftState != nil {
				wasLeader := leader
				leader = rd.SoftState.RaftState == raft.StateLeader
				if wasLeader && !leader {
					for k, p := range pending {
						p.done <- false
						delete(pending, k)
					}
				}
			}
			// (3) messages allowed to leave before local persistence (MsgApp, heartbeats, vote requests)
			sentEarly := false
			for i := range rd.Messages {
				if !afterPersist(rd.Messages[i].Type) {
					send(&rd.Messages[i])
					sentEarly = true
				}
			}
			if sentEarly && *yieldBeforeSync && rd.MustSync {
				// GOMAXPROCS=1 (pinned to one core): let the peer writer goroutines put the
				// MsgApps on the wire now, instead of waiting for sysmon to hand off the P
				// while this goroutine sits in fdatasync.
				runtime.Gosched()
			}
			// (4) persist: append-only file + fdatasync, then MemoryStorage
			if len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState) {
				wbuf = wbuf[:0]
				for i := range rd.Entries {
					e := &rd.Entries[i]
					sz := e.Size()
					wbuf = binary.LittleEndian.AppendUint32(wbuf, uint32(sz))
					off := len(wbuf)
					wbuf = append(wbuf, make([]byte, sz)...)
					e.MarshalTo(wbuf[off:])
				}
				if !raft.IsEmptyHardState(rd.HardState) {
					sz := rd.HardState.Size()
					wbuf = binary.LittleEndian.AppendUint32(wbuf, uint32(sz)|1<<31)
					off := len(wbuf)
					wbuf = append(wbuf, make([]byte, sz)...)
					rd.HardState.MarshalTo(wbuf[off:])
				}
				if _, err := lf.Write(wbuf); err != nil {
					log.Fatal(err)
				}
				if rd.MustSync {
					if err := unix.Fdatasync(fd); err != nil {
						log.Fatal(err)
					}
				}
				if !raft.IsEmptyHardState(rd.HardState) {
					st.SetHardState(rd.HardState)
				}
				if len(rd.Entries) > 0 {
					st.Append(rd.Entries)
				}
			}
			// (5) responses that vouch for durable state: only after the fsync
			for i := range rd.Messages {
				if afterPersist(rd.Messages[i].Type) {
					send(&rd.Messages[i])
				}
			}
			// (6) apply
			for i := range rd.CommittedEntries {
				e := &rd.CommittedEntries[i]
				if e.Type == raftpb.EntryNormal && len(e.Data) >= 8 {
					k := binary.LittleEndian.Uint64(e.Data)
					applied++
					if p, ok := pending[k]; ok {
						delete(pending, k)
						p.done <- true
					}
				}
			}
			// (7) leader's self MsgAppResp is stepped here, i.e. after its own fsync
			rn.Advance(rd)
		}
	}
}

var applied uint64

var yieldBeforeSync = flag.Bool("yield", true, "runtime.Gosched() after early sends, before fdatasync")
