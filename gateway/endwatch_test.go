package gateway

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The upstream client is told that a request ended through the engine's
// request context (its end watch) rather than context.AfterFunc. Every
// request's context ends when the request does, and a response body often
// gives its upstream connection back to the pool before that: a watch left
// armed, or stopped for the wrong request, expires the deadlines of a
// connection that already serves another client, whose request then fails;
// a watch that never fires leaves a departed client's upstream request
// running. Many keep-alive clients at once, each leaving at random in the
// middle of some responses: every answer that is read must be whole and the
// client's own, and every request a client left must end at the upstream.
// With and without a route timeout (which ends the context through
// h1server.Cancel).
func TestEdgeEndWatchStaysWithItsRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string
	}{
		{name: "no route timeout", timeout: "0s"},
		{name: "route timeout", timeout: "5m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newLeavingUpstream(t)
			te := startEdge(t, routeTimeoutConfig(hostPort(up.Server), "", tc.timeout))
			addr := strings.TrimPrefix(te.url, "http://")

			const clients, requests = 32, 40
			var wg sync.WaitGroup
			var left atomic.Int64
			errs := make(chan error, clients)
			for w := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, err := runLeavingClient(addr, w, requests, up.held)
					left.Add(int64(n))
					if err != nil {
						errs <- fmt.Errorf("client %d: %w", w, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if left.Load() == 0 {
				t.Fatal("no client left a response: the test proves nothing")
			}
			// Each departure must reach the upstream: the edge stops
			// reading the held body and closes that connection.
			waitFor(t, func() bool { return up.abandoned.Load() == left.Load() })
		})
	}
}

// leavingUpstream answers /full with a body made of the request's id, of
// the size asked for (a Content-Length or a chunked one, flushed half-way),
// and /hold with the first bytes of a body it then holds until the edge
// gives up on the request, which it counts. (The edge keeps a response's
// first bytes in its buffer: the client of a held request waits for the
// upstream to have sent them, not for them to arrive.)
type leavingUpstream struct {
	*httptest.Server
	released  chan struct{}
	holding   sync.Map // ids of the held requests whose first bytes are out
	abandoned atomic.Int64
}

func newLeavingUpstream(t *testing.T) *leavingUpstream {
	u := &leavingUpstream{released: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		switch r.URL.Path {
		case "/hold":
			w.Header().Set("Content-Length", "1000")
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			u.holding.Store(id, true)
			select {
			case <-r.Context().Done():
				u.abandoned.Add(1)
			case <-u.released:
			}
		case "/full":
			size, _ := strconv.Atoi(r.URL.Query().Get("size"))
			body := leavingBody(id, size)
			if r.URL.Query().Get("chunked") == "" {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			_, _ = io.WriteString(w, body[:len(body)/2])
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, body[len(body)/2:])
		}
	}))
	t.Cleanup(func() { close(u.released); u.Close() })
	return u
}

func leavingBody(id string, size int) string { return strings.Repeat(id+";", size) }

// held waits until the upstream holds request id (false after 10 s).
func (u *leavingUpstream) held(id string) bool {
	for range 1000 {
		if _, ok := u.holding.Load(id); ok {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// runLeavingClient sends requests one after another on keep-alive
// connections, leaving about one response in five once the upstream has
// sent its first bytes (and then dialling again). It returns how many it
// left.
func runLeavingClient(addr string, w, requests int, held func(id string) bool) (left int, err error) {
	rng := rand.New(rand.NewPCG(uint64(w), 17)) //nolint:gosec // a test's reproducible choices
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := range requests {
		if c == nil {
			if c, err = net.Dial("tcp", addr); err != nil {
				return left, err
			}
			br = bufio.NewReader(c)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		id := fmt.Sprintf("c%d-r%d", w, i)
		if rng.IntN(5) == 0 {
			if _, err := fmt.Fprintf(c, "GET /hold?id=%s HTTP/1.1\r\nHost: x\r\n\r\n", id); err != nil {
				return left, err
			}
			if !held(id) {
				return left, fmt.Errorf("%s: the upstream never held it", id)
			}
			c.Close()
			c = nil
			left++
			continue
		}
		size, chunked := 1+rng.IntN(2000), ""
		if rng.IntN(2) == 0 {
			chunked = "&chunked=1"
		}
		if _, err := fmt.Fprintf(c, "GET /full?id=%s&size=%d%s HTTP/1.1\r\nHost: x\r\n\r\n", id, size, chunked); err != nil {
			return left, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return left, fmt.Errorf("%s: %w", id, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != leavingBody(id, size) {
			return left, fmt.Errorf("%s: %d, %d bytes (%.40q), want 200 and its own %d bytes: %w",
				id, resp.StatusCode, len(body), body, len(leavingBody(id, size)), err)
		}
	}
	return left, nil
}
