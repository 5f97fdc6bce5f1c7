package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"

	_ "github.com/causewayhq/causeway/plugins/bodylimit"
)

// Every refusal of a request's head or body reads the same from both
// HTTP/1.1 engines: the status line, the JSON error body byte for byte
// (the request id aside, which differs per request when there is one),
// its headers, and Connection: close with the connection closed where the
// own engine closes. Before the fix the deprecated net/http engine
// answered a head over its read limit, and every head its parser refused,
// with net/http's text/plain ("431 Request Header Fields Too Large", "400
// Bad Request"), let heads up to 4 KiB over max_header_bytes, request
// lines over 4 KiB and 129 fields through to the upstream, and answered a
// request line over its read limit 431 where the own engine says 414.
func TestRefusalsSameOnBothEngines(t *testing.T) {
	filler := func(n int) string { return strings.Repeat("a", n) }
	var many strings.Builder
	for i := range 129 {
		fmt.Fprintf(&many, "X-F-%03d: v\r\n", i)
	}
	tests := []struct {
		name, req string
		status    int
		closes    bool
	}{
		{"431 head just over max_header_bytes", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + filler(5000) + "\r\n\r\n", 431, true},
		{"431 head far over", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + filler(20000) + "\r\n\r\n", 431, true},
		{"431 too many fields", "GET / HTTP/1.1\r\nHost: x\r\n" + many.String() + "\r\n", 431, true},
		{"414 request line", "GET /" + filler(5000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, true},
		{"414 request line far over", "GET /" + filler(9000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, true},
		{"malformed header line", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, true},
		{"missing Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400, true},
		{"400 from the edge: bad Host", "GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 400, false},
		{"413 from body_limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789", 413, true},
		{"malformed after a request on the connection", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, true},
	}
	addrs := map[string]string{}
	for _, engine := range routes.HTTP1Engines {
		te := startEdge(t, listenHeader+fmt.Sprintf(`server: {http1_engine: %q, max_header_bytes: 4096}
plugins:
  small: {use: body_limit, config: {max_bytes: 10}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, plugins: [small], upstream: u}
`, engine, freeAddr(t)))
		addrs[engine] = te.Addr("http")
	}
	type answer struct {
		statusLine, body string
		header           http.Header
		closed           bool
	}
	send := func(t *testing.T, addr, req string, keepAlive bool) answer {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		if keepAlive {
			// A request the edge answers on a connection it keeps (its own
			// 400 for the Host), read before the refused one is sent.
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a..b\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.Close {
				t.Fatalf("the first request: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a := answer{statusLine: resp.Proto + " " + resp.Status, header: resp.Header, body: string(body)}
		if id := resp.Header.Get("X-Request-Id"); id != "" {
			a.body = strings.Replace(a.body, `"request_id":"`+id+`"`, `"request_id":"ID"`, 1)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := br.Peek(1); err != nil {
			if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
				a.closed = true
			}
		}
		return a
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keepAlive := strings.Contains(tt.name, "after a request")
			own := send(t, addrs[routes.HTTP1EngineCauseway], tt.req, keepAlive)
			std := send(t, addrs[routes.HTTP1EngineNetHTTP], tt.req, keepAlive)
			if !strings.HasPrefix(own.statusLine, fmt.Sprintf("HTTP/1.1 %d ", tt.status)) || own.closed != tt.closes {
				t.Fatalf("the own engine: %s, closed %v; want %d, closed %v", own.statusLine, own.closed, tt.status, tt.closes)
			}
			if std.statusLine != own.statusLine {
				t.Fatalf("net/http engine: %q, the own engine: %q (body %q)", std.statusLine, own.statusLine, std.body)
			}
			if std.body != own.body {
				t.Fatalf("net/http engine's body %q, the own engine's %q", std.body, own.body)
			}
			for _, k := range []string{"Content-Type", "Content-Length", "X-Content-Type-Options", "Connection"} {
				if std.header.Get(k) != own.header.Get(k) {
					t.Errorf("%s: net/http engine %q, the own engine %q", k, std.header.Get(k), own.header.Get(k))
				}
			}
			if std.closed != own.closed {
				t.Fatalf("net/http engine closed the connection: %v, the own engine: %v", std.closed, own.closed)
			}
		})
	}
}
