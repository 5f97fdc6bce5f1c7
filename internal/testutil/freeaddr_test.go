package testutil

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddr's ports are bindable, below the ephemeral range (where
// outgoing connections could take them first), and never handed out
// twice.
func TestFreeAddr(t *testing.T) {
	lo := ephemeralLow()
	seen := map[string]bool{}
	for range 200 {
		addr := FreeAddr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if port, _ := strconv.Atoi(p); port < freeLow || port >= lo {
			t.Fatalf("port %d outside [%d, %d)", port, freeLow, lo)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		ln.Close()
	}
}
