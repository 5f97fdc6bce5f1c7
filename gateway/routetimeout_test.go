package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangingUpstream answers /fast at once and holds /hang until the edge
// gives up on it (its request context ends) or the test ends. It counts
// the hung requests the edge abandoned, which is what the upstream really
// sees of a route timeout.
type hangingUpstream struct {
	*httptest.Server
	released  chan struct{}
	abandoned atomic.Int64
	hung      atomic.Int64
}

func newHangingUpstream(t *testing.T) *hangingUpstream {
	u := &hangingUpstream{released: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			u.hung.Add(1)
			select {
			case <-r.Context().Done():
				u.abandoned.Add(1)
			case <-u.released:
			}
		case "/slow-body":
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				u.abandoned.Add(1)
			case <-u.released:
			}
		default:
			_, _ = io.WriteString(w, "fast "+r.URL.Query().Get("i"))
		}
	}))
	t.Cleanup(func() { close(u.released); u.Close() })
	return u
}

// routeTimeoutConfig: the upstream's own timeout is far above the route's,
// so only the route's can answer in time. The route's bound is what the
// test can afford to wait for on a loaded machine: requests that must pass
// get far more than they need.
func routeTimeoutConfig(endpoint, upstreamExtra, timeout string) string {
	return listenHeader + "upstreams:\n  u:\n    endpoints: [" + endpoint + "]\n    timeout: 5m\n" + upstreamExtra +
		"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u, timeout: " + timeout + "}\n"
}

// A route's timeout answers 504 in the edge's format while the client is
// still there, lets fast requests through untouched under concurrency,
// ends the upstream request it gave up on, and gives no outlier verdict.
func TestRouteTimeout(t *testing.T) {
	up := newHangingUpstream(t)
	// 3s: 100 fast requests at once under -race on two cores must all fit.
	te := startEdge(t, routeTimeoutConfig(hostPort(up.Server), "    circuit_breaker: {consecutive_5xx: 1, eject_for: 1m}\n", "3s"))

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			path := fmt.Sprintf("/fast?i=%d", i)
			if i%2 == 1 {
				path = "/hang"
			}
			resp, err := client.Get(te.url + path)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", path, err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			switch {
			case i%2 == 0 && (resp.StatusCode != http.StatusOK || string(body) != fmt.Sprintf("fast %d", i)):
				errs <- fmt.Errorf("%s: %d %q", path, resp.StatusCode, body)
			case i%2 == 1:
				var e struct {
					Error string `json:"error"`
				}
				if resp.StatusCode != http.StatusGatewayTimeout || json.Unmarshal(body, &e) != nil || e.Error != "route timeout" {
					errs <- fmt.Errorf("%s: %d %q, want 504 route timeout", path, resp.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, func() bool { return up.abandoned.Load() == n/2 })
	if h := up.hung.Load(); h != n/2 {
		t.Fatalf("the upstream got %d hung requests, want %d (a timed-out request must not be retried)", h, n/2)
	}
	// A route's bound is not the endpoint's failure: with consecutive_5xx
	// 1, one verdict would have ejected the only endpoint.
	resp, err := http.Get(te.url + "/fast?i=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the timeouts: %d, the endpoint was ejected", resp.StatusCode)
	}
}

// Once the upstream's answer has started, the route's timeout cuts it: the
// client gets no response (the head was still in the edge's buffer) or a
// truncated body, an error either way, never a complete-looking answer.
func TestRouteTimeoutCutsStartedResponse(t *testing.T) {
	up := newHangingUpstream(t)
	te := startEdge(t, routeTimeoutConfig(hostPort(up.Server), "", "300ms"))
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 20 {
		resp, err := client.Get(te.url + "/slow-body")
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				t.Fatalf("request %d: %d %q read with no error: a cut response must not look complete", i, resp.StatusCode, body)
			}
		}
	}
	waitFor(t, func() bool { return up.abandoned.Load() == 20 })
}

// gRPC callers get DEADLINE_EXCEEDED, not a JSON body.
func TestRouteTimeoutGRPCStatus(t *testing.T) {
	up := newHangingUpstream(t)
	te := startEdge(t, routeTimeoutConfig(hostPort(up.Server), "", "300ms"))
	req, _ := http.NewRequest(http.MethodPost, te.url+"/hang", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status"); got != "4" {
		t.Fatalf("grpc-status %q (HTTP %d), want 4 DEADLINE_EXCEEDED", got, resp.StatusCode)
	}
}

// An upgrade is bounded until it succeeds: the WebSocket-style connection
// it gives outlives the route's timeout.
func TestRouteTimeoutSparesUpgradedConnection(t *testing.T) {
	echo := testEchoUpgrade(t)
	// 1s: the upgrade itself must fit in it on a loaded machine.
	te := startEdge(t, routeTimeoutConfig(echo, "", "1s"))
	c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	time.Sleep(2 * time.Second) // twice the route's timeout
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("after the route's timeout the upgraded connection answered %q, %v", line, err)
	}
}

// testEchoUpgrade is an upstream that accepts any upgrade and echoes lines.
func testEchoUpgrade(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			http.Error(w, "upgrade only", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\n\r\n")
		_ = brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString(line)
			_ = brw.Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return hostPort(srv)
}
