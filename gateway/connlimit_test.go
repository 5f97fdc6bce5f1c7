package gateway

import (
	"net"
	"testing"
	"time"
)

func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(raw, 2, 0)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1, c2 := dial(), dial()
	defer c1.Close()
	defer c2.Close()
	s1, s2 := <-accepted, <-accepted

	// The third connection from the same IP is closed by the server at once.
	c3 := dial()
	defer c3.Close()
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection from one IP was kept open")
	}
	select {
	case c := <-accepted:
		t.Fatalf("third connection accepted: %v", c.RemoteAddr())
	default:
	}

	// Closing one (twice: the slot is given back once) makes room for one more.
	s1.Close()
	s1.Close()
	c4 := dial()
	defer c4.Close()
	select {
	case s4 := <-accepted:
		s4.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
	s2.Close()
	l := ln.(*limitListener)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total != 0 || len(l.byIP) != 0 {
		t.Fatalf("counts leaked: total %d, by IP %v", l.total, l.byIP)
	}
}
