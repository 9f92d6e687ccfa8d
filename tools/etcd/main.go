// Command etcd is the unmodified etcd server, built from the
// go.etcd.io/etcd/server/v3 module for Keywarden's integration tests of
// the etcd store backend against an external cluster.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
