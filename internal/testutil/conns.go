package testutil

import (
	"net"
	"sync"
	"testing"
)

// ServeConns listens on a free loopback port and runs handle for every
// connection (which it closes afterwards): a fake peer that misbehaves at
// the byte level. The listener and every handler are gone when the test
// ends. It returns the address.
func ServeConns(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ServeListener(tb, ln, handle)
}

// ServeListener is ServeConns on a listener of the caller's (a TLS one,
// say): it runs handle for every connection, closes the listener when the
// test ends and waits for every handler. It returns the address.
func ServeListener(tb testing.TB, ln net.Listener, handle func(net.Conn)) string {
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
