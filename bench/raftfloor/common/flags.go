package common

import (
	"flag"
	"log"
	"os"
	"strings"
)

// Node is what both node variants are told on their command line.
type Node struct {
	ID     int      // 1..3
	Peers  []string // raft addresses, index = ID-1
	Client string   // client listen address
	Dir    string   // data directory (created)
}

// NodeFlags parses the command line of a node.
func NodeFlags() Node {
	id := flag.Int("id", 1, "node id 1..3")
	peers := flag.String("peers", "", "comma-separated raft addrs, index = id-1")
	client := flag.String("client", "", "client listen addr")
	dir := flag.String("dir", "", "data dir")
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	return Node{ID: *id, Peers: strings.Split(*peers, ","), Client: *client, Dir: *dir}
}
