//go:build !unix

package h1server

import "net"

func waitReadable(net.Conn) (bool, error) { return false, nil }
