package commands

import (
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/relock/relock/locktable"
	"github.com/relock/relock/resp"
)

// infoSections are INFO's sections in order, each rendering its body.
var infoSections = []struct {
	name   string
	render func(s *Server, b *strings.Builder)
}{
	{"server", (*Server).infoServer},
	{"clients", (*Server).infoClients},
	{"stats", (*Server).infoStats},
	{"persistence", (*Server).infoPersistence},
	{"locks", (*Server).infoLocks},
	{"replication", (*Server).infoReplication},
}

// cmdInfo: INFO [section ...]
func (sess *session) cmdInfo(args [][]byte) *pendingWait {
	want := map[string]bool{}
	for _, a := range args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	for _, sec := range infoSections {
		if !all && !want[sec.name] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(sec.name[:1]) + sec.name[1:] + "\r\n")
		sec.render(sess.srv, &b)
	}
	sess.w.Verbatim(b.String())
	return nil
}

func field(b *strings.Builder, k string, v any) {
	b.WriteString(k)
	b.WriteByte(':')
	switch v := v.(type) {
	case string:
		b.WriteString(v)
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case uint64:
		b.WriteString(strconv.FormatUint(v, 10))
	}
	b.WriteString("\r\n")
}

func (s *Server) infoServer(b *strings.Builder) {
	up := time.Since(s.epoch)
	field(b, "redis_version", "7.2.0") // what clients' version checks read
	field(b, "relock_version", Version)
	field(b, "redis_mode", "standalone")
	field(b, "os", runtime.GOOS+" "+runtime.GOARCH)
	field(b, "arch_bits", strconv.Itoa(strconv.IntSize))
	field(b, "go_version", runtime.Version())
	field(b, "process_id", os.Getpid())
	port := "0"
	for _, a := range s.Addrs() {
		if t, ok := a.(*net.TCPAddr); ok {
			port = strconv.Itoa(t.Port)
		}
	}
	field(b, "tcp_port", port)
	field(b, "server_time_usec", time.Now().UnixMicro())
	field(b, "uptime_in_seconds", int64(up/time.Second))
	field(b, "uptime_in_days", int64(up/(24*time.Hour)))
	field(b, "shards", s.eng.table().Shards())
}

func (s *Server) infoClients(b *strings.Builder) {
	s.mu.Lock()
	n := len(s.sessions)
	s.mu.Unlock()
	field(b, "connected_clients", n)
	field(b, "blocked_clients", s.eng.table().Stats().Waiters)
	field(b, "maxclients", s.cfg.MaxClients)
}

func (s *Server) infoStats(b *strings.Builder) {
	st := &s.stats
	field(b, "total_connections_received", st.connections.Load())
	field(b, "total_commands_processed", st.commands.Load())
	field(b, "rejected_connections", st.rejected.Load())
	field(b, "total_error_replies", st.errors.Load())
	field(b, "auth_failures", st.authFailures.Load())
	field(b, "auth_timeouts", st.authTimeouts.Load())
	h := s.hub
	h.mu.RLock()
	field(b, "pubsub_channels", len(h.channels))
	field(b, "pubsub_patterns", len(h.patterns))
	h.mu.RUnlock()
	field(b, "pubsub_clients", h.conns.Load())
	field(b, "pubsub_messages", h.published.Load())
	field(b, "pubsub_clients_dropped", h.dropped.Load())
}

func (s *Server) infoPersistence(b *strings.Builder) {
	field(b, "loading", 0) // ioredis's ready check waits for loading:0
	field(b, "async_loading", 0)
	field(b, "aof_enabled", 0)
	st := s.cfg.Store
	if st == nil {
		field(b, "persistence", "none")
		return
	}
	ps := st.Stats()
	field(b, "persistence", "bbolt")
	field(b, "fsync", string(ps.Mode))
	field(b, "commits", ps.Commits)
	field(b, "commit_bytes", ps.Bytes)
	field(b, "commit_errors", ps.Errors)
	field(b, "last_commit_usec", ps.LastCommitUsec)
	field(b, "last_commit_error", ps.LastError)
}

func (s *Server) infoLocks(b *strings.Builder) {
	ts := s.eng.table().Stats()
	st := &s.stats
	field(b, "locks", ts.Locks)
	field(b, "holds", ts.Holds)
	field(b, "waiters", ts.Waiters)
	field(b, "delayed", ts.Delayed)
	field(b, "last_fence", s.eng.table().LastFence())
	field(b, "grants", st.grants.Load())
	field(b, "grants_after_wait", st.waitGrants.Load())
	field(b, "wait_timeouts", st.waitTimeouts.Load())
	field(b, "releases_unlock", st.releases[locktable.ReasonUnlock].Load())
	field(b, "releases_expired", st.releases[locktable.ReasonExpired].Load())
	field(b, "releases_disconnect", st.releases[locktable.ReasonDisconnect].Load())
	field(b, "releases_forced", st.releases[locktable.ReasonForced].Load())
	field(b, "releases_killed", st.releases[locktable.ReasonKilled].Load())
	field(b, "releases_reset", st.releases[locktable.ReasonReset].Load())
}

func (s *Server) infoReplication(b *strings.Builder) {
	c := s.cfg.Cluster
	if c == nil {
		field(b, "role", "master")
		field(b, "connected_slaves", 0)
		return
	}
	st := c.Node.Status()
	role := "slave"
	if st.State == "leader" {
		role = "master"
	}
	field(b, "role", role)
	field(b, "raft_state", st.State)
	field(b, "raft_leader", st.Leader)
	_, addr := c.Node.LeaderAddr()
	field(b, "raft_leader_addr", addr)
	field(b, "raft_term", st.Term)
	field(b, "raft_last_log_index", st.LastLogIndex)
	field(b, "raft_applied_index", c.Node.Applied()) // what the lock table has applied
	field(b, "raft_num_peers", st.Peers)
}

// clusterMembership: CLUSTER ADDNODE id raft-addr | CLUSTER REMOVENODE id
// (admin, on the leader): changes the Raft membership. A new member then
// catches up from the leader's log and snapshots.
func (sess *session) clusterMembership(sub string, args [][]byte) {
	srv := sess.srv
	c := srv.cfg.Cluster
	if !sess.isAdmin() {
		sess.fail(errNoPermAdmin("cluster|" + sub))
		return
	}
	if (sub == "addnode" && len(args) != 2) || (sub == "removenode" && len(args) != 1) {
		sess.fail("ERR wrong number of arguments for 'cluster|" + sub + "' command")
		return
	}
	if !srv.eng.leader() {
		sess.fail(srv.eng.moved())
		return
	}
	id := string(args[0])
	var err error
	if sub == "addnode" {
		err = c.Node.AddVoter(id, string(args[1]), 10*time.Second)
	} else {
		err = c.Node.RemoveMember(id, 10*time.Second)
	}
	if err != nil {
		sess.fail("ERR " + sub + ": " + err.Error())
		return
	}
	srv.log.Info("cluster membership changed", "change", sub, "node", string(id))
	sess.w.OK()
}

// leaderEndpoint returns the leader's client host and port (from its
// takeover entry) and Raft ID; ok is false while no leader is known, or
// its takeover entry is not applied here yet (the last one names the
// former leader).
func (s *Server) leaderEndpoint() (host string, port int, id string, ok bool) {
	id, addr := s.cfg.Cluster.Node.LeaderAddr()
	host, ps, err := net.SplitHostPort(addr)
	port, _ = strconv.Atoi(ps)
	return host, port, id, err == nil && id != ""
}

// cmdCluster: CLUSTER INFO | SLOTS | MYID | MEMBERS | ADDNODE | REMOVENODE — enough for cluster-aware
// clients (go-redis ClusterClient, redis-cli -c) to find the leader, which
// owns every slot.
func (sess *session) cmdCluster(args [][]byte) *pendingWait {
	srv := sess.srv
	c := srv.cfg.Cluster
	if c == nil {
		sess.fail("ERR This instance has cluster support disabled")
		return nil
	}
	switch strings.ToLower(string(args[1])) {
	case "myid":
		sess.w.BulkString(string(c.Node.ID))
	case "info":
		state := "ok"
		st := c.Node.Status()
		if st.Leader == "" {
			state = "fail"
		}
		// Known nodes count this one too, as Redis does.
		sess.w.Verbatim("cluster_state:" + state + "\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:" +
			strconv.Itoa(st.Peers+1) + "\r\ncluster_size:1\r\n")
	case "members":
		members, err := c.Node.Members()
		if err != nil {
			sess.fail("ERR " + err.Error())
			return nil
		}
		sess.w.Array(len(members))
		for _, m := range members {
			suffrage := "nonvoter"
			if m.Voter {
				suffrage = "voter"
			}
			sess.w.Map(4)
			sess.w.BulkString("id")
			sess.w.BulkString(m.ID)
			sess.w.BulkString("raft-addr")
			sess.w.BulkString(m.RaftAddr)
			sess.w.BulkString("suffrage")
			sess.w.BulkString(suffrage)
			sess.w.BulkString("leader")
			sess.w.Int(b2i(m.Leader))
		}
	case "shards":
		host, p, id, ok := srv.leaderEndpoint()
		if !ok {
			sess.w.Array(0)
			return nil
		}
		w := &sess.w
		w.Array(1)
		w.Map(2)
		w.BulkString("slots")
		w.Array(2)
		w.Int(0)
		w.Int(16383)
		w.BulkString("nodes")
		w.Array(1)
		w.Map(7)
		w.BulkString("id")
		w.BulkString(string(id))
		w.BulkString("port")
		w.Int(int64(p))
		w.BulkString("ip")
		w.BulkString(host)
		w.BulkString("endpoint")
		w.BulkString(host)
		w.BulkString("role")
		w.BulkString("master")
		w.BulkString("replication-offset")
		w.Int(int64(c.Node.Applied()))
		w.BulkString("health")
		w.BulkString("online")
	case "addnode", "removenode":
		sess.clusterMembership(strings.ToLower(string(args[1])), args[2:])
	case "slots":
		host, p, _, ok := srv.leaderEndpoint()
		if !ok {
			sess.w.Array(0)
			return nil
		}
		sess.w.Array(1)
		sess.w.Array(3)
		sess.w.Int(0)
		sess.w.Int(16383)
		sess.w.Array(2)
		sess.w.BulkString(host)
		sess.w.Int(int64(p))
	default:
		sess.fail(resp.UnknownSubcommand("CLUSTER", string(args[1])))
	}
	return nil
}

// cmdDBSize: DBSIZE — the number of locks.
func (sess *session) cmdDBSize(args [][]byte) *pendingWait {
	sess.w.Int(int64(sess.srv.eng.table().Stats().Locks))
	return nil
}

// cmdTime: TIME — seconds and microseconds, as bulk strings.
func (sess *session) cmdTime(args [][]byte) *pendingWait {
	now := time.Now()
	sess.w.Strings(strconv.FormatInt(now.Unix(), 10), strconv.Itoa(now.Nanosecond()/1000))
	return nil
}

// cmdConfig: CONFIG GET parameter ... — a minimal read-only set, enough
// for tools that ask (redis-benchmark reads save and appendonly).
func (sess *session) cmdConfig(args [][]byte) *pendingWait {
	if !resp.EqualFold(args[1], "GET") {
		sess.fail(resp.UnknownSubcommand("CONFIG", string(args[1])))
		return nil
	}
	if len(args) < 3 {
		sess.fail("ERR wrong number of arguments for 'config|get' command")
		return nil
	}
	cfg := sess.srv.cfg
	params := [][2]string{
		{"appendonly", "no"},
		{"databases", "1"},
		{"maxclients", strconv.Itoa(cfg.MaxClients)},
		{"save", ""},
		{"timeout", "0"},
	}
	var got [][2]string
	for _, p := range params {
		for _, pat := range args[2:] {
			if globMatch(strings.ToLower(string(pat)), p[0]) {
				got = append(got, p)
				break
			}
		}
	}
	sess.w.Map(len(got))
	for _, p := range got {
		sess.w.BulkString(p[0])
		sess.w.BulkString(p[1])
	}
	return nil
}

// cmdCommand: COMMAND [COUNT | INFO name ... | DOCS name ... | LIST]
func (sess *session) cmdCommand(args [][]byte) *pendingWait {
	w := &sess.w
	if len(args) == 1 {
		cmds := sortedCommands()
		w.Array(len(cmds))
		for _, c := range cmds {
			sess.writeCommandInfo(c)
		}
		return nil
	}
	sub := strings.ToLower(string(args[1]))
	switch sub {
	case "count":
		w.Int(int64(len(commandTable)))
	case "list":
		cmds := sortedCommands()
		w.Array(len(cmds))
		for _, c := range cmds {
			w.BulkString(c.name)
		}
	case "info":
		cmds := sess.commandsNamed(args[2:])
		w.Array(len(cmds))
		for _, c := range cmds {
			if c == nil {
				w.Null()
				continue
			}
			sess.writeCommandInfo(c)
		}
	case "docs":
		cmds := sess.commandsNamed(args[2:])
		n := 0
		for _, c := range cmds {
			if c != nil {
				n++
			}
		}
		w.Map(n)
		for _, c := range cmds {
			if c == nil {
				continue
			}
			w.BulkString(c.name)
			w.Map(4)
			w.BulkString("summary")
			w.BulkString(c.summary)
			w.BulkString("since")
			w.BulkString("0.1.0")
			w.BulkString("group")
			w.BulkString(c.group)
			w.BulkString("syntax")
			w.BulkString(strings.TrimSpace(strings.ToUpper(c.name) + " " + c.syntax))
		}
	default:
		sess.fail(resp.UnknownSubcommand("COMMAND", string(args[1])))
	}
	return nil
}

// commandsNamed maps names to commands (nil where unknown); no names: all.
func (sess *session) commandsNamed(names [][]byte) []*command {
	if len(names) == 0 {
		return sortedCommands()
	}
	out := make([]*command, len(names))
	for i, n := range names {
		out[i] = lookup(n)
	}
	return out
}

// writeCommandInfo writes one COMMAND INFO entry in Redis 7's shape.
func (sess *session) writeCommandInfo(c *command) {
	w := &sess.w
	keyed := c.group == "lock" && c.name != "locks"
	w.Array(10)
	w.BulkString(c.name)
	w.Int(int64(c.arity))
	w.Array(len(c.flags))
	for _, f := range c.flags {
		w.Simple(f)
	}
	if keyed {
		w.Int(1)
		w.Int(1)
		w.Int(1)
	} else {
		w.Int(0)
		w.Int(0)
		w.Int(0)
	}
	cats := []string{"@" + c.group}
	if c.admin {
		cats = append(cats, "@admin", "@dangerous")
	}
	w.Array(len(cats))
	for _, cat := range cats {
		w.Simple(cat)
	}
	w.Array(0) // tips
	w.Array(0) // key specs
	subs := append([]string(nil), c.subs...)
	sort.Strings(subs)
	w.Array(len(subs))
	for _, sub := range subs {
		w.Array(10)
		w.BulkString(c.name + "|" + sub)
		w.Int(-2)
		w.Array(0)
		w.Int(0)
		w.Int(0)
		w.Int(0)
		w.Array(0)
		w.Array(0)
		w.Array(0)
		w.Array(0)
	}
}

// sessionsSorted returns the live sessions by id.
func (s *Server) sessionsSorted() []*session {
	s.mu.Lock()
	out := make([]*session, 0, len(s.sessions))
	for _, c := range s.sessions {
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}
