// Command etcd is etcd's server, built from its Go module
// (go.etcd.io/etcd/server/v3, pinned in ../go.mod) so that `make
// bench-cluster` needs nothing but the Go module proxy: the same entry
// point as the release binary's main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
