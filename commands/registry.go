package commands

import "sort"

// command is one entry of the command table.
type command struct {
	name  string // lower case
	arity int    // Redis style: n exact (name included), -n at least n
	// flags are reported by COMMAND INFO (Redis's flag names).
	flags []string
	// noAuth: allowed before authentication.
	noAuth bool
	// admin: needs an admin user once ACLs exist.
	admin bool
	// mutates: changes lock state that the store must commit; refused once
	// shutdown has begun (see Server.gate).
	mutates bool
	summary string
	group   string
	// syntax is the argument synopsis for COMMAND DOCS and help.
	syntax string
	run    func(sess *session, args [][]byte) *pendingWait
	// idx is the command's index in commandList (for per-command metrics).
	idx int
	// blocks: the command may change lock state through the engine, read
	// the table only once the engine has confirmed it leads (LOCKS), or
	// wait on a membership change, which blocks with a Raft engine: it
	// then runs off the connection's owner (see pendingWait.run).
	blocks bool
	// subs are subcommands (CLIENT, COMMAND, CONFIG), for COMMAND INFO.
	subs []string
}

// commandTable maps lower-case names to commands. Filled by init and never
// written afterwards, so it is read without a lock.
var commandTable map[string]*command

// commandList is the command table in definition order.
var commandList []*command

func init() {
	list := []*command{
		// Locks (lock.go, locks.go).
		{name: "lock", mutates: true, arity: -2, flags: []string{"write", "blocking"}, group: "lock", run: (*session).cmdLock,
			syntax:  "name [TTL ms] [WAIT ms] [SIZE n] [OWNER id] [DETACH] [SHARED] [LOCKDELAY ms]",
			summary: "Acquires a lock, waiting in FIFO order; returns its key, or nil when WAIT ran out."},
		{name: "trylock", mutates: true, arity: -2, flags: []string{"write", "fast"}, group: "lock", run: (*session).cmdTryLock,
			syntax: "name [TTL ms] [SIZE n] [OWNER id] [DETACH] [SHARED] [LOCKDELAY ms]", summary: "Acquires a lock if it is free; returns its key or nil."},
		{name: "mlock", mutates: true, arity: -3, flags: []string{"write", "blocking"}, group: "lock", run: (*session).cmdMLock,
			syntax:  "numnames name [name ...] [TTL ms] [WAIT ms] [OWNER id] [DETACH] [SHARED] [LOCKDELAY ms]",
			summary: "Acquires every lock named at once or none, waiting on all of them at one instant; returns their keys in order, or nil when WAIT ran out."},
		{name: "mtrylock", mutates: true, arity: -3, flags: []string{"write", "fast"}, group: "lock", run: (*session).cmdMTryLock,
			syntax: "numnames name [name ...] [TTL ms] [OWNER id] [DETACH] [SHARED] [LOCKDELAY ms]", summary: "Acquires every lock named at once if all are free now; returns their keys, or nil."},
		{name: "upgrade", mutates: true, arity: -3, flags: []string{"write", "blocking"}, group: "lock", run: (*session).cmdUpgrade,
			syntax: "name key [WAIT ms]", summary: "Makes a shared hold exclusive, waiting ahead of every queued request; returns a new key, or nil when WAIT ran out."},
		{name: "downgrade", mutates: true, arity: 3, flags: []string{"write", "fast"}, group: "lock", run: (*session).cmdDowngrade,
			syntax: "name key", summary: "Makes an exclusive hold shared (same key); queued shared requests at the head are granted."},
		{name: "unlock", mutates: true, arity: 3, flags: []string{"write", "fast"}, group: "lock", run: (*session).cmdUnlock,
			syntax: "name key", summary: "Releases a hold (counts a re-entered hold down)."},
		{name: "renew", mutates: true, arity: -3, flags: []string{"write", "fast"}, group: "lock", run: (*session).cmdRenew,
			syntax: "name key [TTL ms]", summary: "Restarts a hold's TTL; returns the TTL now set in ms (-1: none)."},
		{name: "check", arity: 3, flags: []string{"readonly", "fast"}, group: "lock", run: (*session).cmdCheck,
			syntax: "name key", summary: "Returns the remaining TTL in ms (-1: none) if the key holds the lock."},
		{name: "locks", arity: -1, flags: []string{"readonly"}, group: "lock", run: (*session).cmdLocks,
			syntax: "[MATCH pattern] [COUNT n] [AFTER name]", summary: "Lists locks with their holders and waiters, sorted by name."},
		{name: "forceunlock", mutates: true, arity: 2, flags: []string{"write"}, admin: true, group: "lock", run: (*session).cmdForceUnlock,
			syntax: "name", summary: "Releases every hold of a lock; returns how many."},
		// Lock events (pubsub.go).
		{name: "subscribe", arity: -2, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "pubsub", run: (*session).cmdSubscribe,
			syntax: "channel [channel ...]", summary: "Subscribes to the events of locks: each channel is __lock__:<name>."},
		{name: "psubscribe", arity: -2, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "pubsub", run: (*session).cmdPSubscribe,
			syntax: "pattern [pattern ...]", summary: "Subscribes to the events of the locks whose names match: each pattern is __lock__:<glob>."},
		{name: "unsubscribe", arity: -1, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "pubsub", run: (*session).cmdUnsubscribe,
			syntax: "[channel [channel ...]]", summary: "Ends subscriptions to channels (all without arguments)."},
		{name: "punsubscribe", arity: -1, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "pubsub", run: (*session).cmdPUnsubscribe,
			syntax: "[pattern [pattern ...]]", summary: "Ends subscriptions to patterns (all without arguments)."},
		// Connection (handshake.go).
		{name: "ping", arity: -1, flags: []string{"fast", "stale"}, noAuth: true, group: "connection", run: (*session).cmdPing,
			syntax: "[message]", summary: "Returns PONG, or the message."},
		{name: "echo", arity: 2, flags: []string{"fast"}, group: "connection", run: (*session).cmdEcho,
			syntax: "message", summary: "Returns the message."},
		{name: "quit", arity: -1, flags: []string{"fast", "noscript"}, noAuth: true, group: "connection", run: (*session).cmdQuit,
			summary: "Closes the connection."},
		{name: "reset", mutates: true, arity: 1, flags: []string{"fast", "noscript"}, noAuth: true, group: "connection", run: (*session).cmdReset,
			summary: "Resets the connection: releases its holds, clears name and authentication, back to RESP2."},
		{name: "hello", arity: -1, flags: []string{"fast", "noscript"}, noAuth: true, group: "connection", run: (*session).cmdHello,
			syntax: "[protover [AUTH username password] [SETNAME clientname]]", summary: "Handshake: protocol version, authentication, name."},
		{name: "auth", arity: -2, flags: []string{"fast", "noscript"}, noAuth: true, group: "connection", run: (*session).cmdAuth,
			syntax: "[username] password", summary: "Authenticates the connection."},
		{name: "select", arity: 2, flags: []string{"fast"}, group: "connection", run: (*session).cmdSelect,
			syntax: "index", summary: "Selects database 0 (the only one)."},
		{name: "client", arity: -2, flags: []string{"admin"}, group: "connection", run: (*session).cmdClient,
			syntax: "subcommand [arguments]", summary: "Connection management: ID, SETNAME, GETNAME, SETINFO, INFO, LIST, KILL, NO-EVICT, NO-TOUCH.",
			subs: []string{"id", "setname", "getname", "setinfo", "info", "list", "kill", "unblock", "no-evict", "no-touch"}},
		// Server (info.go).
		{name: "info", arity: -1, flags: []string{"stale"}, group: "server", run: (*session).cmdInfo,
			syntax: "[section ...]", summary: "Server information and statistics."},
		{name: "command", arity: -1, flags: []string{"stale"}, group: "server", run: (*session).cmdCommand,
			syntax: "[COUNT | INFO name ... | DOCS name ... | LIST]", summary: "Describes relock's commands.",
			subs: []string{"count", "info", "docs", "list"}},
		{name: "config", arity: -2, flags: []string{"admin"}, group: "server", run: (*session).cmdConfig,
			syntax: "GET parameter [parameter ...]", summary: "Reads configuration parameters (a minimal set).", subs: []string{"get"}},
		{name: "dbsize", arity: 1, flags: []string{"readonly", "fast"}, group: "server", run: (*session).cmdDBSize,
			summary: "Returns the number of locks."},
		{name: "cluster", arity: -2, flags: []string{"stale"}, group: "server", run: (*session).cmdCluster,
			syntax: "INFO | SLOTS | SHARDS | MYID | MEMBERS | ADDNODE id raft-addr | REMOVENODE id", summary: "Where the Raft leader is (it owns every slot), the members, membership changes (admin); an error without clustering.",
			subs: []string{"info", "slots", "shards", "myid", "members", "addnode", "removenode"}},
		{name: "time", arity: 1, flags: []string{"fast"}, group: "server", run: (*session).cmdTime,
			summary: "Returns the server time as seconds and microseconds."},
	}
	commandTable = make(map[string]*command, len(list))
	for i, c := range list {
		c.idx = i
		c.blocks = c.group == "lock" || c.name == "reset" || c.name == "client" || c.name == "cluster"
		commandTable[c.name] = c
	}
	commandList = list
}

// lookup finds a command by name in any case without allocating.
func lookup(name []byte) *command {
	var buf [16]byte
	if len(name) > len(buf) {
		return nil
	}
	for i, c := range name {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return commandTable[string(buf[:len(name)])]
}

// sortedCommands returns the command table sorted by name.
func sortedCommands() []*command {
	out := make([]*command, 0, len(commandTable))
	for _, c := range commandTable {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
