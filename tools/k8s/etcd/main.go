// Command etcd is etcd's own server, built from the module so that the
// Kubernetes provider's tests run a real etcd behind a real kube-apiserver
// (scripts/build-k8s.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
