package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A request the edge's HTTP/1.1 writer refuses (here a trailer section
// over the 4 KiB net/http's server reads, which the edge's own server
// takes) is the client's fault: it gets 400, the upstream never reads a
// complete request, it is never retried, and however many a client sends,
// the endpoint is not ejected and well-formed requests keep reaching it.
// (A field RFC 9110 keeps out of trailers, the trigger before, is now left
// out of what is forwarded instead.)
func TestRefusedRequestsDoNotEjectEndpoints(t *testing.T) {
	var got atomic.Int64
	up := echoUpstreamCounting(t, &got)
	var names, fields strings.Builder
	for i := range 60 {
		fmt.Fprintf(&names, "X-Fill-%d, ", i)
		fmt.Fprintf(&fields, "X-Fill-%d: %s\r\n", i, strings.Repeat("v", 100))
	}
	e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0"}
access_log: {output: "off"}
upstreams:
  app:
    endpoints: [%q]
    circuit_breaker: {consecutive_5xx: 2, eject_for: 1m, max_ejected_percent: 100}
    retries: {attempts: 3, on: [connect_failure, reset, "502", "503"], budget_percent: 100, non_idempotent: true}
routes:
  - {name: all, match: {path_prefix: /}, upstream: app}
`, hostPort(up)))
	addr := strings.TrimPrefix(e.url, "http://")
	const bad = 50
	for i := range bad {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST /up/%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: %sX-End\r\n\r\n5\r\nhello\r\n0\r\n%s\r\n", i, names.String(), fields.String())
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		conn.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"status":400`) {
			t.Fatalf("request %d: %d %s, want 400 in the edge's format", i, res.StatusCode, body)
		}
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the upstream read %d refused requests whole", n)
	}
	for i := range 5 {
		res, body := get(t, e.url+"/ok")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("well-formed request %d after %d refused ones: %d %s (the endpoint was ejected)", i, bad, res.StatusCode, body)
		}
	}
	if n := got.Load(); n != 5 {
		t.Fatalf("the upstream received %d requests, want the 5 well-formed ones", n)
	}
}

func echoUpstreamCounting(t *testing.T, n *atomic.Int64) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return // a cut body: not a request the upstream received
		}
		n.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}
