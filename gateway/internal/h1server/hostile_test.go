package h1server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// closedWithin reads c until it closes; false if it is still open after d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

func TestSlowlorisHead(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, echo, func(s *Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	c, _ := dial(t, addr)
	start := time.Now()
	// A byte every 50ms: always moving, never done.
	go func() {
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("a head dripped in was not cut")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cut after %v, the header timeout is 200ms", d)
	}
}

func TestStalledBody(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	}), func(s *Server) { s.ReadTimeout = 300 * time.Millisecond })
	c, _ := dial(t, addr)
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly some")
	select {
	case err := <-got:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("the handler's read ended with %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled body held the handler")
	}
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("the connection stayed open after a stalled body")
	}
}

func TestHugeChunkSizes(t *testing.T) {
	t.Parallel()
	got := make(chan error, 4)
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	}), nil)
	for _, size := range []string{"7fffffffffffffff", "ffffffffffffffffff", "1000000000000000"} {
		t.Run(size, func(t *testing.T) {
			raw := exchange(t, addr, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"+size+"\r\nabc")
			select {
			case err := <-got:
				if err == nil {
					t.Fatal("the body was read whole")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler never ended")
			}
			if bytes.Contains(raw, []byte("HTTP/1.1 200")) && !bytes.Contains(raw, []byte("Connection: close")) {
				t.Fatalf("kept the connection after a broken body: %q", raw)
			}
		})
	}
}

func TestPipelineThousand(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path[1:])
	}), nil)
	c, br := dial(t, addr)
	var all strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&all, "GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
	}
	go func() { _, _ = io.WriteString(c, all.String()) }()
	for i := range 1000 {
		_, body := mustRead(t, br, "GET")
		if body != strconv.Itoa(i) {
			t.Fatalf("answer %d is %q", i, body)
		}
	}
}

func TestClientNeverReads(t *testing.T) {
	t.Parallel()
	done := make(chan error, 1)
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}), func(s *Server) { s.WriteTimeout = 300 * time.Millisecond })
	c, _ := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("the write ended with %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that never reads held the handler")
	}
}

func TestAbruptCloseMidBody(t *testing.T) {
	t.Parallel()
	type seen struct {
		readErr  error
		canceled bool
	}
	got := make(chan seen, 1)
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			got <- seen{err, true}
		case <-time.After(5 * time.Second):
			got <- seen{err, false}
		}
	}), nil)
	c, _ := dial(t, addr)
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\npart")
	time.Sleep(50 * time.Millisecond)
	c.Close()
	s := <-got
	if !errors.Is(s.readErr, io.ErrUnexpectedEOF) || !s.canceled {
		t.Fatalf("read error %v, context canceled %v", s.readErr, s.canceled)
	}
}

func TestClientGoneCancelsContext(t *testing.T) {
	t.Parallel()
	canceled := make(chan bool, 1)
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- true
		case <-time.After(5 * time.Second):
			canceled <- false
		}
	}), nil)
	c, _ := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	c.Close()
	if !<-canceled {
		t.Fatal("the request's context outlived its client")
	}
}

func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{})
	s, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}), nil)
	idle, ibr := dial(t, addr)
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	mustRead(t, ibr, "GET")
	active, abr := dial(t, addr)
	_, _ = io.WriteString(active, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if !closedWithin(idle, 2*time.Second) {
		t.Fatal("the idle connection was not closed")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	res, body := mustRead(t, abr, "GET")
	if body != "done" || !res.Close {
		t.Fatalf("the in-flight answer: %q close=%v", body, res.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

// TestUnreadBodyNeverReadAsRequests: a body the handler leaves unread is
// read away when it is small (the connection serves the next request) and
// closes the connection when it is large; either way no byte of it is
// read as a request, even when it is made of requests.
func TestUnreadBodyNeverReadAsRequests(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}), nil)
	smuggle := "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	cases := []struct {
		name      string
		body      string
		chunked   bool
		wantAfter bool // the request after the body is answered
	}{
		{"small, with a length", strings.Repeat(smuggle, 10), false, true},
		{"small, chunked", strings.Repeat(smuggle, 10), true, true},
		{"over 256 KiB, with a length", strings.Repeat(smuggle, 10000), false, false},
		{"over 256 KiB, chunked", strings.Repeat(smuggle, 10000), true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var in strings.Builder
			if tc.chunked {
				fmt.Fprintf(&in, "POST /first HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(tc.body), tc.body)
			} else {
				fmt.Fprintf(&in, "POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(tc.body), tc.body)
			}
			in.WriteString("GET /after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() { _, _ = io.WriteString(c, in.String()) }()
			out, _ := io.ReadAll(c)
			answers := readAnswers(out, func(int) string { return "GET" })
			if bytes.Contains(out, []byte("/smuggled")) {
				t.Fatal("a request inside a body was answered")
			}
			if len(answers) == 0 || answers[0].body != "/first" {
				t.Fatalf("answers %+v", answers)
			}
			gotAfter := len(answers) == 2 && answers[1].body == "/after"
			if gotAfter != tc.wantAfter {
				t.Fatalf("the next request answered: %v, want %v (%+v)", gotAfter, tc.wantAfter, answers)
			}
		})
	}
}

// TestCloseDuringTLSHandshake: a client that connects to a TLS listener
// and never sends a ClientHello does not hold Close (nor race with it).
func TestCloseDuringTLSHandshake(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: echo, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(ln, "", "") }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // accepted, in the handshake
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if !closedWithin(c, 2*time.Second) {
		t.Fatal("the connection in its handshake stayed open")
	}
}
