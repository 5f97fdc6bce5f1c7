package testutil

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "line %d\n", i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
}

func TestServeConns(t *testing.T) {
	addr := ServeConns(t, func(c net.Conn) { _, _ = io.WriteString(c, "hello") })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v (the connection must be closed after the handler)", got, err)
	}
}

func TestProcStatusKB(t *testing.T) {
	rss, err := ProcStatusKB(0, "VmRSS:")
	if err != nil || rss <= 0 {
		t.Fatalf("VmRSS of this process: %d, %v", rss, err)
	}
	if _, err := ProcStatusKB(os.Getpid(), "NoSuchField:"); err == nil {
		t.Fatal("a missing field read without error")
	}
	if _, err := ProcStatusKB(-5, "VmRSS:"); err == nil {
		t.Fatal("a missing process read without error")
	}
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr %s is not free: %v", addr, err)
	}
	ln.Close()
}
