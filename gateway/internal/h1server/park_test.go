//go:build linux

package h1server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// parkNow parks a connection as soon as it waits for a request, so that
// the tests exercise parking on every wait.
func parkNow(s *Server) { s.parkAfter = -1 }

// untilParked waits until n connections are parked.
func untilParked(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.parkedConns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections parked, want %d", s.parkedConns(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func openConns(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// bodyOf is the body client c sends as its request i: its length and
// content differ per request, so a body delivered to the wrong request or
// cut short is seen.
func bodyOf(c, i int) string {
	n := (c*7919 + i*104729) % 20000
	return strings.Repeat(fmt.Sprintf("c%d-r%d;", c, i), n/10+1)
}

// TestParkedConnsServeEveryRequestOnce: many keep-alive clients go quiet
// for random times (parked, or not yet) and come back; every answer must
// be to its own request, and the handler (the upstream here) must have
// received every body intact, exactly once.
func TestParkedConnsServeEveryRequestOnce(t *testing.T) {
	t.Parallel()
	const clients, requests = 100, 30
	var mu sync.Mutex
	got := map[string]int{} // "c/i" -> times received intact
	var bad []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		c, _ := strconv.Atoi(r.Header.Get("X-Client"))
		i, _ := strconv.Atoi(r.Header.Get("X-Request"))
		mu.Lock()
		if err != nil || string(b) != bodyOf(c, i) {
			bad = append(bad, fmt.Sprintf("client %d request %d: %d bytes, err %v", c, i, len(b), err))
		} else {
			got[fmt.Sprintf("%d/%d", c, i)]++
		}
		mu.Unlock()
		sum := sha256.Sum256(b)
		fmt.Fprintf(w, "%d/%d %s", c, i, hex.EncodeToString(sum[:]))
	})
	for _, tc := range []struct {
		name      string
		parkAfter time.Duration
	}{
		{"park at once", -1},
		{"park after 2ms", 2 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := serveOurs(t, h, func(s *Server) { s.parkAfter = tc.parkAfter; s.IdleTimeout = time.Minute })
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for c := range clients {
				wg.Go(func() {
					conn, err := net.Dial("tcp", addr)
					if err != nil {
						errs <- err
						return
					}
					defer conn.Close()
					_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
					br := bufio.NewReader(conn)
					rng := rand.New(rand.NewPCG(uint64(c), 1))
					for i := range requests {
						body := bodyOf(c, i)
						if _, err := fmt.Fprintf(conn, "POST /%d/%d HTTP/1.1\r\nHost: x\r\nX-Client: %d\r\nX-Request: %d\r\nContent-Length: %d\r\n\r\n%s", c, i, c, i, len(body), body); err != nil {
							errs <- fmt.Errorf("client %d request %d: %w", c, i, err)
							return
						}
						res, err := http.ReadResponse(br, nil)
						if err != nil {
							errs <- fmt.Errorf("client %d request %d: %w", c, i, err)
							return
						}
						b, err := io.ReadAll(res.Body)
						res.Body.Close()
						sum := sha256.Sum256([]byte(body))
						if err != nil {
							errs <- fmt.Errorf("client %d request %d: reading the answer: %w", c, i, err)
							return
						}
						if want := fmt.Sprintf("%d/%d %s", c, i, hex.EncodeToString(sum[:])); string(b) != want {
							errs <- fmt.Errorf("client %d request %d: answer %q, want %q", c, i, b, want)
							return
						}
						// Quiet for 0-20ms: some waits end before parking,
						// some while parked, some as the parker wakes.
						time.Sleep(time.Duration(rng.IntN(20_000)) * time.Microsecond)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			_ = s
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%d bodies arrived damaged; first: %s", len(bad), bad[0])
	}
	// Both cases sent the same requests: each must have arrived twice.
	for c := range clients {
		for i := range requests {
			if n := got[fmt.Sprintf("%d/%d", c, i)]; n != 2 {
				t.Errorf("client %d request %d received %d times, want 2", c, i, n)
			}
		}
	}
}

// TestParkWithPipelinedRequest: a request already buffered behind the one
// answered (in the engine's reader, or over TLS inside crypto/tls) is
// answered at once, not left waiting for a readability that never comes.
func TestParkWithPipelinedRequest(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.Path) })
	const two = "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
	check := func(t *testing.T, br *bufio.Reader) {
		t.Helper()
		for _, want := range []string{"/one", "/two"} {
			res, body := mustRead(t, br, http.MethodGet)
			if res.StatusCode != http.StatusOK || body != want {
				t.Fatalf("%d %q, want %q", res.StatusCode, body, want)
			}
		}
	}
	t.Run("plain, one segment", func(t *testing.T) {
		t.Parallel()
		_, addr := serveOurs(t, h, func(s *Server) { parkNow(s); s.IdleTimeout = time.Minute })
		c, br := dial(t, addr)
		if _, err := io.WriteString(c, two); err != nil {
			t.Fatal(err)
		}
		check(t, br)
	})
	t.Run("TLS, two records in one segment", func(t *testing.T) {
		t.Parallel()
		s, addr, pool := serveOursTLS(t, h, func(s *Server) { parkNow(s); s.IdleTimeout = time.Minute })
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		bw := &heldWrites{Conn: raw}
		tc := tls.Client(bw, &tls.Config{RootCAs: pool, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		// Two records, sent in one write to the socket: the server's
		// crypto/tls reads both, decrypts the first, and keeps the
		// second whole in its raw input.
		bw.hold = true
		_, _ = io.WriteString(tc, two[:len(two)/2])
		_, _ = io.WriteString(tc, two[len(two)/2:])
		if err := bw.flush(); err != nil {
			t.Fatal(err)
		}
		check(t, bufio.NewReader(tc))
		_ = s
	})
}

// heldWrites holds what is written while hold is set, until flush.
type heldWrites struct {
	net.Conn
	hold bool
	buf  []byte
}

func (w *heldWrites) Write(p []byte) (int, error) {
	if w.hold {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	return w.Conn.Write(p)
}

func (w *heldWrites) flush() error {
	w.hold = false
	_, err := w.Conn.Write(w.buf)
	return err
}

// TestParkedClientStallsAfterOneByte: a parked connection woken by one
// byte of a request head is on the header clock from then on, not the
// idle one.
func TestParkedClientStallsAfterOneByte(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	s, addr := serveOurs(t, h, func(s *Server) {
		parkNow(s)
		// Long enough that the first head, already sent, is read in time
		// on a loaded machine (a read past its deadline reads nothing),
		// and far below the idle timeout the stalled head must not get.
		s.ReadHeaderTimeout = 2 * time.Second
		s.IdleTimeout = time.Hour
	})
	c, br := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	mustRead(t, br, http.MethodGet)
	untilParked(t, s, 1)
	_, _ = io.WriteString(c, "G")
	if !closedWithin(c, 10*time.Second) {
		t.Fatal("a head stalled after its first byte was not timed out")
	}
}

// TestParkedIdleTimeout: a parked connection is closed at its idle
// deadline, by the parker's deadline heap.
func TestParkedIdleTimeout(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, tc := range []struct {
		name      string
		parkAfter time.Duration
	}{
		{"parked at once", -1},
		{"parked after 5ms", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, addr := serveOurs(t, h, func(s *Server) { s.parkAfter = tc.parkAfter; s.IdleTimeout = 2 * time.Second })
			c, br := dial(t, addr)
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			mustRead(t, br, http.MethodGet)
			untilParked(t, s, 1)
			if !closedWithin(c, 10*time.Second) {
				t.Fatal("a parked connection outlived its idle timeout")
			}
			waitGone(t, s)
		})
	}
}

// TestUnparkedIdleTimeout: a keep-alive connection that waits for its next
// request on its own goroutine (parking off, or an idle clock that ends
// before the park wait would) is closed at its idle deadline, IdleTimeout
// or else ReadTimeout, after serving requests one after another. The idle
// clock is put on the socket only when such a wait needs it: without it
// the connection would wait forever under the last request's deadlines.
func TestUnparkedIdleTimeout(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, tc := range []struct {
		name      string
		configure func(*Server)
		requests  int // one after another on the connection
	}{
		{"parking off, IdleTimeout", func(s *Server) { s.noPark = true; s.IdleTimeout = time.Second }, 2},
		{"parking off, ReadTimeout as the idle clock", func(s *Server) { s.noPark = true; s.ReadTimeout = 2 * time.Second }, 2},
		// One request: a second would race a clock this short.
		{"IdleTimeout sooner than the park wait", func(s *Server) { s.IdleTimeout = defaultParkAfter / 2 }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, addr := serveOurs(t, h, tc.configure)
			c, br := dial(t, addr)
			// A second request is sent at once: it finds the
			// connection waiting (or its bytes buffered) and must be
			// served; only then does the connection go idle.
			for range tc.requests {
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				if res, _ := mustRead(t, br, http.MethodGet); res.StatusCode != http.StatusOK {
					t.Fatalf("status %d", res.StatusCode)
				}
			}
			if !closedWithin(c, 10*time.Second) {
				t.Fatal("an idle connection outlived its idle timeout")
			}
			waitGone(t, s)
		})
	}
}

func waitGone(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.parkedConns() != 0 || openConns(s) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d parked, %d open, want none", s.parkedConns(), openConns(s))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestParkedClientLeaves: a client that closes, half-closes or resets its
// parked connection is cleaned up at once (no idle timeout applies here).
func TestParkedClientLeaves(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, tc := range []struct {
		name  string
		leave func(*net.TCPConn) error
	}{
		{"close", (*net.TCPConn).Close},
		{"half-close", (*net.TCPConn).CloseWrite},
		{"reset", func(c *net.TCPConn) error { _ = c.SetLinger(0); return c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, addr := serveOurs(t, h, parkNow)
			c, br := dial(t, addr)
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			mustRead(t, br, http.MethodGet)
			untilParked(t, s, 1)
			if err := tc.leave(c.(*net.TCPConn)); err != nil {
				t.Fatal(err)
			}
			waitGone(t, s)
		})
	}
}

// TestShutdownWithThousandsParked: Shutdown and Close close every parked
// connection promptly, and stop the parker (goleak checks its goroutine).
func TestShutdownWithThousandsParked(t *testing.T) {
	const n = 2000
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, tc := range []struct {
		name string
		stop func(*Server) error
	}{
		{"Shutdown", func(s *Server) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return s.Shutdown(ctx)
		}},
		{"Close", (*Server).Close},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := serveOurs(t, h, func(s *Server) { parkNow(s); s.IdleTimeout = time.Hour })
			conns := make([]net.Conn, 0, n)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
			}
			for i, c := range conns {
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("conn %d: %v", i, err)
				}
				res.Body.Close()
			}
			untilParked(t, s, n)
			if err := tc.stop(s); err != nil {
				t.Fatalf("stop: %v", err)
			}
			for i, c := range conns {
				if !closedWithin(c, 10*time.Second) {
					t.Fatalf("conn %d still open after the server stopped", i)
				}
			}
			waitGone(t, s)
		})
	}
}
