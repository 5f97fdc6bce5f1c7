package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
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

func TestDerivedMaxConnections(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{
		{nofile: 1, want: 1},
		{nofile: 8, want: 2},
		{nofile: 256, want: 64},
		{nofile: 1024, want: 448},
		{nofile: 65536, want: 32704},
		{nofile: 1 << 20, want: (1<<20 - 128) / 2},
		{nofile: 1 << 40, want: (1<<20 - 128) / 2},    // counted as 2^20
		{nofile: ^uint64(0), want: (1<<20 - 128) / 2}, // RLIM_INFINITY
	} {
		t.Run(strconv.FormatUint(tt.nofile, 10), func(t *testing.T) {
			if got := derivedMaxConnections(tt.nofile); got != tt.want {
				t.Fatalf("derivedMaxConnections(%d) = %d, want %d", tt.nofile, got, tt.want)
			}
		})
	}
}

func TestListenerCap(t *testing.T) {
	limit := func(n uint64) func() (uint64, error) { return func() (uint64, error) { return n, nil } }
	for _, tt := range []struct {
		name      string
		server    routes.Server
		maxSet    bool
		listeners int
		nofile    func() (uint64, error)
		want      int
	}{
		{"unset: derived, one listener", routes.Server{}, false, 1, limit(1024), 448},
		{"unset: derived, shared by http and https", routes.Server{}, false, 2, limit(1024), 224},
		{"unset: no limit known, no cap", routes.Server{}, false, 2, func() (uint64, error) { return 0, errors.New("no rlimit") }, 0},
		{"explicit cap", routes.Server{MaxConnections: 10}, true, 2, limit(1024), 10},
		{"explicit 0: off", routes.Server{}, true, 2, limit(1024), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := listenerCap(tt.server, tt.maxSet, tt.listeners, tt.nofile); got != tt.want {
				t.Fatalf("listenerCap = %d, want %d", got, tt.want)
			}
		})
	}
}

// With no max_connections in the file, a real listener refuses connections
// beyond the cap derived from the file-descriptor limit (8 here: a cap of 2).
func TestEdgeDerivedConnectionCap(t *testing.T) {
	up := echoUpstream(t, "a")
	path := filepath.Join(t.TempDir(), "causeway.yaml")
	writeFile(t, path, listenHeader+fmt.Sprintf("upstreams:\n  a: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n", hostPort(up)))
	e, err := NewEdge(context.Background(), EdgeOptions{ConfigPath: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.nofile = func() (uint64, error) { return 8, nil }
	if err := e.Listen(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	request := func(c net.Conn) error { return getOn(c, "x") }
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", e.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if err := request(c); err != nil {
			t.Fatalf("connection %d within the cap: %v", i+1, err)
		}
	}
	// Idle past the engine's 5 ms, the two are parked (no goroutine on
	// Linux): they must still hold their slots, and a parked one closed by
	// its client must give its slot back.
	time.Sleep(50 * time.Millisecond)
	c, err := net.Dial("tcp", e.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := request(c); err == nil {
		t.Fatal("a third connection was served beyond the derived cap of 2")
	}
	// A slot given back is usable again.
	held[0].Close()
	held = held[1:]
	waitServed(t, e.Addr("http"), "x")
}

// getOn sends one GET for host on c and reads the answer: nil for a 200.
func getOn(c net.Conn, host string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// waitServed dials addr until a new connection is served: a slot given
// back under a connection cap is usable again (its release is
// asynchronous to the client's close).
func waitServed(t *testing.T, addr, host string) {
	t.Helper()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		err = getOn(c, host)
		c.Close()
		if err == nil {
			return
		}
		if i == 100 {
			t.Fatalf("no connection served after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
