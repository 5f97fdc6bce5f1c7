package h1server

import (
	"bufio"
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

// servedRequest is request i of client c in TestServingStateNeverShared:
// a head, a body and a trailer of their own, so that any part of one
// request's state (the reader's bytes, the parsed head, the chunked
// reader's trailers, a byte read ahead) that reached another connection
// is seen.
type servedRequest struct{ c, i int }

func (r servedRequest) id() string { return fmt.Sprintf("%d/%d", r.c, r.i) }

// tag is the X-Tag value: its length differs per request, and every 7th
// head is over smallReadSize (read into a large reader).
func (r servedRequest) tag() string {
	n := 1 + (r.c*31+r.i*17)%40
	if r.i%7 == 3 {
		n = 600
	}
	return strings.Repeat(r.id()+"-", n)
}

func (r servedRequest) body() string {
	return strings.Repeat(r.id()+";", (r.c*13+r.i*7)%300)
}

func (r servedRequest) chunked() bool { return (r.c+r.i)%3 == 0 }

// slow: the handler runs past backgroundReadDelay, so a background read
// is pending when it returns.
func (r servedRequest) slow() bool { return (r.c+r.i)%5 == 0 }

func (r servedRequest) raw() string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST /%d/%d HTTP/1.1\r\nHost: x\r\nX-Conn: %d\r\nX-Req: %d\r\nX-Tag: %s\r\n", r.c, r.i, r.c, r.i, r.tag())
	body := r.body()
	if !r.chunked() {
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
		return b.String()
	}
	half := len(body) / 2
	b.WriteString("Transfer-Encoding: chunked\r\nTrailer: X-Trail\r\n\r\n")
	for _, part := range []string{body[:half], body[half:]} {
		if part != "" {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(part), part)
		}
	}
	fmt.Fprintf(&b, "0\r\nX-Trail: %s\r\n\r\n", r.id())
	return b.String()
}

func (r servedRequest) answer() string {
	sum := sha256.Sum256([]byte(r.body()))
	return r.id() + " " + hex.EncodeToString(sum[:8]) + " " + strconv.Itoa(len(r.tag()))
}

// TestServingStateNeverShared: the state that serves a request (buffers,
// parsed head, chunked reader, background read, context) goes from
// connection to connection through a pool whenever one parks. Hundreds of
// keep-alive clients send requests of their own (heads of varying size,
// some over the small reader, Content-Length and chunked bodies with
// trailers, pipelined pairs, handlers that outlast the background-read
// delay) with pauses that park their connections or not; the handler
// (the upstream here) must receive each request exactly once, intact, on
// its own connection, and each client must read its own answers.
func TestServingStateNeverShared(t *testing.T) {
	t.Parallel()
	const clients, requests = 150, 40
	type record struct {
		mu   sync.Mutex
		got  map[string]int
		bad  []string
		addr map[int]string // client -> the RemoteAddr its first request came from
	}
	rec := &record{got: map[string]int{}, addr: map[int]string{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := strconv.Atoi(r.Header.Get("X-Conn"))
		i, _ := strconv.Atoi(r.Header.Get("X-Req"))
		want := servedRequest{c, i}
		b, err := io.ReadAll(r.Body)
		var problems []string
		if err != nil {
			problems = append(problems, "body: "+err.Error())
		}
		if string(b) != want.body() {
			problems = append(problems, fmt.Sprintf("body of %d bytes, want %d", len(b), len(want.body())))
		}
		if got := r.Header.Get("X-Tag"); got != want.tag() {
			problems = append(problems, fmt.Sprintf("X-Tag of %d bytes, want %d", len(got), len(want.tag())))
		}
		if r.URL.Path != "/"+want.id() {
			problems = append(problems, "path "+r.URL.Path)
		}
		if want.chunked() && r.Trailer.Get("X-Trail") != want.id() {
			problems = append(problems, fmt.Sprintf("trailer %q", r.Trailer.Get("X-Trail")))
		}
		if want.slow() {
			time.Sleep(backgroundReadDelay + 2*time.Millisecond)
		}
		if err := r.Context().Err(); err != nil {
			problems = append(problems, "context: "+err.Error())
		}
		rec.mu.Lock()
		if a, ok := rec.addr[c]; !ok {
			rec.addr[c] = r.RemoteAddr
		} else if a != r.RemoteAddr {
			problems = append(problems, fmt.Sprintf("from %s, earlier requests from %s", r.RemoteAddr, a))
		}
		if len(problems) > 0 {
			rec.bad = append(rec.bad, want.id()+": "+strings.Join(problems, "; "))
		} else {
			rec.got[want.id()]++
		}
		rec.mu.Unlock()
		if i%2 == 0 {
			w.(http.Flusher).Flush() // a chunked answer
		}
		_, _ = io.WriteString(w, want.answer())
	})
	for _, tc := range []struct {
		name      string
		tls       bool
		parkAfter time.Duration
	}{
		{"plain, parked at once", false, -1},
		{"plain, parked after 1ms", false, time.Millisecond},
		{"TLS, parked at once", true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.mu.Lock()
			clear(rec.addr) // new connections
			rec.mu.Unlock()
			configure := func(s *Server) { s.parkAfter = tc.parkAfter; s.IdleTimeout = time.Minute }
			var addr string
			var dialConn func() (net.Conn, error)
			if tc.tls {
				_, a, pool := serveOursTLS(t, h, configure)
				addr = a
				cfg := &tls.Config{RootCAs: pool, ServerName: "example.com", NextProtos: []string{"http/1.1"}}
				dialConn = func() (net.Conn, error) { return tls.Dial("tcp", addr, cfg) }
			} else {
				_, addr = serveOurs(t, h, configure)
				dialConn = func() (net.Conn, error) { return net.Dial("tcp", addr) }
			}
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for c := range clients {
				wg.Go(func() {
					if err := runServedClient(c, requests, dialConn); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.bad) > 0 {
		t.Errorf("%d requests arrived wrong; first: %s", len(rec.bad), rec.bad[0])
	}
	// Every case sent the same requests: each must have arrived once per
	// case.
	for c := range clients {
		for i := range requests {
			id := servedRequest{c, i}.id()
			if n := rec.got[id]; n != 3 {
				t.Errorf("request %s received intact %d times, want 3", id, n)
			}
		}
	}
}

// runServedClient sends client c's requests on one keep-alive connection,
// some as pipelined pairs, with pauses between them, and checks every
// answer is its own.
func runServedClient(c, requests int, dialConn func() (net.Conn, error)) error {
	conn, err := dialConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(conn)
	rng := rand.New(rand.NewPCG(uint64(c), 2))
	for i := 0; i < requests; {
		batch := []servedRequest{{c, i}}
		if i+1 < requests && rng.IntN(4) == 0 {
			batch = append(batch, servedRequest{c, i + 1})
		}
		var out strings.Builder
		for _, r := range batch {
			out.WriteString(r.raw())
		}
		if _, err := io.WriteString(conn, out.String()); err != nil {
			return fmt.Errorf("client %d request %d: %w", c, i, err)
		}
		for _, r := range batch {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				return fmt.Errorf("client %d request %d: %w", c, r.i, err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				return fmt.Errorf("client %d request %d: reading the answer: %w", c, r.i, err)
			}
			if res.StatusCode != http.StatusOK || string(b) != r.answer() {
				return fmt.Errorf("client %d request %d: %d %q, want %q", c, r.i, res.StatusCode, b, r.answer())
			}
		}
		i += len(batch)
		// Quiet for 0-6ms: some waits end before parking, some while
		// parked, some as the parker wakes the connection.
		time.Sleep(time.Duration(rng.IntN(6000)) * time.Microsecond)
	}
	return nil
}

// TestHijackedServingNotReused: a hijacked connection's reader reads
// through its serving state, so that state must never go back to the pool
// while other connections park and take states from it. Half the clients
// upgrade and echo lines through the hijacked reader, half keep parking
// and waking with ordinary requests; every echo must be the client's own.
func TestHijackedServingNotReused(t *testing.T) {
	t.Parallel()
	const clients, lines = 60, 30
	var echoes sync.WaitGroup
	defer echoes.Wait()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/upgrade" {
			_, _ = io.WriteString(w, r.URL.Path)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		// The echo goes on after the handler has returned (as a
		// WebSocket library's reader may): the connection's goroutine
		// has ended by then.
		echoes.Go(func() {
			defer conn.Close()
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := io.WriteString(conn, line); err != nil {
					return
				}
			}
		})
	})
	_, addr := serveOurs(t, h, func(s *Server) { parkNow(s); s.IdleTimeout = time.Minute })
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
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(conn)
			rng := rand.New(rand.NewPCG(uint64(c), 3))
			if c%2 == 0 {
				for i := range lines {
					path := fmt.Sprintf("/%d/%d", c, i)
					if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
						errs <- err
						return
					}
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						errs <- fmt.Errorf("client %d request %d: %w", c, i, err)
						return
					}
					b, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if string(b) != path {
						errs <- fmt.Errorf("client %d request %d: answer %q", c, i, b)
						return
					}
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				}
				return
			}
			if _, err := io.WriteString(conn, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
				errs <- err
				return
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				errs <- fmt.Errorf("client %d upgrade: %w", c, err)
				return
			}
			if res.StatusCode != http.StatusSwitchingProtocols {
				errs <- fmt.Errorf("client %d upgrade: %s", c, res.Status)
				return
			}
			for i := range lines {
				want := fmt.Sprintf("client %d line %d\n", c, i)
				if _, err := io.WriteString(conn, want); err != nil {
					errs <- err
					return
				}
				got, err := br.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("client %d line %d: %w", c, i, err)
					return
				}
				if got != want {
					errs <- fmt.Errorf("client %d line %d: echo %q", c, i, got)
					return
				}
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
